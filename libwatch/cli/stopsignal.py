"""SIGTERM for `libwatch worker` from its first instant.

systemd stops the worker with SIGTERM, possibly right after starting it (a
restart, a deploy). Python's default action ends a process with 143 on SIGTERM;
the command's own handler comes only after the imports, the argument parsing
and the catalog's start (0.2 s and more). The cli package imports this module
before anything heavy and, when the command is ``worker``, installs a handler
that only remembers the signal; the worker command then takes over and stops
at once if a SIGTERM came early. Other commands keep Python's default action.
"""
from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Final

# The global options that take a value (see libwatch.cli.app), to find the command word.
_VALUED: Final = frozenset({"--mongo-uri", "--database", "--amqp-url", "--cache-dir", "--home"})
_EARLY_COMMANDS: Final = frozenset({"worker"})

received = threading.Event()


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand word of a libwatch command line (``argv`` without the program), or None."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _VALUED:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _is_libwatch(program: str) -> bool:
    path = Path(program)
    return path.name == "libwatch" or (path.name == "__main__.py" and path.parent.name == "libwatch")


def _remember(_signum: int, _frame: FrameType | None) -> None:
    received.set()


def install_early(argv: Sequence[str] = sys.argv) -> None:
    """Remember SIGTERM instead of dying of it, when this process is ``libwatch worker``."""
    if argv and _is_libwatch(argv[0]) and command_of(argv[1:]) in _EARLY_COMMANDS:
        signal.signal(signal.SIGTERM, _remember)
