"""Fault injection: every filesystem call a scan or a render makes, failing in turn with every errno a
real library meets (or the file turning into a folder of the same name at that moment).

The faults are injected at the call sites, in the modules that make the calls: the module's
``os`` is replaced by a proxy that fails one call for one path and passes everything else
to the real ``os``. The scan is the real one, in this process, against the real catalog.
What must hold for every (call site, fault): the scan ends normally (never exit 70: no
exception), the path is reported with a reason, every other change is recorded, nothing
still on disk is marked deleted, and the next scan without the fault converges on the disk.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import pytest
import xxhash

from libwatch import beneath, imaging, renderpool
from libwatch.catalog import libraries as catalog_libraries
from libwatch.core import hashing, walk
from libwatch.imaging import RenderSpec
from libwatch.services import scan as service
from libwatch.services.scan import ScanOptions

from .conftest import NAME, files_by_path, present_in_catalog, present_on_disk
from support import tree

ERRNOS: Final = (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EIO, errno.ESTALE, errno.ELOOP)
FOLDER: Final = "replaced-by-folder"  # the file becomes a folder of the same name just before the call
FAULTS: Final = (*(errno.errorcode[e] for e in ERRNOS), FOLDER)

TARGET: Final = "sub/x.jpg"  # a catalogued file that changed: the scan must stat, hash and probe it
TARGET_FOLDER: Final = "sub"

# call site -> (module whose os is replaced, os function, whether it takes the target folder or file)
SITES: Final = {
    "listing": (walk, "scandir", TARGET_FOLDER),
    "folder-stat": (walk, "scandir-stat", TARGET_FOLDER),
    "file-stat": (walk, "scandir-stat", TARGET),
    "open": (hashing, "open", TARGET),
    "open-file-stat": (hashing, "fstat", TARGET),
    "read": (hashing, "read", TARGET),
    "re-stat": (hashing, "stat", TARGET),
    "header-probe": (imaging, "open", TARGET),
}


class _Fault:
    """One fault for one path: raise the errno, or turn the file into a folder (once) and go on."""

    def __init__(self, root: Path, relative: str, fault: str) -> None:
        self.path = os.fsencode(root / relative)
        self.fault = fault
        self.fired = 0

    def matches(self, path: Any) -> bool:
        return isinstance(path, (str, bytes)) and os.fsencode(path) == self.path

    def fire(self) -> None:
        self.fired += 1
        if self.fault != FOLDER:
            code = getattr(errno, self.fault)
            raise OSError(code, os.strerror(code), os.fsdecode(self.path))
        if os.path.isfile(self.path):
            os.unlink(self.path)
            os.mkdir(self.path)


class _Entry:
    """A ``DirEntry`` whose ``stat`` meets the fault."""

    def __init__(self, real: os.DirEntry[bytes], fault: _Fault) -> None:
        self._real = real
        self._fault = fault

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        self._fault.fire()
        return self._real.stat(follow_symlinks=follow_symlinks)


class _FaultyOs:
    """The ``os`` module as one libwatch module sees it, with one call failing for one path."""

    def __init__(self, call: str, fault: _Fault) -> None:
        self._fault = fault
        self._fds: set[int] = set()
        if call == "scandir":
            self.scandir = self._scandir_failing
        elif call == "scandir-stat":
            self.scandir = self._scandir_entries
        elif call in ("open", "stat"):
            setattr(self, call, self._path_call(getattr(os, call)))
        else:  # fstat, read: calls on the target's open file
            self.open = self._tracking_open
            setattr(self, call, self._fd_call(getattr(os, call)))

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def _scandir_failing(self, path: Any) -> Any:
        if self._fault.matches(path):
            self._fault.fire()
        return os.scandir(path)

    @contextmanager
    def _scandir_entries(self, path: Any) -> Iterator[Iterator[Any]]:
        with os.scandir(path) as listing:
            yield (_Entry(d, self._fault) if self._fault.matches(d.path) else d for d in listing)

    def _path_call(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(path: Any, *args: Any, **kwargs: Any) -> Any:
            if self._fault.matches(path):
                self._fault.fire()
            return real(path, *args, **kwargs)
        return call

    def _tracking_open(self, path: Any, *args: Any, **kwargs: Any) -> int:
        fd: int = os.open(path, *args, **kwargs)
        if self._fault.matches(path):
            self._fds.add(fd)
        return fd

    def _fd_call(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(fd: int, *args: Any) -> Any:
            if fd in self._fds:
                self._fault.fire()
            return real(fd, *args)
        return call


def _library(root: Path) -> None:
    tree(root, {"a.jpg": (8, 8), TARGET: (8, 8), "sub/y.jpg": (9, 9), "deep/z.jpg": (10, 10)})


def _scan(db: Any, settings: Any) -> dict[str, Any]:
    return service.scan(db, settings, catalog_libraries.get(db, NAME), ScanOptions()).document


def _reported(doc: dict[str, Any], path: str) -> list[str]:
    """The reasons the scan gave for ``path`` (skipped or errors)."""
    return [item.get("reason") or item.get("error") for item in (*doc["skipped"], *doc["errors"])
            if item["path"] == path]


# A folder turning into a folder is no fault: that pair is left out of the grid.
CASES: Final = [(site, fault) for site in SITES for fault in FAULTS
                 if not (fault == FOLDER and SITES[site][2] == TARGET_FOLDER)]


@pytest.mark.parametrize(("site", "fault"), CASES)
def test_a_failing_call_is_a_reported_path_and_nothing_on_disk_is_marked_deleted(
        db: Any, settings: Any, root: Path, register: Any, monkeypatch: pytest.MonkeyPatch, site: str,
        fault: str) -> None:
    module, call, relative = SITES[site]
    _library(root)
    register()
    _scan(db, settings)
    tree(root, {TARGET: (20, 20), "new.jpg": (12, 12)})  # a change at the faulty path, one elsewhere

    injected = _Fault(root, relative, fault)
    monkeypatch.setattr(module, "os", _FaultyOs(call, injected))
    doc = _scan(db, settings)  # an exception here is what exits 70
    monkeypatch.undo()

    assert injected.fired, f"the {site} call was never made for {relative}"
    assert ("added", "new.jpg") in {(c["type"], c["path"]) for c in doc["changes"]}
    records = files_by_path(db)
    for path in ("a.jpg", TARGET, "sub/y.jpg", "deep/z.jpg"):
        if (root / path).is_file():
            assert records[path]["status"] == "present", f"{path} is on disk but recorded {records[path]['status']}"
    reasons = _reported(doc, relative)
    assert reasons and all(reasons), f"{relative} not reported: {doc['skipped']} {doc['errors']}"

    _scan(db, settings)
    assert present_in_catalog(db) == present_on_disk(root)


class _FaultyOpenBeneath:
    """``os`` as ``libwatch.beneath`` sees it: the render's open of the target, by name below its folder, fails."""

    def __init__(self, name: bytes, fault: _Fault) -> None:
        self._name = name
        self._fault = fault

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if dir_fd is not None and os.fsencode(path) == self._name:
            self._fault.fire()
        return os.open(path, flags, mode, dir_fd=dir_fd)


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failing_open_of_a_render_is_a_failed_skipped_or_changed_job_with_its_reason(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    tree(root, {"x.jpg": (30, 20)})
    digest = "xxh3-128:" + xxhash.xxh3_128_hexdigest((root / "x.jpg").read_bytes())
    injected = _Fault(root, "x.jpg", fault)
    monkeypatch.setattr(beneath, "os", _FaultyOpenBeneath(b"x.jpg", injected))
    status, path, error, _ = renderpool._render_and_store(
        tmp_path / "cache", os.fsencode(root), b"x.jpg", False, "thumbnail", digest, RenderSpec(max_edge=16), None)
    assert injected.fired
    assert status in (renderpool.FAILED, renderpool.SKIPPED, renderpool.CHANGED) and path is None and error
    assert not (tmp_path / "cache").exists() or not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))
