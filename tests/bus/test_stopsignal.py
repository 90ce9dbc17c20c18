"""`libwatch worker` catches SIGTERM from its first code on, before Typer, rich and the catalog (issue 18)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from libwatch.cli.stopsignal import command_of

PROBE = """
import signal, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
import libwatch.cli
from libwatch.cli import stopsignal
handler = signal.getsignal(signal.SIGTERM)
print(handler is stopsignal._remember, "typer" in sys.modules, "pymongo" in sys.modules)
"""


@pytest.mark.parametrize(("argv", "command"), [
    (["worker"], "worker"),
    (["--json", "-v", "worker", "--prefetch", "5"], "worker"),
    (["--home", "/srv/state", "--amqp-url", "amqp://x/", "worker"], "worker"),
    (["library", "add", "worker", "/srv/worker"], "library"),
    (["scan", "worker"], "scan"),
    (["--home", "worker", "scan"], "scan"),
    (["--version"], None),
])
def test_the_command_word_is_found_past_the_global_options(argv: list[str], command: str | None) -> None:
    assert command_of(argv) == command


@pytest.mark.parametrize(("program", "args", "caught"), [
    ("/usr/bin/libwatch", ["worker"], True),
    ("/opt/venv/lib/python3.11/site-packages/libwatch/__main__.py", ["--json", "worker"], True),
    ("/usr/bin/libwatch", ["scan", "worker"], False),
    ("/usr/bin/pytest", ["worker"], False),
])
def test_the_early_handler_is_installed_before_the_heavy_imports_for_the_worker_only(
        program: str, args: list[str], caught: bool) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, program, *args], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(caught), "False", "False"]
