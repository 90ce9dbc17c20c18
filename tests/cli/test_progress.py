"""The progress line: drawn on a terminal only, with done/total, rate and time left."""
from __future__ import annotations

import io
import os
import pty

from libwatch.cli.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_on_a_real_terminal_shows_done_total_rate_and_time_left() -> None:
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as terminal:
            clock = Clock()
            progress = Progress("rendering", 30_000, stream=terminal, clock=clock)
            clock.now += 10
            progress.advance(1_200)
            progress.close()
        drawn = os.read(leader, 4096).decode()
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
