"""`status`, `history` and `events`: JSON contracts (exact keys), filters, human output."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from libwatch.catalog import runs
from libwatch.cli.reports import sparkline
from libwatch.services import reports

from .catalog_docs import add_library, event_doc, file_doc

RUN_KEYS = {"run_id", "job", "library", "trigger", "status", "host", "pid", "started_at", "finished_at",
            "duration_s", "counts", "error"}
EVENT_KEYS = {"id", "library", "collection", "path", "old_path", "type", "detected_at", "size", "hash", "run_id",
              "processed", "processed_at"}
LIBRARY_KEYS = {"name", "root", "root_available", "state", "paused", "enabled", "counts", "last_scan",
                "last_changes", "rebuilds", "failures", "jobs", "schedule", "recent"}
FAILURE_KEYS = {"library", "path", "kind", "reason", "when"}


def _scan(db: Any, started: datetime, seconds: float, status: str = runs.SUCCEEDED, error: str | None = None,
          **counts: int) -> str:
    run_id = runs.start(db, "scan", "photos", "timer")
    runs.finish(db, run_id, status, counts={"scanned": 10, **counts}, error=error, duration_s=seconds)
    ended = started + timedelta(seconds=seconds)
    db.runs.update_one({"_id": run_id}, {"$set": {"started_at": started, "finished_at": ended}})
    return run_id


@pytest.fixture
def photos(db: Any, tmp_path: Path) -> dict[str, str]:
    """A library with files in every rebuild state, three scans (one failed) and a global cleanup."""
    add_library(db, "photos", tmp_path / "photos")
    db.files.insert_many([
        file_doc("photos", "a/one.jpg", 1, cache="pending", thumbnail="pending"),
        file_doc("photos", "a/two.jpg", 2, cache="queued", thumbnail="failed"),
        file_doc("photos", "a/three.jpg", 3),
        file_doc("photos", "b/gone.jpg", 4, status="missing", missing_since=datetime.now(UTC), cache="pending"),
    ])
    db.collections.insert_many([
        {"library": "photos", "path": "a", "file_count": 3, "total_bytes": 3000, "missing_since": None},
        {"library": "photos", "path": "b", "file_count": 0, "total_bytes": 500, "missing_since": datetime.now(UTC)},
    ])
    now = datetime.now(UTC)
    ids = {"first": _scan(db, now - timedelta(hours=3), 4.0, added=3),
           "failed": _scan(db, now - timedelta(hours=2), 1.0, status=runs.FAILED, error="root vanished"),
           "last": _scan(db, now - timedelta(hours=1), 2.5, modified=1, deleted=1)}
    cleanup = runs.start(db, "cleanup", None, "timer")
    runs.finish(db, cleanup, runs.SUCCEEDED, counts={"orphan_files": 2})
    ids["cleanup"] = cleanup
    return ids


def test_status_json_contract(libwatch, photos: dict[str, str]) -> None:
    done = libwatch("status", "--json")
    assert done.code == 0, done.stderr
    document = json.loads(done.stdout)
    assert set(document) == {"generated_at", "libraries", "status", "problems"}
    [lib] = document["libraries"]
    assert set(lib) == LIBRARY_KEYS
    assert lib["counts"] == {"files": 3, "missing": 1, "collections": 1, "bytes": 3000}
    assert lib["rebuilds"] == {"pending": 2, "queued": 1, "failed": 1}  # the missing file's request is not counted
    assert lib["failures"]["files"] == 1 and set(lib["failures"]["latest"][0]) == FAILURE_KEYS
    assert lib["last_changes"] == {"added": 0, "modified": 1, "touched": 0, "renamed": 0, "deleted": 1, "corrupted": 0}
    assert set(lib["last_scan"]) == RUN_KEYS and lib["last_scan"]["run_id"] == photos["last"]
    assert lib["last_scan"]["duration_s"] == 2.5
    assert set(lib["jobs"]) == {"scan", "cleanup"}
    assert {k: lib["jobs"]["scan"][k] for k in ("runs", "failures")} == {"runs": 3, "failures": 1}
    assert lib["jobs"]["cleanup"]["runs"] == 1 and lib["jobs"]["cleanup"]["last_run"]["run_id"] == photos["cleanup"]
    assert set(lib["schedule"]) == {"on_calendar", "state", "next_run", "last_run", "watch"}
    assert lib["schedule"]["on_calendar"] == "*:0/30" and lib["schedule"]["next_run"] is None
    assert [r["changes"] for r in lib["recent"]] == [3, 0, 2]  # oldest first, for the chart
    assert all(set(r) == {"run_id", "started_at", "status", "changes", "duration_s"} for r in lib["recent"])


def test_status_of_one_library_draws_the_charts(libwatch, photos: dict[str, str]) -> None:
    done = libwatch("status", "photos")
    assert done.code == 0, done.stderr
    assert "█▁▆" in done.stdout  # changes per scan: 3, 0, 2
    assert "█▃▅" in done.stdout  # durations: 4 s, 1 s, 2.5 s
    assert "2 pending, 1 queued, 1 failed" in done.stdout
    assert libwatch("status", "nope").code == 2


def test_next_run_comes_from_the_schedule(db: Any, photos: dict[str, str]) -> None:
    when = datetime(2030, 1, 1, tzinfo=UTC)
    document = reports.status(db, "photos", {"photos": {"state": "scheduled", "next_run": when, "last_run": None,
                                                        "watch": "watching"}})
    assert document.libraries[0]["schedule"]["next_run"] == when
    assert reports.status(db, "photos", {}).libraries[0]["schedule"]["state"] == "not scheduled"


def test_history_json_contract_and_filters(libwatch, photos: dict[str, str]) -> None:
    document = json.loads(libwatch("history", "--json").stdout)
    assert set(document) == {"runs", "status", "problems"}
    assert all(set(run) == RUN_KEYS for run in document["runs"])
    assert [r["run_id"] for r in document["runs"]] == [photos["cleanup"], photos["last"], photos["failed"],
                                                         photos["first"]]
    failed = json.loads(libwatch("history", "photos", "--job", "scan", "--status", "failed", "--json").stdout)
    assert [(r["run_id"], r["error"]) for r in failed["runs"]] == [(photos["failed"], "root vanished")]
    limited = json.loads(libwatch("history", "photos", "-n", "2", "--json").stdout)
    assert [r["run_id"] for r in limited["runs"]] == [photos["last"], photos["failed"]]
    human = libwatch("history", "photos")
    assert "root vanished" in human.stdout and "1 modified, 1 deleted" in human.stdout
    bad = libwatch("history", "--job", "backup")
    assert bad.code == 2 and "unknown job backup" in bad.stderr


def test_events_json_contract_and_filters(libwatch, db: Any, tmp_path: Path) -> None:
    add_library(db, "photos", tmp_path / "photos")
    now = datetime.now(UTC)
    db.events.insert_many([
        event_doc("photos", "2024/trip/a.jpg", 1, detected_at=now - timedelta(days=3)),
        event_doc("photos", "2024/trip/b.jpg", 2, kind="deleted", detected_at=now - timedelta(hours=1)),
        {**event_doc("photos", "2025/c.jpg", 3, kind="renamed", detected_at=now - timedelta(minutes=5)),
         "old_path": "2024/c.jpg"},
    ])
    document = json.loads(libwatch("events", "--json").stdout)
    assert set(document) == {"events", "status", "problems"}
    assert all(set(event) == EVENT_KEYS for event in document["events"])
    assert [e["path"] for e in document["events"]] == ["2025/c.jpg", "2024/trip/b.jpg", "2024/trip/a.jpg"]

    def paths(*args: str) -> list[str]:
        done = libwatch("events", "photos", "--json", *args)
        assert done.code == 0, done.stderr
        return [e["path"] for e in json.loads(done.stdout)["events"]]

    assert paths("--type", "deleted", "--type", "renamed") == ["2025/c.jpg", "2024/trip/b.jpg"]
    assert paths("--since", "2h") == ["2025/c.jpg", "2024/trip/b.jpg"]
    assert paths("--path", "2024/*") == ["2024/trip/b.jpg", "2024/trip/a.jpg"]
    assert paths("--path", "*/?.jpg", "--limit", "1") == ["2025/c.jpg"]
    assert paths("--since", (now - timedelta(days=5)).isoformat()) == ["2025/c.jpg", "2024/trip/b.jpg",
                                                                      "2024/trip/a.jpg"]
    assert "2024/c.jpg → 2025/c.jpg" in libwatch("events").stdout
    bad = libwatch("events", "--since", "yesterday-ish")
    assert bad.code == 2 and "bad time" in bad.stderr


def test_sparkline() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([]) == ""
