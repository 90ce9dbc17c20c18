"""The JSON contract, diff's exit code and purity, registration by path, --all."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .conftest import (
    CHANGE_KEYS,
    COUNT_KEYS,
    NAME,
    OLD_NS,
    REBUILD_KEYS,
    TOP_KEYS,
    age,
    changes_of,
    snapshot,
    tree,
)


def test_scan_document_keys_are_exactly_the_designs(root: Path, register: Any, cli: Any) -> None:
    tree(root, {"a/x.jpg": (10, 10), "a/y.jpg": (11, 11), "fifo-holder/z.jpg": (12, 12)})
    os.mkfifo(root / "a" / "pipe.jpg")
    age(root)
    register()
    first = cli("scan", NAME)
    os.rename(root / "a/y.jpg", root / "a/renamed.jpg")
    os.utime(root / "a/x.jpg", ns=(OLD_NS + 10**12, OLD_NS + 10**12))
    second = cli("scan", NAME)
    for done in (first, second):
        assert done.code == 0, done.stderr
        assert set(done.doc) == TOP_KEYS
        assert set(done.doc["counts"]) == COUNT_KEYS
        assert set(done.doc["rebuild"]) == REBUILD_KEYS
        assert isinstance(done.doc["run_id"], str) and done.doc["dry_run"] is False
        assert done.doc["started_at"].endswith("Z") and done.doc["finished_at"] >= done.doc["started_at"]
        assert {"path", "reason"} <= set(done.doc["skipped"][0]) <= {"path", "reason", "detail", "path_b64"}
    file_changes = [c for c in first.doc["changes"] + second.doc["changes"] if not c["type"].startswith("collection")]
    for change in file_changes:
        extra = {"old_path"} if change["type"] == "renamed" else set()
        assert set(change) == CHANGE_KEYS | extra, change
    for change in first.doc["changes"]:
        if change["type"].startswith("collection"):
            assert set(change) == {"type", "path", "collection"}
    assert {c["type"] for c in second.doc["changes"]} == {"renamed", "touched"}


def test_diff_exit_code_and_it_writes_nothing(db: Any, root: Path, register: Any, cli: Any) -> None:
    tree(root, {"a/x.jpg": (10, 10)})
    age(root)
    register()
    before = snapshot(db)
    pending = cli("diff", NAME, "--exit-code")
    assert (pending.code, changes_of(pending.doc)) == (1, {("added", "a/x.jpg"), ("collection_added", "a")})
    assert pending.doc["dry_run"] is True and pending.doc["run_id"] is None
    assert cli("diff", NAME).code == 0  # without --exit-code changes are not an error
    assert snapshot(db) == before
    assert cli("scan", NAME).code == 0
    quiet = cli("diff", str(root), "--exit-code")  # by folder as well as by name
    assert (quiet.code, quiet.doc["changes"]) == (0, [])
    dry = cli("scan", NAME, "--dry-run")
    assert dry.code == 0 and dry.doc["dry_run"] is True


def test_scan_of_an_unregistered_folder_registers_it(db: Any, tmp_path: Path, cli: Any) -> None:
    folder = tmp_path / "Holiday Pics"
    tree(folder, {"x.jpg": (10, 10)})
    taken = tmp_path / "other" / "holiday-pics"
    tree(taken, {"y.jpg": (10, 10)})
    assert cli("scan", str(taken)).code == 0
    done = cli("scan", str(folder))
    assert done.code == 0, done.stderr
    assert done.doc["library"] == "holiday-pics-2"  # made unique
    assert f"registered {folder}" in done.stderr and "holiday-pics-2" in done.stderr
    assert db.libraries.find_one({"_id": "holiday-pics-2"})["path"] == str(folder)
    again = cli("scan", str(folder))
    assert again.doc["library"] == "holiday-pics-2" and "registered" not in again.stderr


def test_scan_all_scans_every_enabled_library(db: Any, tmp_path: Path, cli: Any, libwatch: Any) -> None:
    for name in ("one", "two", "off"):
        tree(tmp_path / name, {f"{name}.jpg": (10, 10)})
        assert libwatch("library", "add", name, str(tmp_path / name)).code == 0
    db.libraries.update_one({"_id": "off"}, {"$set": {"schedule.enabled": False}})
    done = cli("scan", "--all")
    assert done.code == 0, done.stderr
    assert [d["library"] for d in done.doc["scans"]] == ["one", "two"]
    assert all(d["counts"]["added"] == 1 for d in done.doc["scans"])
    assert db.files.count_documents({"library": "off"}) == 0
