"""Scans over the per-folder fast path: folders the local index vouches for are not matched file by file."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from libwatch import statindex
from libwatch.catalog import libraries as catalog_libraries
from libwatch.services import scan_detect

from .conftest import (
    NAME,
    age,
    changes_of,
    flip_a_byte_keeping_size_and_mtime,
    present_in_catalog,
    present_on_disk,
    tree,
)


def _index(settings: Any, db: Any) -> statindex.Index:
    library = catalog_libraries.get(db, NAME)
    index = statindex.read(scan_detect.index_file(settings, library), library=NAME, generation=library.generation,
                           root=scan_detect.index_root(library))
    assert index is not None
    return index


def test_a_change_in_one_folder_keeps_the_others_in_the_rewritten_index(
        db: Any, settings: Any, root: Path, register: Any, scan_service: Any) -> None:
    tree(root, {f"d{i}/x{j}.jpg": (10 + j, 10) for i in range(3) for j in range(3)} | {"top.jpg": (9, 9)})
    age(root)
    register()
    scan_service()
    assert set(_index(settings, db).folders) == {"", "d0", "d1", "d2"}

    os.utime(root / "d1/x0.jpg", ns=(10**18, 10**18))  # touched: d1 is matched file by file, the others folded
    shutil.rmtree(root / "d2")
    touched = scan_service(allow_mass_delete=True)
    assert changes_of(touched) == {("touched", "d1/x0.jpg"), ("collection_removed", "d2")} | {
        ("deleted", f"d2/x{j}.jpg") for j in range(3)}
    assert touched["counts"]["unchanged"] == 6 and touched["counts"]["scanned"] == 7

    index = _index(settings, db)
    assert [r.path for span in index.spans() for r in span.load()] == sorted(present_in_catalog(db))
    assert set(index.folders) == {"", "d0", "d1"}
    quiet = scan_service()
    assert (quiet["changes"], quiet["counts"]["unchanged"], quiet["counts"]["hashed_bytes"]) == ([], 7, 0)
    assert present_in_catalog(db) == present_on_disk(root)


def test_a_folded_folder_still_counts_and_a_new_subfolder_is_found(
        db: Any, settings: Any, root: Path, register: Any, scan_service: Any) -> None:
    tree(root, {"a/1.jpg": (10, 10), "a/2.jpg": (11, 11)})
    age(root)
    register()
    scan_service()
    tree(root, {"a/b/3.jpg": (12, 12)})
    age(root / "a" / "b")
    found = scan_service()
    assert changes_of(found) == {("added", "a/b/3.jpg"), ("collection_added", "a/b")}
    assert found["counts"]["unchanged"] == 2
    collections = {doc["path"]: doc["file_count"] for doc in db.collections.find({"library": NAME})}
    assert collections == {"a": 2, "a/b": 1}


def test_settling_files_are_skipped_even_in_a_folder_the_index_vouches_for(
        db: Any, settings: Any, root: Path, register: Any, scan_service: Any) -> None:
    tree(root, {"a/1.jpg": (10, 10)})
    age(root, start_ns=time.time_ns() - 60 * 10**9)  # a minute old: not racy, but inside an hour's settle window
    register()
    scan_service()
    assert "a" in _index(settings, db).folders
    settled = scan_service(settle_s=3600.0)
    assert [(s["path"], s["reason"]) for s in settled["skipped"]] == [("a/1.jpg", "unstable")]
    assert scan_service()["counts"]["unchanged"] == 1


# A root holding images and one folder: the parallel walk lists "one" itself and leaves its
# subfolders to the worker processes.
FOLDERS = ("", "one", "one/a", "one/a/b/c", "one/d", "one/d/e")


@pytest.mark.parametrize("parallel_from", [0, scan_detect.PARALLEL_WALK_FILES], ids=["parallel", "serial"])
def test_a_change_in_any_one_folder_is_found_while_the_others_are_folded(
        db: Any, root: Path, register: Any, scan_service: Any, monkeypatch: pytest.MonkeyPatch,
        parallel_from: int) -> None:
    monkeypatch.setattr(scan_detect, "PARALLEL_WALK_FILES", parallel_from)
    tree(root, {f"{folder}/{name}.jpg".lstrip("/"): (10 + i, 10) for folder in FOLDERS for i, name in enumerate("pq")})
    age(root)
    register()
    scan_service()
    for folder in FOLDERS:
        changed = f"{folder}/p.jpg".lstrip("/")
        flip_a_byte_keeping_size_and_mtime(root / changed)
        found = scan_service()
        assert changes_of(found) == {("modified", changed)}, folder
        assert found["counts"]["unchanged"] == 2 * len(FOLDERS) - 1
    assert present_in_catalog(db) == present_on_disk(root)
