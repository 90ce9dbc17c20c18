"""The rebuild service: selections, scopes, the queued timeout."""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from libwatch.bus import Topology
from libwatch.config import Settings
from libwatch.services.rebuild import RebuildOptions, rebuild

from .conftest import Photos, drain


def test_pending_republishes_queued_requests_older_than_the_timeout(photos: Photos, broker_settings: Settings,
                                                                    topology: Topology, amqp_url: str) -> None:
    photos.add("lost.jpg", states={"cache": "queued", "thumbnail": "done"})
    photos.add("recent.jpg", color=(5, 5, 5), states={"cache": "queued", "thumbnail": "done"})
    photos.db.files.update_one({"path": "lost.jpg"},
                               {"$set": {"rebuild.cache_at": datetime.now(UTC) - timedelta(hours=2)}})
    report = rebuild(photos.db, broker_settings, "photos", RebuildOptions(selection="pending"), topology=topology)
    assert report.document["counts"] == {"selected": 1, "published": 1, "pending": 0, "requeued_stale": 1}
    (message,) = drain(amqp_url, topology.queues["cache"])
    assert photos.ids["lost.jpg"].encode() in message[1]
    run = photos.db.runs.find_one({"_id": report.document["run_id"]})
    assert run["job"] == "rebuild" and run["status"] == "succeeded"


def test_scope_by_path_and_collection(photos: Photos, settings: Settings) -> None:
    photos.add("2024/trip/a.jpg")
    photos.add("2024/trip/deeper/b.jpg", color=(1, 1, 1))
    photos.add("2024/c.jpg", color=(2, 2, 2))
    photos.add("2024-old/d.jpg", color=(3, 3, 3))

    by_path = rebuild(photos.db, settings, "photos", RebuildOptions(selection="all", path="2024/trip"), processes=1)
    assert by_path.document["counts"]["done"] == 4
    assert {p for p, s in photos.states().items() if s == ("done", "done")} == {"2024/trip/a.jpg",
                                                                               "2024/trip/deeper/b.jpg"}
    absolute = str(photos.root / "2024-old")
    rebuild(photos.db, settings, "photos", RebuildOptions(selection="all", path=absolute), processes=1)
    assert photos.states()["2024-old/d.jpg"] == ("done", "done")
    rebuild(photos.db, settings, "photos", RebuildOptions(selection="missing", collection="2024",
                                                          kinds=("thumbnail",)), processes=1)
    assert photos.states()["2024/c.jpg"] == ("pending", "done")


def test_cli_usage_errors_exit_2(photos: Photos, libwatch: Callable[..., Any]) -> None:
    nothing = libwatch("rebuild", "photos", "--no-cache", "--no-thumbnails")
    assert nothing.code == 2 and "nothing to rebuild" in nothing.stderr
    both = libwatch("rebuild", "photos", "--all", "--missing")
    assert both.code == 2
    outside = libwatch("rebuild", "photos", "--path", "/etc", "--run")
    assert outside.code == 2 and "not inside the library" in outside.stderr


def test_a_cache_folder_others_may_write_stops_rebuild_run_with_one_line_and_exit_65(
        photos: Photos, settings: Settings, libwatch: Callable[..., Any]) -> None:
    photos.add("a.jpg")
    settings.cache_dir.mkdir()
    settings.cache_dir.chmod(0o777)
    done = libwatch("rebuild", "photos", "--run")
    assert done.code == 65
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert f"the cache folder {settings.cache_dir} is writable by its group and others" in done.stderr
    assert list(settings.cache_dir.iterdir()) == []
    assert photos.states()["a.jpg"] == ("pending", "pending")


def test_cache_mode_is_a_setting_read_as_octal(photos: Photos, settings: Settings,
                                               libwatch: Callable[..., Any]) -> None:
    photos.add("a.jpg")
    done = libwatch("rebuild", "photos", "--run", env={"LIBWATCH_CACHE_MODE": "0600"})
    assert done.code == 0, done.stderr
    files = [p for p in settings.cache_dir.rglob("*")]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} <= {"0o600", "0o700"}
    refused = libwatch("rebuild", "photos", "--run", env={"LIBWATCH_CACHE_MODE": "0666"})
    assert refused.code == 2 and "cache_mode must give the owner read and write and nobody else write" in refused.stderr
