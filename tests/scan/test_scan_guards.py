"""The safety guards: a vanished or empty root, and a mass deletion, change nothing."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from .conftest import NAME, age, snapshot, tree


def _library_of_four(root: Path, register: Any, cli: Any) -> None:
    tree(root, {"a/1.jpg": (10, 10), "a/2.jpg": (11, 11), "b/3.jpg": (12, 12), "b/4.jpg": (13, 13)})
    age(root)
    register()
    assert cli("scan", NAME).code == 0


def test_missing_root_exits_74_and_marks_nothing(db: Any, root: Path, register: Any, cli: Any) -> None:
    _library_of_four(root, register, cli)
    before = snapshot(db)
    root.rename(root.with_name("unmounted"))
    done = cli("scan", NAME)
    assert done.code == 74, done.stderr
    assert "unavailable" in done.stderr
    assert cli("diff", NAME).code == 74
    after = snapshot(db)
    assert after["files"] == before["files"] and after["events"] == before["events"]


def test_empty_root_exits_74_and_marks_nothing(db: Any, root: Path, register: Any, cli: Any) -> None:
    _library_of_four(root, register, cli)
    before = snapshot(db)
    for child in root.iterdir():
        shutil.rmtree(child)
    done = cli("scan", NAME)
    assert done.code == 74, done.stderr
    assert "empty" in done.stderr
    after = snapshot(db)
    assert after["files"] == before["files"] and after["collections"] == before["collections"]


def test_mass_deletion_is_refused_unless_allowed(db: Any, root: Path, register: Any, cli: Any) -> None:
    _library_of_four(root, register, cli)
    for name in ("a/1.jpg", "a/2.jpg", "b/3.jpg"):
        (root / name).unlink()
    before = snapshot(db)
    refused = cli("scan", NAME)
    assert refused.code == 65, refused.stderr
    assert "--allow-mass-delete" in refused.stderr
    after = snapshot(db)
    assert {k: v for k, v in after.items() if k != "runs"} == {k: v for k, v in before.items() if k != "runs"}
    assert db.runs.find_one({"status": "failed"}) is not None
    assert cli("scan", NAME, "--max-delete", "0.8").code == 0
    assert db.files.count_documents({"status": "missing"}) == 3


def test_allow_mass_delete_proceeds(db: Any, root: Path, register: Any, cli: Any) -> None:
    _library_of_four(root, register, cli)
    for name in ("a/1.jpg", "a/2.jpg", "b/3.jpg"):
        (root / name).unlink()
    done = cli("scan", NAME, "--allow-mass-delete")
    assert done.code == 0, done.stderr
    assert done.doc["counts"]["deleted"] == 3 and done.doc["counts"]["collections_removed"] == 1
    assert db.files.count_documents({"status": "missing"}) == 3


@pytest.mark.parametrize("absurd", [float("nan"), 1e9, -1, "all", True])
def test_an_absurd_max_delete_in_the_catalog_guards_like_zero(db: Any, root: Path, register: Any, cli: Any,
                                                              absurd: object) -> None:
    """The catalog is not trusted to lift the guard: a max_delete `library set` would refuse deletes nothing."""
    _library_of_four(root, register, cli)
    db.libraries.update_one({"_id": NAME}, {"$set": {"max_delete": absurd}})
    (root / "a/1.jpg").unlink()
    refused = cli("scan", NAME)
    assert refused.code == 65 and "--allow-mass-delete" in refused.stderr, refused.stderr
    assert db.files.count_documents({"status": "missing"}) == 0
