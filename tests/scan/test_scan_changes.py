"""Each change type through the CLI's --json document, and what it leaves in the catalog."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .conftest import (
    NAME,
    OLD_NS,
    age,
    changes_of,
    file_hash,
    files_by_path,
    flip_a_byte_keeping_size_and_mtime,
    sample,
    tree,
    write_image,
)

IMAGES = {"a/keep.jpg": (64, 48), "a/same.bmp": (20, 20), "a/grow.png": (30, 30), "a/touch.jpg": (40, 40),
          "a/move.jpg": (50, 50), "d/gone.jpg": (60, 60)}


def _mark_built(db: Any) -> None:
    """Pretend the worker rendered everything, so a new `pending` can only come from the scan."""
    db.files.update_many({}, {"$set": {"rebuild.cache": "done", "rebuild.thumbnail": "done"}})


def test_first_scan_adds_probes_and_requests_rebuilds(db: Any, root: Path, register: Any, cli: Any) -> None:
    tree(root, {"a/x.jpg": (64, 48), "b/y.png": (7, 13)})
    age(root)
    register()
    done = cli("scan", NAME)
    assert done.code == 0, done.stderr
    assert changes_of(done.doc) == {("added", "a/x.jpg"), ("added", "b/y.png"), ("collection_added", "a"),
                                    ("collection_added", "b")}
    assert done.doc["rebuild"] == {"requested": 4, "published": 0, "pending": 4}
    records = files_by_path(db)
    assert {p: (r["width"], r["height"], r["format"]) for p, r in records.items()} == {
        "a/x.jpg": (64, 48, "JPEG"), "b/y.png": (7, 13, "PNG")}
    for path, record in records.items():
        assert record["hash"] == file_hash(root / path)
        assert (record["status"], record["rebuild"]["cache"], record["rebuild"]["thumbnail"]) == (
            "present", "pending", "pending")
    events = list(db.events.find({"run_id": done.doc["run_id"]}))
    assert sorted((e["type"], e["path"]) for e in events) == sorted(changes_of(done.doc))
    collections = {c["path"]: c for c in db.collections.find({"library": NAME})}
    assert {p: (c["file_count"], c["sync"]["status"]) for p, c in collections.items()} == {
        "a": (1, "rebuild_required"), "b": (1, "rebuild_required")}


def test_rebuild_settings_decide_what_is_pending(db: Any, root: Path, register: Any, cli: Any) -> None:
    tree(root, {"x.jpg": (10, 10)})
    register(rebuild_thumbnails=False)
    done = cli("scan", NAME)
    assert done.doc["rebuild"]["requested"] == 1
    record = files_by_path(db)["x.jpg"]
    assert (record["rebuild"]["cache"], record["rebuild"]["thumbnail"]) == ("pending", None)


def test_every_change_type_of_one_rescan(db: Any, root: Path, register: Any, cli: Any) -> None:
    tree(root, IMAGES)
    age(root)
    register()
    assert cli("scan", NAME).code == 0
    _mark_built(db)
    before = files_by_path(db)

    write_image(root / "a/same.bmp", (20, 20), color=(0, 90, 255))  # same size, other pixels
    write_image(root / "a/grow.png", (90, 30))
    os.utime(root / "a/same.bmp", ns=(OLD_NS + 100 * 10**9,) * 2)
    os.utime(root / "a/grow.png", ns=(OLD_NS + 101 * 10**9,) * 2)
    os.utime(root / "a/touch.jpg", ns=(OLD_NS + 102 * 10**9,) * 2)
    (root / "c").mkdir()
    os.rename(root / "a/move.jpg", root / "c/moved.jpg")  # across folders, into a new one
    (root / "d/gone.jpg").unlink()
    (root / "d").rmdir()
    write_image(root / "a/new.jpg", (33, 33))
    os.utime(root / "a/new.jpg", ns=(OLD_NS + 103 * 10**9,) * 2)
    expected = {("modified", "a/same.bmp"), ("modified", "a/grow.png"), ("touched", "a/touch.jpg"),
                ("renamed", "c/moved.jpg", "a/move.jpg"), ("deleted", "d/gone.jpg"), ("added", "a/new.jpg"),
                ("collection_added", "c"), ("collection_removed", "d")}

    preview = cli("diff", NAME, "--exit-code")
    assert (preview.code, changes_of(preview.doc)) == (1, expected)
    done = cli("scan", NAME)
    assert done.code == 0, done.stderr
    assert changes_of(done.doc) == expected
    assert {k: v for k, v in done.doc["counts"].items() if v and k not in ("scanned", "unchanged", "hashed_bytes")} == {
        "added": 1, "modified": 2, "touched": 1, "renamed": 1, "deleted": 1, "collections_added": 1,
        "collections_removed": 1}
    assert done.doc["rebuild"]["requested"] == 6  # added + 2 modified, two kinds each

    after = files_by_path(db)
    assert after["c/moved.jpg"]["_id"] == before["a/move.jpg"]["_id"]
    assert "a/move.jpg" not in after
    pending = {p for p, r in after.items() if r["rebuild"]["cache"] == "pending"}
    assert pending == {"a/same.bmp", "a/grow.png", "a/new.jpg"}  # not the touched nor the renamed file
    assert all(r["rebuild"]["thumbnail"] == ("pending" if p in pending else "done") for p, r in after.items())
    gone = after["d/gone.jpg"]
    assert gone["status"] == "missing" and gone["missing_since"] is not None
    assert after["a/touch.jpg"]["mtime_ns"] == OLD_NS + 102 * 10**9
    assert after["a/grow.png"]["width"] == 90 and after["a/same.bmp"]["hash"] == file_hash(root / "a/same.bmp")
    events = list(db.events.find({"run_id": done.doc["run_id"]}))
    assert sorted((e["type"], e["path"]) for e in events) == sorted(c[:2] for c in expected)
    collections = {c["path"]: c for c in db.collections.find({"library": NAME})}
    assert collections["d"]["missing_since"] is not None and collections["d"]["sync"]["status"] == "missing"
    assert collections["c"]["file_count"] == 1

    again = cli("diff", NAME, "--exit-code")
    assert (again.code, again.doc["changes"]) == (0, [])


def test_bit_rot_is_reported_corrupted_by_verify(db: Any, root: Path, register: Any, cli: Any) -> None:
    target = root / "a/photo.jpg"
    tree(root, {"a/photo.jpg": (80, 60), "a/other.jpg": (20, 20)})
    age(root)
    register()
    assert cli("scan", NAME).code == 0
    flip_a_byte_keeping_size_and_mtime(target)
    # Size and mtime as recorded, content not: under --verify that is corruption (only the
    # ctime moved, as it must when a test writes the file); a plain scan calls it modified.
    done = cli("scan", NAME, "--verify")
    assert done.code == 0, done.stderr
    assert changes_of(done.doc) == {("corrupted", "a/photo.jpg")}
    assert done.doc["counts"]["hashed_bytes"] == sum(p.stat().st_size for p in root.rglob("*.jpg"))
    record = files_by_path(db)["a/photo.jpg"]
    assert (record["hash"], record["rebuild"]["cache"]) == (file_hash(target), "pending")
    assert db.libraries.find_one({"_id": NAME})["state"]["last_full_scan"] is not None


def test_content_rewritten_with_mtime_restored_is_caught_without_verify(root: Path, register: Any,
                                                                          cli: Any) -> None:
    target = root / "photo.jpg"
    tree(root, {"photo.jpg": (80, 60)})
    age(root)
    register()
    assert cli("scan", NAME).code == 0
    flip_a_byte_keeping_size_and_mtime(target)
    done = cli("scan", NAME)
    # The changed ctime sends the file to the hash check; the core calls that a modification (touch -r).
    assert changes_of(done.doc) == {("modified", "photo.jpg")}


def test_unidentifiable_files_are_tracked_with_the_probe_error(db: Any, root: Path, register: Any, cli: Any) -> None:
    tree(root, {"text.jpg": "this is not a JPEG\n", "empty.jpg": b"", "broken.png": sample("corrupt.png"),
                "fine.jpg": sample("photo.jpg")})
    register()
    done = cli("scan", NAME)
    assert done.code == 0, done.stderr
    assert changes_of(done.doc) == {("added", p) for p in ("text.jpg", "empty.jpg", "broken.png", "fine.jpg")} | {
        ("collection_added", "")}
    failed = {e["path"] for e in done.doc["errors"]}
    assert failed == {"text.jpg", "empty.jpg", "broken.png"}
    assert done.doc["counts"]["errors"] == 3
    records = files_by_path(db)
    assert all(records[p]["probe_error"] and records[p]["width"] is None for p in failed)
    assert records["empty.jpg"]["size"] == 0 and records["empty.jpg"]["hash"] == file_hash(root / "empty.jpg")
    assert (records["fine.jpg"]["format"], records["fine.jpg"]["probe_error"]) == ("JPEG", None)
