"""Progress on stderr, drawn only on a terminal: phase, done/total, rate and time left.

A service takes a callback (`Callable[[int], None]`, default a no-op) and calls it with the
items it finished; the command makes a `Progress` and passes `progress.advance`. A service
with phases (the scan: walking, hashing, writing the catalog, publishing) takes the
`Progress` itself and calls `start_phase` with each phase's total and unit ("byte" draws
sizes: `hashing: 9.1 MiB/120.0 MiB  12.3 MiB/s  9.0 s left`). Piped or
under systemd nothing is drawn, so logs and `--json` stay clean.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Final, TextIO

from libwatch.cli.output import count, duration, is_terminal, size

REDRAW_S: Final = 0.2  # at most five redraws a second: a 30,000-image rebuild costs no visible time
BYTES: Final = "byte"  # a unit shown in KiB, MiB … (`hashing: 1.2 GiB/4.0 GiB  85.3 MiB/s  34.0 s left`)


class Progress:
    """One status line: `rendering: 1,200/30,000 images  35.2/s  13m37s left`.

    ``unit`` None: a phase that counts nothing (e.g. "writing the catalog"), shown with its time so far.
    """

    def __init__(self, phase: str, total: int | None = None, *, unit: str | None = "image",
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.drawing = is_terminal(self.stream)
        self.phase, self.total, self.unit, self.clock = phase, total, unit, clock
        self.done = 0
        self.started = self.drawn_at = clock()

    def advance(self, items: int = 1) -> None:
        """Count finished items; redraw at most every `REDRAW_S`."""
        self.done += items
        if self.drawing and self.clock() - self.drawn_at >= REDRAW_S:
            self.draw()

    def start_phase(self, phase: str, total: int | None = None, *, unit: str | None = "image") -> None:
        """A new phase (e.g. "writing the catalog"): its own total and unit, the count starts again."""
        self.phase, self.total, self.unit, self.done, self.started = phase, total, unit, 0, self.clock()
        if self.drawing:
            self.draw()

    def line(self) -> str:
        """The status line as drawn (no control characters)."""
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        if self.unit is None:
            return f"{self.phase}  {duration(elapsed)}"
        if self.unit == BYTES:
            done = size(self.done) + ("" if self.total is None else f"/{size(self.total)}")
            text = f"{self.phase}: {done}  {size(rate)}/s"
        else:
            done = f"{self.done:,}/{count(self.total, self.unit)}" if self.total is not None \
                else count(self.done, self.unit)
            text = f"{self.phase}: {done}  {rate:,.1f}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f"  {duration((self.total - self.done) / rate)} left"
        return text

    def draw(self) -> None:
        self.drawn_at = self.clock()
        self.stream.write("\r" + self.line() + "\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        """Clear the line (the result is printed after it)."""
        if self.drawing:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
