"""Fixtures for the scan tests: a library folder of real images, the CLI as JSON, catalog snapshots.

The shared helpers (``tree``, ``write_image``, ``sample``) come from ``tests/support.py``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
import xxhash

from libwatch.catalog import libraries as catalog_libraries
from libwatch.config import Settings
from libwatch.library import Library
from libwatch.services import libraries as library_service
from libwatch.services import scan as service
from libwatch.services.scan import ScanOptions

from support import sample, tree, write_image  # noqa: F401  (used by the scan tests through this module)

NAME: Final = "photos"
HOUR_NS: Final = 3600 * 10**9
# Old enough that no record is racy (the scan hashes racy records again, which would blur what a test sees).
OLD_NS: Final = time.time_ns() - 24 * HOUR_NS
TOP_KEYS: Final = {"library", "root", "run_id", "dry_run", "started_at", "finished_at", "counts", "changes",
                   "skipped", "errors", "rebuild", "status", "problems"}
COUNT_KEYS: Final = {"scanned", "unchanged", "added", "modified", "touched", "renamed", "deleted", "corrupted",
                     "skipped", "errors", "collections_added", "collections_removed", "hashed_bytes"}
CHANGE_KEYS: Final = {"type", "path", "collection", "size", "mtime_ns", "hash"}
REBUILD_KEYS: Final = {"requested", "published", "pending"}
# Running the CLI as root without these capabilities makes a mode-000 file unreadable.
WITHOUT_DAC: Final = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


@dataclass(frozen=True)
class CliResult:
    """One `libwatch ... --json` run: exit code, the parsed document (if any), stderr."""

    code: int
    doc: Any
    stderr: str


def file_hash(path: Path | bytes) -> str:
    """The XXH3-128 of a file in libwatch's notation, computed independently of libwatch."""
    with open(path, "rb") as stream:
        return "xxh3-128:" + xxhash.xxh3_128(stream.read()).hexdigest()


def age(root: Path, start_ns: int = OLD_NS) -> None:
    """Give every file under `root` a distinct mtime a day in the past."""
    for offset, path in enumerate(sorted(p for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink())):
        os.utime(path, ns=(start_ns + offset * 10**9, start_ns + offset * 10**9))


def flip_a_byte_keeping_size_and_mtime(target: Path) -> None:
    """Rewrite a file in place as bit rot would: only its ctime shows it."""
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The library folder (empty)."""
    path = tmp_path / NAME
    path.mkdir()
    return path


@pytest.fixture
def register(db: Any, root: Path) -> Callable[..., Library]:
    """Register `root` as the library `photos` (options as `Library` fields)."""
    def add(**options: Any) -> Library:
        return library_service.add(db, NAME, root, **options)

    return add


@pytest.fixture
def cli(cli_env: dict[str, str]) -> Callable[..., CliResult]:
    """Run `libwatch ARGS --json`; `prefix` runs it under another command (e.g. setpriv)."""
    def run(*args: str, timeout: float = 120, prefix: Sequence[str] = (),
            env: Mapping[str, str] | None = None) -> CliResult:
        done = subprocess.run([*prefix, sys.executable, "-m", "libwatch", *args, "--json"],
                              env={**cli_env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, check=False)
        doc = json.loads(done.stdout) if done.stdout.strip() else None
        return CliResult(done.returncode, doc, done.stderr)

    return run


@pytest.fixture
def scan_service(db: Any, settings: Settings) -> Callable[..., dict[str, Any]]:
    """Scan a library through the service API; returns the JSON document (as Python values)."""
    def run(name: str = NAME, **options: Any) -> dict[str, Any]:
        return service.scan(db, settings, catalog_libraries.get(db, name), ScanOptions(**options)).document

    return run


@pytest.fixture
def diff_service(db: Any, settings: Settings) -> Callable[..., dict[str, Any]]:
    def run(name: str = NAME, **options: Any) -> dict[str, Any]:
        return service.diff(db, settings, catalog_libraries.get(db, name), ScanOptions(**options)).document

    return run


def changes_of(doc: Mapping[str, Any]) -> set[tuple[str, ...]]:
    """The changes of a scan document as (type, path[, old_path]) tuples."""
    return {(c["type"], c["path"], *([c["old_path"]] if "old_path" in c else [])) for c in doc["changes"]}


def files_by_path(db: Any, library: str = NAME) -> dict[str, dict[str, Any]]:
    return {doc["path"]: doc for doc in db.files.find({"library": library})}


def present_on_disk(root: Path) -> dict[str, tuple[int, str]]:
    """Every image file under `root` as relative path -> (size, hash), computed without libwatch."""
    found = {}
    for path in Path(root).rglob("*"):
        if path.is_file() and path.suffix.lower() in (".jpg", ".png", ".bmp", ".gif"):
            found[path.relative_to(root).as_posix()] = (path.stat().st_size, file_hash(path))
    return found


def present_in_catalog(db: Any, library: str = NAME) -> dict[str, tuple[int, str]]:
    docs = list(db.files.find({"library": library, "status": "present"}))
    assert len({d["path"] for d in docs}) == len(docs), "duplicate records"
    return {d["path"]: (d["size"], d["hash"]) for d in docs}


def snapshot(db: Any) -> dict[str, list[dict[str, Any]]]:
    """Every document of every catalog collection, for 'nothing was written' checks."""
    return {name: sorted(db[name].find(), key=repr) for name in sorted(db.list_collection_names())}
