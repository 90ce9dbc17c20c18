"""Shell completion of library names and of option values (issue 15: `libwatch status <TAB>`)."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support import tree

SCRIPT = Path(sys.executable).with_name("libwatch")  # the installed command: completion is keyed on its name


def _complete(cli_env: dict[str, str], line: str) -> list[str]:
    words = line.split(" ")
    env = {**cli_env, "_LIBWATCH_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
    done = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done
    return done.stdout.split()


@pytest.mark.parametrize("line", ["libwatch status p", "libwatch history p", "libwatch scan --trigger timer p",
                                  "libwatch diff p", "libwatch rebuild p", "libwatch cleanup p",
                                  "libwatch library show p", "libwatch library set p", "libwatch library remove p",
                                  "libwatch units install p", "libwatch units uninstall p", "libwatch units refresh p"])
def test_library_names_complete(cli_env: dict[str, str], libwatch: Callable[..., Any], tmp_path: Path,
                                line: str) -> None:
    for name in ("photos", "pets", "scans"):
        assert libwatch("library", "add", name, str(tree(tmp_path / name, {"a.jpg": (8, 8)}))).code == 0
    assert _complete(cli_env, line) == ["pets", "photos"]


@pytest.mark.parametrize(("line", "expected"), [
    ("libwatch history --job s", ["scan"]),
    ("libwatch history --status pa", ["partial"]),
    ("libwatch events --type col", ["collection_added", "collection_removed"]),
    ("libwatch scan photos --trigger ", ["manual", "timer", "path", "cron"]),
    ("libwatch rebuild --trigger t", ["timer"]),
    ("libwatch library add photos /srv --compare ", ["ctime,inode", "ctime", "inode", "none"]),
])
def test_option_values_complete(cli_env: dict[str, str], line: str, expected: list[str]) -> None:
    assert _complete(cli_env, line) == expected


def test_a_scan_target_with_a_slash_completes_folders(cli_env: dict[str, str], tmp_path: Path) -> None:
    tree(tmp_path / "albums", {"2024/a.jpg": (8, 8), "2025/b.jpg": (8, 8)})
    (tmp_path / "albums" / "notes.txt").write_text("not a folder")
    assert _complete(cli_env, f"libwatch scan {tmp_path}/albums/20") == [f"{tmp_path}/albums/2024/",
                                                                         f"{tmp_path}/albums/2025/"]
    assert _complete(cli_env, f"libwatch diff {tmp_path}/alb") == [f"{tmp_path}/albums/"]


def test_an_unreadable_catalog_completes_nothing(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "LIBWATCH_MONGO_URI": "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300"}
    assert _complete(env, "libwatch status p") == []
