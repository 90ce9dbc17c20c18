"""The server-drawn charts: bar geometry from the numbers, per day and per run."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from libwatch.web import charts

NOW = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)


def _run(days_ago: float, **counts: int) -> dict[str, object]:
    return {"started_at": NOW - timedelta(days=days_ago), "counts": counts}


def test_changes_per_day_sums_the_scans_of_each_day() -> None:
    runs = [_run(0, added=3, modified=1), _run(0.1, deleted=2), _run(2, touched=5, unchanged=900), _run(30, added=99)]
    chart = charts.changes_per_day(runs, today=NOW)
    assert len(chart.bars) == charts.DAYS
    assert [bar.label for bar in chart.bars[-3:]] == ["2026-11-26: 5 files", "2026-11-27: 0 files",
                                                      "2026-11-28: 6 files"]
    assert chart.top == 6  # the run 30 days ago is outside the window; unchanged files are no change
    tallest = chart.bars[-1]
    assert tallest.y == 1 and tallest.height == charts.HEIGHT - 1
    assert chart.bars[-3].height == round(5 / 6 * (charts.HEIGHT - 1), 2)
    assert chart.bars[-2].height == 0


def test_durations_in_run_order() -> None:
    recent = [{"started_at": NOW - timedelta(hours=2), "duration_s": 2.0},
              {"started_at": NOW - timedelta(hours=1), "duration_s": None},
              {"started_at": NOW, "duration_s": 0.5}]
    chart = charts.durations(recent)
    assert [bar.label for bar in chart.bars] == ["2026-11-28 16:00: 2 s", "2026-11-28 17:00: 0 s",
                                                 "2026-11-28 18:00: 0.5 s"]
    assert [bar.height for bar in chart.bars] == [charts.HEIGHT - 1, 0, round(0.5 / 2 * (charts.HEIGHT - 1), 2)]


@given(st.lists(st.floats(min_value=0, max_value=1e9), max_size=60))
def test_every_bar_stays_inside_the_chart(values: list[float]) -> None:
    chart = charts.bars("t", [(str(i), v) for i, v in enumerate(values)], "s")
    for bar in chart.bars:
        assert 0 <= bar.x and bar.x + bar.width <= charts.WIDTH + 0.01
        assert 0 <= bar.y and bar.y + bar.height <= charts.HEIGHT + 0.01
        assert bar.height >= 0
