"""Small bar charts drawn on the server: the numbers in, the bars' geometry out (the template draws SVG)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from libwatch.services import reports

WIDTH: Final = 480
HEIGHT: Final = 120
GAP: Final = 2
DAYS: Final = 14
MIN_SLOTS: Final = 14  # a chart of two runs keeps bars as narrow as one of 14 days


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar in SVG user units; `label` is its tooltip."""

    x: float
    y: float
    width: float
    height: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    """A titled bar chart of `WIDTH` x `HEIGHT` units; `top` is the value of a full-height bar."""

    title: str
    bars: tuple[Bar, ...]
    top: float
    unit: str
    width: int = WIDTH
    height: int = HEIGHT


def bars(title: str, points: Sequence[tuple[str, float]], unit: str) -> Chart:
    """Bars of `(label, value)` points scaled from 0 to the largest value (an empty chart when all are 0)."""
    top = max((value for _, value in points), default=0.0)
    step = WIDTH / max(MIN_SLOTS, len(points))
    drawn = []
    for index, (label, value) in enumerate(points):
        height = 0.0 if top <= 0 else max(1.0, value / top * (HEIGHT - 1)) if value > 0 else 0.0
        drawn.append(Bar(round(index * step + GAP / 2, 2), round(HEIGHT - height, 2), round(max(1.0, step - GAP), 2),
                         round(height, 2), f"{label}: {value:.3g} {unit}"))
    return Chart(title, tuple(drawn), top, unit)


def changes_per_day(runs: Iterable[Mapping[str, Any]], *, today: datetime | None = None, days: int = DAYS) -> Chart:
    """Files changed per day (UTC) over the last `days` days, summed over the scans (`history` runs) of each day."""
    end = (today or datetime.now(UTC)).astimezone(UTC).date()
    per_day: Counter[str] = Counter()
    for run in runs:
        if run.get("started_at") is not None:
            per_day[run["started_at"].astimezone(UTC).date().isoformat()] += reports.changes(run.get("counts"))
    labels = [(end - timedelta(days=back)).isoformat() for back in range(days - 1, -1, -1)]
    return bars("changes per day", [(day, float(per_day[day])) for day in labels], "files")


def durations(recent: Sequence[Mapping[str, Any]]) -> Chart:
    """Scan duration per run, oldest first (`status`'s `recent` list)."""
    points = [(run["started_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M") if run.get("started_at") else "?",
               float(run.get("duration_s") or 0.0)) for run in recent]
    return bars("scan duration per run", points, "s")
