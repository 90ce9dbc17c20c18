"""Logging to stderr; under systemd each line carries its syslog priority for journald."""
from __future__ import annotations

import logging
import os
import sys
from typing import Final

_PRIORITY: Final = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    """Prefix each line with `<N>` so journald keeps the level (sd-daemon(3))."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def under_journald() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM"))


def setup(verbosity: int) -> None:
    """-q → errors only, default → warnings, -v → info, -vv → debug."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(max(-1, min(verbosity, 2)), logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    if under_journald():
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("libwatch: %(levelname)s: %(message)s"))
    root = logging.getLogger("libwatch")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    for noisy in ("pika", "secantus", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level <= logging.DEBUG else logging.CRITICAL)
