"""The progress line: drawn on a terminal only, with done/total, rate and time left."""
from __future__ import annotations

import io
import os
import pty
import re
import select
from collections.abc import Callable
from pathlib import Path
from typing import Any

from libwatch.cli.progress import Progress

from support import tree


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _read_all(fd: int) -> str:
    """Everything written to the terminal so far: a pty hands each write over on its own."""
    drawn = b""
    while select.select([fd], [], [], 0.5)[0]:
        drawn += os.read(fd, 4096)
    return drawn.decode()


def test_progress_on_a_real_terminal_shows_done_total_rate_and_time_left() -> None:
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as terminal:
            clock = Clock()
            progress = Progress("rendering", 30_000, stream=terminal, clock=clock)
            clock.now += 10
            progress.advance(1_200)
            progress.close()
        drawn = _read_all(leader)
    finally:
        os.close(leader)
        os.close(follower)
    assert "rendering: 1,200/30,000 images  120.0/s  4m00s left" in drawn
    assert drawn.endswith("\r\x1b[K")


def test_nothing_is_drawn_when_piped() -> None:
    piped = io.StringIO()
    progress = Progress("hashing", 10, unit="file", stream=piped)
    progress.advance(10)
    progress.start_phase("writing the catalog")
    progress.close()
    assert piped.getvalue() == ""


def test_a_phase_without_a_total_counts_and_redraws_are_throttled() -> None:
    clock = Clock()
    progress = Progress("walking", unit="file", clock=clock)
    clock.now += 2
    progress.advance(1)
    assert progress.line() == "walking: 1 file  0.5/s"
    progress.drawing, progress.stream = True, io.StringIO()
    progress.advance(1)  # drawn: 2 s since the last draw
    progress.advance(1)  # not drawn: no time passed
    assert progress.stream.getvalue().count("\r") == 1


def test_bytes_are_shown_in_units_and_a_phase_without_a_count_shows_its_time() -> None:
    from libwatch.cli.progress import BYTES

    clock = Clock()
    progress = Progress("hashing", 4 * 1024**3, unit=BYTES, clock=clock)
    clock.now += 10
    progress.advance(1024**3)
    assert progress.line() == "hashing: 1.0 GiB/4.0 GiB  102.4 MiB/s  30.0 s left"
    progress.start_phase("writing the catalog", unit=None)
    clock.now += 2.5
    assert progress.line() == "writing the catalog  2.5 s"


def test_a_scan_in_a_real_terminal_shows_its_phases(cli_env: dict[str, str], tmp_path: Path,
                                                    libwatch: Callable[..., Any]) -> None:
    import subprocess
    import sys

    root = tree(tmp_path / "photos", {f"2024/{i:02d}.jpg": (64 + i, 48) for i in range(20)})
    assert libwatch("library", "add", "photos", str(root)).code == 0
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "libwatch", "scan", "photos"], env={**cli_env, "TERM": "xterm"},
                               stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    drawn = ""
    try:
        while True:
            try:
                chunk = os.read(leader, 4096).decode(errors="replace")
            except OSError:  # the terminal's other side closed: the scan ended
                break
            if not chunk:
                break
            drawn += chunk
        code = process.wait(timeout=60)
    finally:
        process.kill()
        os.close(leader)
    assert code == 0, drawn
    assert re.search(r"hashing: [0-9.]+ (B|KiB)/[0-9.]+ KiB  [0-9.]+ (B|KiB|MiB)/s", drawn), drawn  # bytes in units
    assert "writing the catalog" in drawn and "Traceback" not in drawn
    assert re.search(r"added +20", drawn), drawn  # the result follows, once the line is cleared
