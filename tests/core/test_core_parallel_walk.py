"""The parallel walk: worker processes yield exactly the serial walk, and fail loudly."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from libwatch.core.parallel_walk import WalkWorkerLost, walk
from libwatch.core.walk import DiskEntry, Same, Skip, WalkOptions, sort_key
from libwatch.core.walk import walk as serial_walk

FOLDER_NAMES = ("a", "b", "a-b", "a.b", ".h", "\u00e9", "z")
FILE_NAMES = ("x.jpg", "y.PNG", "n.txt", ".x.jpg", "a.jpg")

folder_paths = st.lists(st.sampled_from(FOLDER_NAMES), min_size=0, max_size=3).map("/".join)


def _build(root: Path, folders: list[str], files: list[tuple[str, str, bool, int]],
           links: list[tuple[str, str]]) -> None:
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for folder, name, bad_byte, size in files:
        (root / folder).mkdir(parents=True, exist_ok=True)
        raw = os.fsencode(root / folder) + b"/" + (b"\xff" if bad_byte else b"") + name.encode()
        with open(raw, "wb") as stream:
            stream.write(b"x" * size)
    for folder, target in links:  # links to folders (loops among them) and to nowhere
        link = root / folder / "link"
        if (root / folder).is_dir() and not os.path.lexists(link):
            os.symlink(os.path.relpath(root / target, root / folder), link)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(folders=st.lists(folder_paths, max_size=12),
       files=st.lists(st.tuples(folder_paths, st.sampled_from(FILE_NAMES), st.booleans(), st.integers(0, 3)),
                      max_size=25),
       links=st.lists(st.tuples(folder_paths, folder_paths), max_size=3),
       accepted=st.sets(folder_paths),
       follow=st.booleans(), hidden=st.booleans(), exclude=st.sampled_from([(), ("b/*",), ("*.PNG", "*/z")]),
       workers=st.integers(2, 8))
# A root with fewer folders than workers is listed a level deeper by the walk itself: its items
# merge with the workers', and a link back to such a folder is still a loop.
@example(folders=["a/b"], files=[("", "x.jpg", False, 1), ("a", "a.jpg", True, 2)], links=[("a/b", "a")],
         accepted=set(), follow=True, hidden=False, exclude=(), workers=2)
def test_the_parallel_walk_yields_exactly_the_serial_walk(
        folders: list[str], files: list[tuple[str, str, bool, int]], links: list[tuple[str, str]], accepted: set[str],
        follow: bool, hidden: bool, exclude: tuple[str, ...], workers: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="lwp"))
    try:
        _build(root, folders, files, links)
        options = WalkOptions(follow_symlinks=follow, hidden=hidden, exclude=exclude)

        def fold(folder: str, entries: list[DiskEntry]) -> bool:  # runs in the workers too
            return folder in accepted

        serial = list(serial_walk(root, options, unchanged=fold))
        parallel = list(walk(root, options, unchanged=fold, workers=workers))
    finally:
        shutil.rmtree(root)
    assert parallel == serial


def _subtrees(root: Path) -> list[str]:
    """Every folder under ``root`` reached without leaving it by a link twice (relative paths)."""
    found = []
    for folder, dirs, _ in os.walk(root, followlinks=True):
        relative = os.path.relpath(folder, root)
        if relative != "." and relative.count("link") <= 1:
            found.append(relative)
        else:
            dirs[:] = [] if relative.count("link") > 1 else dirs
    return sorted(found)


def _under(items: list[Any], under: str) -> list[Any]:
    """The items the whole walk yields for the folder ``under``: those below it, or the skip of a folder above it."""
    covering = [i for i in items if type(i) is Skip and i.subtree and (under + "/").startswith(i.path + "/")]
    return covering[:1] if covering else [i for i in items if sort_key(i).startswith(under + "/")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(folders=st.lists(folder_paths, max_size=10),
       files=st.lists(st.tuples(folder_paths, st.sampled_from(FILE_NAMES), st.booleans(), st.integers(0, 3)),
                      max_size=20),
       links=st.lists(st.tuples(folder_paths, folder_paths), max_size=3),
       accepted=st.sets(folder_paths),
       follow=st.booleans(), hidden=st.booleans(), exclude=st.sampled_from([(), ("b/*",), ("*.PNG", "*/z")]),
       workers=st.sampled_from([1, 3]))
@example(folders=["a/b"], files=[("a/b", "x.jpg", False, 1)], links=[("a", "")], accepted=set(), follow=True,
         hidden=False, exclude=(), workers=1)
def test_a_walk_under_a_folder_yields_exactly_the_whole_walks_items_there(
        folders: list[str], files: list[tuple[str, str, bool, int]], links: list[tuple[str, str]], accepted: set[str],
        follow: bool, hidden: bool, exclude: tuple[str, ...], workers: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="lwu"))
    try:
        _build(root, folders, files, links)
        options = WalkOptions(follow_symlinks=follow, hidden=hidden, exclude=exclude)

        def fold(folder: str, entries: list[DiskEntry]) -> bool:
            return folder in accepted

        whole = list(serial_walk(root, options, unchanged=fold))
        for under in _subtrees(root):
            walked = list(walk(root, options, unchanged=fold, under=under, workers=workers))
            assert walked == _under(whole, under), under
    finally:
        shutil.rmtree(root)


def _checks_seen(record: Path) -> list[tuple[int, str]]:
    """(process, folder) of every folder check that ran."""
    lines = record.read_text().splitlines() if record.exists() else []
    return [(int(pid), folder) for pid, _, folder in (line.partition(" ") for line in lines)]


def _workers_seen(record: Path) -> set[int]:
    return {pid for pid, _ in _checks_seen(record)} - {os.getpid()}


def _recording(record: Path, also: object = None) -> object:
    """A folder check that notes which process ran it on which folder (and then does ``also`` in a worker)."""
    parent = os.getpid()

    def check(folder: str, entries: list[DiskEntry]) -> bool:
        with record.open("a") as stream:
            stream.write(f"{os.getpid()} {folder}\n")
        if os.getpid() != parent and callable(also):
            also()
        return folder.endswith("1")

    return check


def test_a_root_holding_one_folder_still_spreads_its_subfolders_over_the_workers(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    for i in range(6):
        (root / "only" / f"f{i}").mkdir(parents=True)
        (root / "only" / f"f{i}" / "x.jpg").write_bytes(b"x" * i)
    (root / "only" / "top.jpg").write_bytes(b"top")
    record = tmp_path / "pids"
    items = list(walk(root, unchanged=_recording(record), workers=2))  # type: ignore[arg-type]
    assert items == list(serial_walk(root, unchanged=_recording(tmp_path / "serial")))  # type: ignore[arg-type]
    assert Same("only/f1", 1, 1) in items
    by_folder = {folder: pid for pid, folder in _checks_seen(record)}
    assert by_folder.pop("only") == os.getpid()  # listed by the walk itself to find more than one subtree
    assert set(by_folder) == {f"only/f{i}" for i in range(6)} and os.getpid() not in by_folder.values()
    assert all(not Path(f"/proc/{pid}").exists() for pid in _workers_seen(record))  # reaped


def _tree_of_folders(root: Path, count: int) -> None:
    for i in range(count):
        (root / f"f{i}").mkdir(parents=True)
        (root / f"f{i}" / "x.jpg").write_bytes(b"x")


def test_an_error_in_a_worker_is_raised_by_the_walk(tmp_path: Path) -> None:
    _tree_of_folders(tmp_path / "lib", 4)

    def fail() -> None:
        raise ValueError("the check failed in a worker")

    with pytest.raises(ValueError, match="in a worker"):
        list(walk(tmp_path / "lib", unchanged=_recording(tmp_path / "pids", fail), workers=2))  # type: ignore[arg-type]


def test_a_killed_worker_is_not_taken_for_the_end_of_the_walk(tmp_path: Path) -> None:
    _tree_of_folders(tmp_path / "lib", 4)
    with pytest.raises(WalkWorkerLost):
        killed = _recording(tmp_path / "pids", lambda: os.kill(os.getpid(), signal.SIGKILL))
        list(walk(tmp_path / "lib", unchanged=killed, workers=2))  # type: ignore[arg-type]


def test_closing_a_walk_early_stops_and_reaps_its_workers(tmp_path: Path) -> None:
    _tree_of_folders(tmp_path / "lib", 200)
    record = tmp_path / "pids"
    walked = walk(tmp_path / "lib", unchanged=_recording(record), workers=2)  # type: ignore[arg-type]
    first = next(walked)
    walked.close()
    assert first == DiskEntry("f0/x.jpg", *first[1:])
    workers = _workers_seen(record)
    assert workers and all(not Path(f"/proc/{pid}").exists() for pid in workers)
