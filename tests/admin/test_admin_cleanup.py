"""`libwatch cleanup` against the real SecantusDB, through the real CLI where it matters."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from libwatch.catalog import runs
from libwatch.services import cleanup

from .catalog_docs import add_library, cache_file, content_hash, event_doc, file_doc

DAY = timedelta(days=1)


def _cache_set(db: Any, cache_dir: Path, tmp_path: Path) -> dict[str, list[Path]]:
    """Seed 1 present; seed 2 present in one record and missing in another; seed 3 only missing; seed 4 no record."""
    add_library(db, "photos", tmp_path / "photos")
    long_ago = datetime.now(UTC) - 3 * DAY
    db.files.insert_many([
        file_doc("photos", "a/one.jpg", 1),
        file_doc("photos", "a/two.jpg", 2),
        file_doc("photos", "b/two-copy.jpg", 2, status="missing", missing_since=long_ago),
        file_doc("photos", "b/three.jpg", 3, status="missing", missing_since=long_ago),
    ])
    return {"kept": [cache_file(cache_dir, kind, seed) for seed in (1, 2) for kind in ("cache", "thumbnail")],
            "orphans": [cache_file(cache_dir, kind, seed) for seed in (3, 4) for kind in ("cache", "thumbnail")]}


def test_orphans_removed_and_referenced_kept(libwatch, db: Any, cache_dir: Path, tmp_path: Path) -> None:
    files = _cache_set(db, cache_dir, tmp_path)
    done = libwatch("cleanup", "--json")
    assert done.code == 0, done.stderr
    result = json.loads(done.stdout)
    only_seed_4 = files["orphans"][2:]
    assert result["counts"]["orphan_files"] == 2
    assert result["counts"]["orphan_bytes"] == sum(len(b"rendered " + str(s).encode() * 10) for s in (4, 4))
    assert sorted(o["path"] for o in result["orphans"]) == sorted(str(p) for p in only_seed_4)
    # seed 2 is kept although one of its records is missing; seed 3's record is kept for its
    # retention (30 days), so its cache files stay too: a restored file finds them
    assert all(p.exists() for p in files["kept"] + files["orphans"][:2])
    assert not any(p.exists() for p in only_seed_4)
    run = runs.get(db, result["run_id"])
    assert run["job"] == "cleanup" and run["status"] == "succeeded" and run["counts"]["orphan_files"] == 2


def test_a_record_past_its_retention_takes_its_cache_files_along(libwatch, db: Any, cache_dir: Path,
                                                                 tmp_path: Path) -> None:
    files = _cache_set(db, cache_dir, tmp_path)
    result = json.loads(libwatch("cleanup", "--older-than", "1d", "--json").stdout)
    assert result["counts"]["missing_files"] == 2 and result["counts"]["orphan_files"] == 4
    assert all(p.exists() for p in files["kept"]) and not any(p.exists() for p in files["orphans"])


def test_a_cache_folder_of_another_catalog_is_refused(libwatch, db: Any, cache_dir: Path, tmp_path: Path,
                                                      mongo_client: Any) -> None:
    files = _cache_set(db, cache_dir, tmp_path)
    first = libwatch("cleanup", "--dry-run")
    assert first.code == 0 and not (cache_dir / cleanup.MARKER).exists()  # a dry run claims nothing
    assert libwatch("cleanup").code == 0
    marker = json.loads((cache_dir / cleanup.MARKER).read_text())
    assert set(marker) == {"catalog_id", "catalog", "claimed_at"}
    assert marker["catalog_id"] == db.meta.find_one({"_id": "catalog"})["catalog_id"]
    other = f"{db.name}_other"
    try:
        for args in (["cleanup"], ["cleanup", "--dry-run"], ["cleanup", "--json"]):
            refused = libwatch(*args, env={"LIBWATCH_DATABASE": other})
            assert refused.code == 2, refused
            assert refused.stderr.count("\n") == 1 and "belongs to another catalog" in refused.stderr
        assert all(p.exists() for p in files["kept"] + files["orphans"][:2])
        assert json.loads(refused.stdout)["error"]["kind"] == "ForeignCache"
        (cache_dir / cleanup.MARKER).write_text("not json")
        assert libwatch("cleanup").code == 2
    finally:
        mongo_client.drop_database(other)


def test_dry_run_reports_the_same_and_changes_nothing(libwatch, db: Any, cache_dir: Path, tmp_path: Path) -> None:
    files = _cache_set(db, cache_dir, tmp_path)
    db.files.update_many({"status": "missing"}, {"$set": {"missing_since": datetime.now(UTC) - 60 * DAY}})
    before = sorted((d["path"], d["status"]) for d in db.files.find())
    dry = json.loads(libwatch("cleanup", "--dry-run", "--json").stdout)
    assert dry["dry_run"] is True and dry["run_id"] is None
    assert dry["counts"]["orphan_files"] == 4 and dry["counts"]["missing_files"] == 2
    assert {m["path"] for m in dry["missing_files"]} == {"b/two-copy.jpg", "b/three.jpg"}
    assert all(p.exists() for p in files["kept"] + files["orphans"])
    assert sorted((d["path"], d["status"]) for d in db.files.find()) == before
    assert db.runs.count_documents({"job": "cleanup"}) == 0

    real = json.loads(libwatch("cleanup", "--json").stdout)
    assert {k: real["counts"][k] for k in ("orphan_files", "missing_files")} == {"orphan_files": 4, "missing_files": 2}
    assert sorted(o["path"] for o in real["orphans"]) == sorted(o["path"] for o in dry["orphans"])


def test_retention_boundaries(db: Any, settings: Any, tmp_path: Path) -> None:
    add_library(db, "photos", tmp_path / "photos")
    add_library(db, "scans", tmp_path / "scans", retention_days=5)
    now = datetime.now(UTC)
    db.files.insert_many([
        file_doc("photos", "old.jpg", 1, status="missing", missing_since=now - 30 * DAY - timedelta(seconds=1)),
        file_doc("photos", "edge.jpg", 2, status="missing", missing_since=now - 30 * DAY),
        file_doc("photos", "young.jpg", 3, status="missing", missing_since=now - 29 * DAY),
        file_doc("photos", "present.jpg", 4, missing_since=None),
        file_doc("scans", "six.jpg", 5, status="missing", missing_since=now - 6 * DAY),
        file_doc("scans", "four.jpg", 6, status="missing", missing_since=now - 4 * DAY),
    ])
    db.collections.insert_many([
        {"library": "photos", "path": "gone", "file_count": 0, "total_bytes": 0, "missing_since": now - 31 * DAY},
        {"library": "photos", "path": "recent", "file_count": 0, "total_bytes": 0, "missing_since": now - DAY},
    ])
    db.events.insert_many([event_doc("photos", "old.jpg", 1), event_doc("photos", "young.jpg", 3)])

    plan = cleanup.plan(db, settings, now=now)
    assert {lib.library: list(lib.files) for lib in plan.libraries} == \
        {"photos": ["old.jpg"], "scans": ["six.jpg"]}
    assert [p for lib in plan.libraries for p in lib.collections] == ["gone"]

    shorter = cleanup.plan(db, settings, "photos", older_than=cleanup.parse_age("29d"), now=now)
    assert shorter.libraries[0].files == ("edge.jpg", "old.jpg")

    # zero means zero (it used to fall back to the retention): every missing record, at once
    zero = cleanup.plan(db, settings, "photos", older_than=cleanup.parse_age("0s"), now=now)
    assert zero.libraries[0].files == ("edge.jpg", "old.jpg", "young.jpg")
    add_library(db, "none-kept", tmp_path / "none-kept", retention_days=0)
    db.files.insert_one(file_doc("none-kept", "gone.jpg", 7, status="missing",
                                 missing_since=now - timedelta(seconds=1)))
    assert cleanup.plan(db, settings, "none-kept", now=now).libraries[0].files == ("gone.jpg",)
    db.files.delete_one({"library": "none-kept"})

    counts = cleanup.apply(db, plan)
    assert counts["missing_files"] == 2 and counts["missing_collections"] == 1
    assert sorted(d["path"] for d in db.files.find()) == ["edge.jpg", "four.jpg", "present.jpg", "young.jpg"]
    # the events of missing records count as dealt with
    assert db.events.count_documents({"processed": True, "processed_at": {"$ne": None}}) == 2


def test_old_processed_events_and_finished_runs_go(db: Any, settings: Any, tmp_path: Path) -> None:
    add_library(db, "photos", tmp_path / "photos")
    now = datetime.now(UTC)
    db.events.insert_many([
        event_doc("photos", "a.jpg", 1, kind="touched", detected_at=now - 100 * DAY, processed_at=now - 95 * DAY),
        event_doc("photos", "b.jpg", 2, kind="touched", processed_at=now - DAY),
    ])
    old = runs.start(db, "scan", "photos", "timer")
    runs.finish(db, old, runs.SUCCEEDED)
    db.runs.update_one({"_id": old}, {"$set": {"finished_at": now - 91 * DAY}})
    recent = runs.start(db, "scan", "photos", "timer")
    runs.finish(db, recent, runs.FAILED, error="boom")

    result = cleanup.cleanup(db, settings)
    assert result.counts["old_events"] == 1 and result.counts["old_runs"] == 1
    assert [e["path"] for e in db.events.find()] == ["b.jpg"]
    assert {r["_id"] for r in db.runs.find({"job": "scan"})} == {recent}


def test_events_are_processed_once_their_rebuilds_are_done(db: Any, settings: Any, tmp_path: Path) -> None:
    add_library(db, "photos", tmp_path / "photos")
    db.files.insert_many([
        file_doc("photos", "built.jpg", 1),
        file_doc("photos", "waiting.jpg", 2, thumbnail="pending"),
        file_doc("photos", "touched.jpg", 3, cache="pending"),
        file_doc("photos", "newer.jpg", 9, cache="pending"),
        file_doc("photos", "cache-only.jpg", 5, thumbnail=None),
    ])
    db.events.insert_many([event_doc("photos", "built.jpg", 1, kind="added"),
                           event_doc("photos", "waiting.jpg", 2, kind="modified"),
                           event_doc("photos", "touched.jpg", 3, kind="touched"),
                           event_doc("photos", "newer.jpg", 4, kind="modified"),  # superseded by a newer version
                           event_doc("photos", "cache-only.jpg", 5, kind="added")])
    result = cleanup.cleanup(db, settings, "photos")
    assert result.counts["events_processed"] == 4
    assert [e["path"] for e in db.events.find({"processed": False})] == ["waiting.jpg"]


_HOLDER = textwrap.dedent("""
    import sys, time, pymongo
    from libwatch.catalog import locks, runs
    db = pymongo.MongoClient(sys.argv[1], tz_aware=True)[sys.argv[2]]
    run_id = runs.start(db, "scan", "photos", "timer")
    locks.Lease(db, "scan:photos", run_id, 60).acquire()
    print(run_id, flush=True)
    time.sleep(300)
