"""The page's controls over real HTTP: each one does what the matching CLI command does."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .conftest import until
from support import write_image


def _library(server: Any) -> dict[str, Any]:
    return server.get("/api/v1/libraries/photos").json()["libraries"][0]


def test_run_now_starts_a_scan_that_lands_in_history(web: Any, photos: Path) -> None:
    write_image(photos / "2025/new.jpg", (30, 30))
    server = web()
    started = server.post("/api/v1/libraries/photos/run")
    assert started.status == 202
    assert started.json()["via"] == "process" and started.json()["pid"] > 0

    def second_scan() -> Any:
        runs = server.get("/api/v1/libraries/photos/history?job=scan").json()["runs"]
        return runs[0] if len(runs) == 2 and runs[0]["status"] == "succeeded" else None

    run = until(second_scan)
    assert run["trigger"] == "manual" and run["counts"]["added"] == 1
    assert _library(server)["counts"]["files"] == 6

    from_page = server.post("/libraries/photos/run", {"to": "library"})
    assert from_page.status == 303 and from_page.headers["location"] == "/libraries/photos?notice=scan"
    until(lambda: len(server.get("/api/v1/libraries/photos/history?job=scan").json()["runs"]) == 3)


def test_pause_resume_enable_disable(web: Any, photos: Path, libwatch: Any) -> None:
    server = web()
    for action, field, value in (("pause", "paused", True), ("resume", "paused", False),
                                 ("disable", "enabled", False), ("enable", "enabled", True)):
        changed = server.post(f"/api/v1/libraries/photos/{action}")
        assert changed.status == 200, changed.text
        assert changed.json()["schedule"][field] is value
        assert _library(server)[field] is value
    assert server.post("/libraries/photos/pause").headers["location"] == "/?notice=pause"
    assert _library(server)["paused"] is True
    assert libwatch("scan", "photos").code == 0  # a paused library's scan is recorded as skipped
    assert [run["status"] for run in server.get("/api/v1/libraries/photos/history?job=scan").json()["runs"]] \
        == ["skipped", "succeeded"]
    assert server.post("/api/v1/libraries/photos/explode").status == 422
    assert server.post("/libraries/photos/explode").status == 404


def test_schedule_is_validated_as_library_set_validates_it(web: Any, photos: Path, libwatch: Any) -> None:
    server = web()
    refused = server.post("/api/v1/libraries/photos/schedule?on_calendar=every%20blue%20moon")
    assert refused.status == 400
    cli = libwatch("library", "set", "photos", "--schedule", "every blue moon")
    assert cli.code == 2 and refused.json()["error"]["message"] in cli.stderr
    page = server.post("/libraries/photos/schedule", {"on_calendar": "every blue moon", "to": "library"})
    assert page.status == 400 and "every blue moon" in page.text and "<html" in page.text
    assert _library(server)["schedule"]["on_calendar"] == "*:0/30"

    changed = server.post("/libraries/photos/schedule", {"on_calendar": " Mon..Fri 02:00 ", "to": "library"})
    assert changed.status == 303
    assert _library(server)["schedule"]["on_calendar"] == "Mon..Fri 02:00"


def test_rebuild_missing_runs_a_rebuild(web: Any, photos: Path) -> None:
    server = web()
    started = server.post("/api/v1/libraries/photos/rebuild/missing")
    assert started.status == 202 and started.json()["action"] == "rebuild missing"

    def finished() -> Any:
        runs = server.get("/api/v1/libraries/photos/history?job=rebuild").json()["runs"]
        return runs and runs[0]["status"] == "succeeded" and runs[0]

    run = until(finished, timeout=120)
    assert run["trigger"] == "manual" and run["counts"]["done"] == 10
    assert _library(server)["rebuilds"] == {"pending": 0, "queued": 0, "failed": 0}


def test_the_page_offers_the_rebuilds_libwatch_rebuild_has(web: Any, photos: Path) -> None:
    from libwatch.services.rebuild import SELECTIONS

    page = web().get("/libraries/photos").text
    assert 'data-action="rebuild/missing"' in page
    assert ('data-action="rebuild/failed"' in page) is ("failed" in SELECTIONS)


def test_rebuild_failed_retries_what_libwatch_failed_lists(web: Any, photos: Path, libwatch: Any, db: Any) -> None:
    (photos / "2025/notes.jpg").write_text("a text file named like a photo\n")
    assert libwatch("scan", "photos").code == 0
    db.files.update_one({"library": "photos", "path": "e.jpg"},
                        {"$set": {"rebuild.cache": "failed", "rebuild.cache_error": "No space left on device"}})
    server = web()
    before = server.get("/api/v1/libraries/photos/failed").json()
    assert {(f["path"], f["kind"]) for f in before["failures"]} == {
        ("2025/notes.jpg", "probe"), ("2025/notes.jpg", "cache"), ("2025/notes.jpg", "thumbnail"), ("e.jpg", "cache")}
    page = server.get("/libraries/photos").text
    assert 'action="/libraries/photos/rebuild/failed" data-confirm="Render the failed images of photos again?"' in page

    started = server.post("/libraries/photos/rebuild/failed", {"to": "library"})
    assert started.status == 303 and started.headers["location"] == "/libraries/photos?notice=rebuild-failed"

    def finished() -> Any:
        runs = server.get("/api/v1/libraries/photos/history?job=rebuild").json()["runs"]
        return runs and runs[0]["status"] == "succeeded" and runs[0]

    run = until(finished, timeout=120)
    assert run["trigger"] == "manual" and run["counts"]["done"] == 1 and run["counts"]["headers_unreadable"] == 1
    after = server.get("/api/v1/libraries/photos/failed").json()
    assert {(f["path"], f["kind"]) for f in after["failures"]} == {
        ("2025/notes.jpg", "probe"), ("2025/notes.jpg", "cache"), ("2025/notes.jpg", "thumbnail")}
    assert after == json.loads(libwatch("failed", "photos", "--json").stdout)
    assert server.post("/api/v1/libraries/photos/rebuild/pending").status == 422  # only failed and missing here
