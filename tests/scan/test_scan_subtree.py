"""Targeted scans (issue 18): `scan PATH` inside a library, or `scan LIBRARY --path FOLDER`, scans that subtree only."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from .conftest import NAME, OLD_NS, TOP_KEYS, age, changes_of, files_by_path, present_in_catalog, present_on_disk, tree

LIBRARY = {"2024/trip/a.jpg": (10, 10), "2024/trip/b.jpg": (11, 10), "2024/trip/day2/c.jpg": (12, 10),
           "2024/home/d.jpg": (13, 10), "2023/e.jpg": (14, 10), "2023/f.jpg": (15, 10), "top.jpg": (16, 10)}


@pytest.fixture
def photos(db: Any, root: Path, register: Any, cli: Any) -> Path:
    """The library `photos`, scanned once."""
    tree(root, LIBRARY)
    age(root)
    register()
    assert cli("scan", NAME).code == 0
    return root


def _add(root: Path, spec: dict[str, tuple[int, int]]) -> None:
    """New images, dated in the past (not racy), the others left as they are."""
    tree(root, spec)
    for offset, relative in enumerate(spec, start=100):
        os.utime(root / relative, ns=(OLD_NS + offset * 10**9, OLD_NS + offset * 10**9))


def _change_everywhere(root: Path) -> None:
    """One image added and one removed inside 2024/trip and outside it."""
    _add(root, {"2024/trip/new.jpg": (20, 10), "2023/new.jpg": (21, 10)})
    (root / "2024/trip/b.jpg").unlink()
    (root / "2023/e.jpg").unlink()


@pytest.mark.parametrize("how", ["path-option", "folder"])
def test_only_the_subtree_is_walked_compared_and_recorded(db: Any, photos: Path, cli: Any, how: str) -> None:
    _change_everywhere(photos)
    args = ("--path", "2024/trip") if how == "path-option" else ()
    done = cli("scan", NAME if args else str(photos / "2024" / "trip"), *args)
    assert done.code == 0, done.stderr
    assert set(done.doc) == TOP_KEYS | {"subtree"} and done.doc["subtree"] == "2024/trip"
    assert done.doc["library"] == NAME and "registered" not in done.stderr
    assert changes_of(done.doc) == {("added", "2024/trip/new.jpg"), ("deleted", "2024/trip/b.jpg")}
    assert done.doc["counts"]["scanned"] == 3  # a, day2/c and new: nothing outside was walked
    assert done.doc["counts"]["hashed_bytes"] == (photos / "2024/trip/new.jpg").stat().st_size
    # Outside the subtree nothing moved: the removed file is still present, the new one unknown.
    records = files_by_path(db)
    assert records["2023/e.jpg"]["status"] == "present" and "2023/new.jpg" not in records
    assert records["2024/trip/b.jpg"]["status"] == "missing"
    assert [lib["_id"] for lib in db.libraries.find()] == [NAME]
    assert db.runs.find_one({"_id": done.doc["run_id"]})["subtree"] == "2024/trip"
    # A whole scan then finds exactly the changes left outside, and agrees with the disk.
    whole = cli("scan", NAME)
    assert changes_of(whole.doc) == {("added", "2023/new.jpg"), ("deleted", "2023/e.jpg")}
    assert "subtree" not in whole.doc
    assert present_in_catalog(db) == present_on_disk(photos)


def test_a_subtree_scan_keeps_the_index_of_the_rest(db: Any, photos: Path, cli: Any) -> None:
    _add(photos, {"2024/trip/new.jpg": (20, 10)})
    assert cli("scan", NAME, "--path", "2024/trip").code == 0
    quiet = cli("scan", NAME)  # read from the rewritten index: the folders outside were carried over
    assert quiet.code == 0 and quiet.doc["changes"] == [] and quiet.doc["counts"]["hashed_bytes"] == 0
    assert quiet.doc["counts"]["unchanged"] == len(LIBRARY) + 1


def test_the_deletion_guard_counts_the_subtree(db: Any, photos: Path, cli: Any) -> None:
    (photos / "2024/trip/a.jpg").unlink()
    (photos / "2024/trip/b.jpg").unlink()  # 2 of the subtree's 3 files (2 of the library's 7 would pass)
    refused = cli("scan", NAME, "--path", "2024/trip")
    assert refused.code == 65, refused.stderr
    assert files_by_path(db)["2024/trip/a.jpg"]["status"] == "present"
    allowed = cli("scan", NAME, "--path", "2024/trip", "--allow-mass-delete")
    assert changes_of(allowed.doc) == {("deleted", "2024/trip/a.jpg"), ("deleted", "2024/trip/b.jpg"),
                                       ("collection_removed", "2024/trip")}  # day2/c.jpg is in its own folder


def test_an_emptied_subtree_is_refused_like_an_unmounted_root(db: Any, photos: Path, cli: Any) -> None:
    for image in (photos / "2024/trip").rglob("*.jpg"):
        image.unlink()
    (photos / "2024/trip/day2").rmdir()
    refused = cli("scan", NAME, "--path", "2024/trip", "--allow-mass-delete")
    assert refused.code == 74, refused.stderr
    assert files_by_path(db)["2024/trip/a.jpg"]["status"] == "present"


def test_deleting_a_whole_folder_elsewhere_does_not_touch_a_subtree_scan(db: Any, photos: Path, cli: Any) -> None:
    for image in (photos / "2023").iterdir():
        image.unlink()
    done = cli("scan", str(photos / "2024"))
    assert done.code == 0 and done.doc["subtree"] == "2024" and done.doc["changes"] == []
    assert {p for p, d in files_by_path(db).items() if d["status"] == "present"} == set(LIBRARY)


@pytest.mark.parametrize("args", [("--path", "../elsewhere"), ("--path", "2024/nowhere"), ("--path", "/2024"),
                                  ("--path", "top.jpg"), ("--all", "--path", "2024")],
                         ids=["outside", "missing", "absolute", "a-file", "all"])
def test_a_bad_subtree_is_refused_before_anything_is_written(db: Any, photos: Path, cli: Any,
                                                             args: tuple[str, ...]) -> None:
    (photos.parent / "elsewhere").mkdir()
    runs = db.runs.count_documents({})
    done = cli("scan", *(() if "--all" in args else (NAME,)), *args)
    assert done.code == 2, done.stderr
    assert db.runs.count_documents({}) == runs


def test_diff_of_a_folder_inside_a_library(db: Any, photos: Path, cli: Any) -> None:
    _change_everywhere(photos)
    preview = cli("diff", str(photos / "2023"))
    assert preview.doc["subtree"] == "2023"
    assert changes_of(preview.doc) == {("added", "2023/new.jpg"), ("deleted", "2023/e.jpg")}