""")


def test_a_killed_scan_becomes_interrupted_and_its_lock_is_released(
        libwatch, db: Any, settings: Any, tmp_path: Path) -> None:
    add_library(db, "photos", tmp_path / "photos")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, settings.mongo_uri, settings.database],
                              stdout=subprocess.PIPE, text=True)
    try:
        run_id = holder.stdout.readline().strip()
        assert run_id and runs.get(db, run_id)["status"] == "running"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert db.locks.find_one({"_id": "scan:photos"})["expires_at"] > datetime.now(UTC)  # lease still valid
    live = runs.start(db, "worker", None, "manual")  # this process is alive: its run stays running

    done = libwatch("cleanup", "--json")
    assert done.code == 0, done.stderr
    result = json.loads(done.stdout)
    assert [s["run_id"] for s in result["stale_runs"]] == [run_id]
    assert "is gone" in result["stale_runs"][0]["reason"]
    assert result["counts"]["locks_released"] == 1
    assert runs.get(db, run_id)["status"] == "interrupted"
    assert db.locks.count_documents({}) == 0
    assert runs.get(db, live)["status"] == "running"


def test_an_expired_lease_on_another_host_is_recovered(db: Any, settings: Any, tmp_path: Path) -> None:
    add_library(db, "photos", tmp_path / "photos")
    now = datetime.now(UTC)
    dead = runs.start(db, "scan", "photos", "timer")
    db.runs.update_one({"_id": dead}, {"$set": {"host": "elsewhere", "pid": 4242}})
    db.locks.insert_one({"_id": "scan:photos", "owner": dead, "host": "elsewhere", "pid": 4242,
                         "expires_at": now - timedelta(minutes=5)})
    db.locks.insert_one({"_id": "scan:old", "owner": "finished-long-ago", "host": "elsewhere", "pid": 1,
                         "expires_at": now - DAY})
    busy = runs.start(db, "scan", "photos", "path")
    db.runs.update_one({"_id": busy}, {"$set": {"host": "elsewhere", "pid": 4343}})
    db.locks.insert_one({"_id": "scan:busy", "owner": busy, "host": "elsewhere", "pid": 4343,
                         "expires_at": now + timedelta(minutes=1)})

    result = cleanup.cleanup(db, settings)
    assert [s.run_id for s in result.plan.stale_runs] == [dead]
    assert result.counts["stale_runs"] == 1 and result.counts["locks_released"] == 2
    assert runs.get(db, dead)["status"] == "interrupted" and "expired" in runs.get(db, dead)["error"]
    assert runs.get(db, busy)["status"] == "running"
    assert [lock["_id"] for lock in db.locks.find()] == ["scan:busy"]


def test_stuck_queued_requests_go_back_to_pending(db: Any, settings: Any, tmp_path: Path) -> None:
    add_library(db, "photos", tmp_path / "photos")
    now = datetime.now(UTC)
    db.files.insert_many([
        file_doc("photos", "stuck.jpg", 1, cache="queued", thumbnail="done", queued_at=now - timedelta(hours=2)),
        file_doc("photos", "fresh.jpg", 2, cache="queued", thumbnail="queued", queued_at=now - timedelta(minutes=10)),
        file_doc("photos", "both.jpg", 3, cache="queued", thumbnail="queued", queued_at=now - timedelta(hours=5)),
    ])
    dry = cleanup.cleanup(db, settings, dry_run=True)
    assert dry.counts["requeued"] == 3
    assert db.files.count_documents({"rebuild.cache": "pending"}) == 0

    result = cleanup.cleanup(db, settings, "photos")
    assert result.counts["requeued"] == 3
    states = {d["path"]: (d["rebuild"]["cache"], d["rebuild"]["thumbnail"]) for d in db.files.find()}
    assert states == {"stuck.jpg": ("pending", "done"), "fresh.jpg": ("queued", "queued"),
                      "both.jpg": ("pending", "pending")}


def test_unreachable_catalog_exits_69_and_deletes_nothing(libwatch, cache_dir: Path) -> None:
    orphans = [cache_file(cache_dir, "cache", seed) for seed in range(5)]
    done = libwatch("cleanup", env={"LIBWATCH_MONGO_URI": "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=1000"})
    assert done.code == 69
    assert "Traceback" not in done.stderr and "127.0.0.1:9" in done.stderr
    assert all(p.exists() for p in orphans)


def test_a_missing_library_root_keeps_every_cache_file(libwatch, db: Any, cache_dir: Path, tmp_path: Path) -> None:
    files = _cache_set(db, cache_dir, tmp_path)
    add_library(db, "nas", tmp_path / "nas")
    (tmp_path / "nas").rmdir()  # unmounted
    done = libwatch("cleanup", "--json")
    assert done.code == 74
    result = json.loads(done.stdout)
    assert result["counts"]["orphan_files"] == 0 and result["skipped"][0]["part"] == "orphans"
    assert "nas" in result["skipped"][0]["reason"] and "nas" in done.stderr
    assert all(p.exists() for p in files["kept"] + files["orphans"])
    assert runs.get(db, result["run_id"])["status"] == "failed"


def test_temp_files_of_writers_that_are_gone_go_and_a_live_writers_stays(db: Any, settings: Any,
                                                                          cache_dir: Path) -> None:
    shard = cache_file(cache_dir, "cache", 1).parent
    name = f".{content_hash(1)[9:]}.jpg"
    files = {what: shard / f"{name}.{what}{suffix}" for what, suffix in
             [("old", ".tmp"), ("dead", ".tmp"), ("live", ".tmp"), ("aside", ".del"), ("oldaside", ".del")]}
    for path in files.values():
        path.write_bytes(b"half")
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).timestamp()
    for what in ("old", "oldaside"):
        os.utime(files[what], (two_hours_ago, two_hours_ago))
    with open(files["live"], "rb") as writing:  # a writer holds its temp file's lock while it writes
        fcntl.flock(writing, fcntl.LOCK_EX)
        result = cleanup.cleanup(db, settings)
    assert result.counts["temp_files"] == 3
    assert {what for what, path in files.items() if path.exists()} == {"live", "aside"}


@pytest.mark.parametrize("text, expected", [("90m", timedelta(minutes=90)), ("12h", timedelta(hours=12)),
                                            ("30d", timedelta(days=30)), ("2w", timedelta(weeks=2)),
                                            ("1.5d", timedelta(hours=36))])
def test_ages(text: str, expected: timedelta) -> None:
    assert cleanup.parse_age(text) == expected


def test_bad_age_is_a_usage_error(libwatch) -> None:
    done = libwatch("cleanup", "--older-than", "soon")
    assert done.code == 2 and "bad age 'soon'" in done.stderr


def test_hash_lookup_pages_through_a_wide_range(db: Any) -> None:
    from libwatch.catalog import housekeeping as repo

    db.files.insert_many([file_doc("photos", f"f{i}.jpg", i) for i in range(25)]
                         + [file_doc("photos", "dup-a.jpg", 10), file_doc("photos", "dup-b.jpg", 10),
                            file_doc("photos", "gone.jpg", 30, status="missing")])
    asked = {content_hash(seed) for seed in (0, 9, 10, 11, 24, 30, 99)}
    # a missing record kept for its retention still owns its hash (30); 99 has no record
    assert repo.referenced_hashes(db, asked, page=10) == {content_hash(seed) for seed in (0, 9, 10, 11, 24, 30)}
