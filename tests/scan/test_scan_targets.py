"""Scan targets: every target and option is checked before anything is written (issue 13.9)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import NAME, age, tree


def _catalog(db: Any) -> dict[str, list[Any]]:
    """What a scan can leave behind: libraries, runs, files and events."""
    return {name: sorted(map(str, db[name].find({}, {"_id": 1}))) for name in ("libraries", "runs", "files", "events")}


def test_a_dash_folder_and_a_bad_target_register_nothing(db: Any, tmp_path: Path, cli_env: dict[str, str]) -> None:
    tree(tmp_path / "-dashlib", {"x.jpg": (10, 10)})
    before = _catalog(db)
    done = subprocess.run([sys.executable, "-m", "libwatch", "scan", "--", "-dashlib", "--json"], cwd=tmp_path,
                          env=cli_env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "--json" in done.stderr and "registered" not in done.stderr
    assert _catalog(db) == before


@pytest.mark.parametrize("args", [
    ("new-one", "missing"),  # a folder, then a target that is neither a library nor a folder
    ("new-one", "new-two", "--name", "holiday"),  # --name for two new folders
    ("new-one", "--name", NAME),  # a name already taken
    ("new-one", "--name", "Not A Name"),
    ("new-one", "--settle", "-1"),
    ("new-one", "--max-delete", "2"),
    ("new-one", "--trigger", "sometimes"),
], ids=["missing-target", "name-for-two", "name-taken", "bad-name", "negative-settle", "max-delete", "trigger"])
def test_a_refused_scan_leaves_the_catalog_as_it_was(db: Any, tmp_path: Path, root: Path, register: Any,
                                                     cli_env: dict[str, str], args: tuple[str, ...]) -> None:
    tree(root, {"a.jpg": (10, 10)})
    age(root)
    register()
    for folder in ("new-one", "new-two"):
        tree(tmp_path / folder, {"y.jpg": (12, 12)})
    before = _catalog(db)
    done = subprocess.run([sys.executable, "-m", "libwatch", "scan", NAME, *args, "--json"], cwd=tmp_path,
                          env=cli_env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert _catalog(db) == before
