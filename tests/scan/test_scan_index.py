"""The local stat index and racy records."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from libwatch.catalog import files as catalog_files
from libwatch.catalog import libraries as catalog_libraries
from libwatch.services import scan_detect
from libwatch.services.scan import ScanOptions

from .conftest import NAME, age, changes_of, file_hash, files_by_path, tree, write_image

FULL_READ = "no valid local index"


def _plan(db: Any, settings: Any) -> scan_detect.Plan:
    return scan_detect.detect(db, settings, catalog_libraries.get(db, NAME), ScanOptions())


def test_a_no_change_rescan_uses_the_index_and_an_external_change_falls_back(
        db: Any, settings: Any, root: Path, register: Any, scan_service: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    tree(root, {f"d{i}/x{j}.jpg": (10 + j, 10) for i in range(3) for j in range(4)})
    age(root)
    register()
    scan_service()
    caplog.set_level(logging.INFO, logger="libwatch.scan")
    caplog.clear()
    quiet = scan_service()
    assert (quiet["changes"], quiet["counts"]["hashed_bytes"], quiet["counts"]["unchanged"]) == ([], 0, 12)
    assert FULL_READ not in caplog.text
    assert _plan(db, settings).used_index

    db.libraries.update_one({"_id": NAME}, {"$inc": {"state.generation": 1}})  # another writer touched the catalog
    fallback = _plan(db, settings)
    assert not fallback.used_index and not fallback.has_changes and fallback.unchanged == 12
    caplog.clear()
    again = scan_service()
    assert (again["changes"], again["counts"]["hashed_bytes"]) == ([], 0)
    assert FULL_READ in caplog.text
    assert _plan(db, settings).used_index  # that scan wrote a fresh index


def test_the_index_never_hides_a_change_made_by_another_catalog_writer(
        db: Any, settings: Any, root: Path, register: Any, scan_service: Any) -> None:
    tree(root, {"a.jpg": (10, 10), "b.jpg": (11, 11)})
    age(root)
    register()
    scan_service()
    # Another host's scan recorded b.jpg as missing and bumped the generation: the catalog is the truth.
    db.files.update_one({"library": NAME, "path": "b.jpg"}, {"$set": {"status": "missing"}})
    db.libraries.update_one({"_id": NAME}, {"$inc": {"state.generation": 1}})
    assert changes_of(scan_service()) == {("added", "b.jpg")}
    assert files_by_path(db)["b.jpg"]["status"] == "present"


def test_a_same_size_rewrite_with_the_same_mtime_is_caught_through_the_racy_mark(
        db: Any, root: Path, register: Any, scan_service: Any) -> None:
    target = root / "a.bmp"
    write_image(target, (20, 20), color=(10, 10, 10))
    register()
    first = scan_service()  # the file was written within the timestamp granularity of the scan
    assert changes_of(first) == {("added", "a.bmp"), ("collection_added", "")}
    assert files_by_path(db)["a.bmp"]["racy"] is True
    st = target.stat()
    write_image(target, (20, 20), color=(250, 10, 10))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    second = scan_service()
    assert changes_of(second) == {("modified", "a.bmp")}
    assert files_by_path(db)["a.bmp"]["hash"] == file_hash(target)


def test_a_racy_record_is_confirmed_and_then_trusted(db: Any, root: Path, register: Any, scan_service: Any) -> None:
    write_image(root / "a.jpg", (20, 20))
    register()
    scan_service()
    assert files_by_path(db)["a.jpg"]["racy"] is True
    age(root)  # now old: the next scan hashes it once more (the mtime changed: touched) and trusts it
    assert changes_of(scan_service()) == {("touched", "a.jpg")}
    assert files_by_path(db)["a.jpg"]["racy"] is False
    quiet = scan_service()
    assert (quiet["changes"], quiet["counts"]["hashed_bytes"]) == ([], 0)


def test_a_scan_that_dies_among_its_writes_leaves_no_index_that_matches(
        db: Any, settings: Any, root: Path, register: Any, scan_service: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    tree(root, {"a.jpg": (10, 10), "b.jpg": (11, 11)})
    age(root)
    register()
    scan_service()
    assert _plan(db, settings).used_index
    (root / "b.jpg").unlink()
    tree(root, {"c.jpg": (12, 12)})
    age(root)

    def die(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # as a kill among the writes: the generation is already bumped

    monkeypatch.setattr(catalog_files, "record_changes", die)
    with pytest.raises(KeyboardInterrupt):
        scan_service()
    monkeypatch.undo()
    assert not _plan(db, settings).used_index
    assert {("added", "c.jpg"), ("deleted", "b.jpg")} <= changes_of(scan_service())
