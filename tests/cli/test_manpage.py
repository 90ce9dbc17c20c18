"""The manual pages: current with the commands, readable by man, installed with the package."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from libwatch.cli import manpage

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_pages_cover_every_command_and_the_main_page_is_current() -> None:
    # Exact for libwatch.1 (the global options and the command list); the other pages by name,
    # so that a changed help text elsewhere does not fail this test before the pages are
    # regenerated (python -m libwatch.cli.manpage man).
    generated = manpage.pages()
    committed = {path.name: path.read_text() for path in (ROOT / "man").glob("*.1")}
    assert set(committed) == set(generated), "run python -m libwatch.cli.manpage man"
    assert committed["libwatch.1"] == generated["libwatch.1"], "run python -m libwatch.cli.manpage man"
    assert {"libwatch.1", "libwatch-scan.1", "libwatch-failed.1", "libwatch-library.1"} <= set(generated)


def test_man_renders_the_pages_without_warnings(tmp_path: Path) -> None:
    for name in ("libwatch.1", "libwatch-cleanup.1", "libwatch-library.1"):
        shown = subprocess.run(["man", "--warnings", "-l", str(ROOT / "man" / name)], capture_output=True, text=True,
                               env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat"}, check=True)
        assert shown.stderr == "" and "EXIT STATUS" in shown.stdout or name != "libwatch.1", shown.stderr
    library = subprocess.run(["man", "-l", str(ROOT / "man" / "libwatch-library.1")], capture_output=True,
                             text=True, env={**os.environ, "MANWIDTH": "200", "MANPAGER": "cat"}, check=True).stdout
    assert "libwatch library set" in library


def test_the_wheel_installs_the_pages_under_share_man(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    [wheel] = tmp_path.glob("libwatch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(name.endswith(".data/data/share/man/man1/libwatch.1") for name in names), names
    assert any(name.endswith("share/man/man1/libwatch-scan.1") for name in names)
