"""No silent contention: a command that must wait for the embedded store says so at once."""
from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path


def test_a_command_waiting_for_the_embedded_store_says_for_whom_and_how_long(libwatch, tmp_path: Path) -> None:
    """Before: `libwatch status` waited 30 s without a word while the worker held the store, then exited 75."""
    home = tmp_path / "home"
    home.mkdir()
    lock = home / "db.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({"pid": 4242, "host": "here", "command": "libwatch worker", "since": "now"}).encode())
        started = time.monotonic()
        done = libwatch("status", env={"LIBWATCH_MONGO_URI": "", "LIBWATCH_HOME": str(home),
                                        "LIBWATCH_STORE_WAIT": "2"})
        took = time.monotonic() - started
    finally:
        os.close(fd)
    assert done.code == 75, done.stderr
    first = done.stderr.splitlines()[0]
    assert "waiting up to 2 s for the embedded store" in first and "pid 4242" in first and "libwatch worker" in first
    assert 2 <= took < 15
