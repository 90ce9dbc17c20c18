"""A scan killed with SIGKILL in the middle of its writes, then run again, converges."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import NAME, age, present_in_catalog, present_on_disk, sample

FILES = 3000


def _many_small_images(root: Path) -> None:
    png = sample("tiny.png")
    for i in range(FILES):
        folder = root / f"f{i % 30:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"{i:05d}.png").write_bytes(png + i.to_bytes(4, "big"))  # bytes after IEND: still a PNG


def _kill_during_writes(db: Any, process: subprocess.Popen[bytes]) -> int:
    """SIGKILL the scan once its first file records are in; returns how many there were."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        written = db.files.count_documents({"library": NAME})
        if written:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return written
        time.sleep(0.02)
    pytest.fail(f"the scan ended (code {process.poll()}) before it could be killed mid-write")


@pytest.mark.slow
def test_kill_9_mid_scan_then_rescan_converges(db: Any, root: Path, register: Any, cli: Any,
                                              cli_env: dict[str, str]) -> None:
    _many_small_images(root)
    age(root)
    register()
    process = subprocess.Popen([sys.executable, "-m", "libwatch", "scan", NAME, "--json"], env=cli_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    written = _kill_during_writes(db, process)
    [killed] = db.runs.find({"library": NAME})
    assert killed["status"] == "running" and written < FILES * 2

    done = cli("scan", NAME)
    assert done.code == 0, done.stderr
    assert db.runs.find_one({"_id": killed["_id"]})["status"] == "interrupted"
    assert present_in_catalog(db) == present_on_disk(root)
    assert db.files.count_documents({"library": NAME}) == FILES
    assert db.collections.count_documents({"library": NAME}) == 30
    assert {c["file_count"] for c in db.collections.find({"library": NAME})} == {FILES // 30}
    quiet = cli("diff", NAME, "--exit-code")
    assert (quiet.code, quiet.doc["changes"]) == (0, [])
