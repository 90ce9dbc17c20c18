"""`libwatch rebuild` and `libwatch worker` as processes: --run, --missing, --all, SIGKILL, SIGTERM, two workers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from libwatch import cachefiles
from libwatch.bus import Topology
from libwatch.config import Settings

from .conftest import Photos, drain


def _broker_env(amqp_url: str, topology: Topology) -> dict[str, str]:
    prefix = topology.exchange.removesuffix("libwatch")
    return {"LIBWATCH_AMQP_URL": amqp_url, "LIBWATCH_AMQP_PREFIX": prefix}


def _states(photos: Photos) -> set[tuple[str | None, str | None]]:
    return set(photos.states().values())


def test_rebuild_run_renders_without_broker(photos: Photos, settings: Settings, libwatch: Callable[..., Any]) -> None:
    photos.add("a.jpg", size=(400, 300))
    photos.add("b.jpg", b"not an image at all")
    done = libwatch("--json", "rebuild", "photos", "--run", "--processes", "1")
    assert done.code == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["mode"] == "run" and doc["counts"]["done"] == 2 and doc["counts"]["failed"] == 2
    assert photos.states() == {"a.jpg": ("done", "done"), "b.jpg": ("failed", "failed")}
    assert cachefiles.existing(settings.cache_dir, "thumbnail", photos.record("a.jpg")["hash"]) is not None
    assert doc["status"] == "partial" and {(p["item"], p["kind"]) for p in doc["problems"]} \
        == {("b.jpg", "cache"), ("b.jpg", "thumbnail")}
    assert set(doc) == {"run_id", "mode", "selection", "libraries", "started_at", "finished_at", "counts",
                        "failures", "status", "problems"}
    run = photos.db.runs.find_one({"job": "rebuild"})  # honest history: done, with per-file problems
    assert run["status"] == "partial" and run["counts"]["done"] == 2
    assert run["error"] == "2 renderings failed (libwatch failed lists them)"


def test_rebuild_missing_finds_a_deleted_cache_file(photos: Photos, settings: Settings,
                                                    libwatch: Callable[..., Any]) -> None:
    photos.add("a.jpg")
    photos.add("b.jpg", color=(0, 0, 200))
    assert libwatch("rebuild", "photos", "--run").code == 0
    thumb = cachefiles.existing(settings.cache_dir, "thumbnail", photos.record("b.jpg")["hash"])
    assert thumb is not None
    thumb.unlink()
    doc = json.loads(libwatch("--json", "rebuild", "photos", "--missing", "--run").stdout)
    assert doc["counts"]["selected"] == 1 and doc["counts"]["done"] == 1
    assert thumb.exists()


def test_rebuild_all_publishes_everything_at_low_priority(photos: Photos, amqp_url: str, topology: Topology,
                                                          libwatch: Callable[..., Any]) -> None:
    photos.add("a.jpg", states={"cache": "done", "thumbnail": "done"})
    photos.add("b.jpg", color=(1, 1, 1), states={"cache": "done", "thumbnail": "done"})
    done = libwatch("--json", "rebuild", "photos", "--all", "--no-cache", env=_broker_env(amqp_url, topology))
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)["counts"]["published"] == 2
    messages = drain(amqp_url, topology.queues["thumbnail"])
    assert [props.priority for props, _ in messages] == [1, 1]
    assert all(json.loads(body)["forceRegenerate"] for _, body in messages)
    assert drain(amqp_url, topology.queues["cache"]) == []
    assert photos.states() == {"a.jpg": ("done", "queued"), "b.jpg": ("done", "queued")}


def test_rebuild_pending_with_broker_down_exits_69(photos: Photos, libwatch: Callable[..., Any]) -> None:
    photos.add("a.jpg")
    done = libwatch("rebuild", "photos", env={"LIBWATCH_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"})
    assert done.code == 69
    assert done.stderr.count("\n") == 1 and "stay pending" in done.stderr
    assert _states(photos) == {("pending", "pending")}


def test_worker_with_broker_down_exits_69(photos: Photos, libwatch: Callable[..., Any]) -> None:
    done = libwatch("worker", "--idle-exit", "1", env={"LIBWATCH_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"})
    assert done.code == 69, done.stderr
    assert done.stderr.count("\n") == 1 and "127.0.0.1:1" in done.stderr
    assert photos.db.runs.find_one({"job": "worker"})["status"] == "failed"


def _worker(cli_env: dict[str, str], extra: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "libwatch", "--json", "worker", *args],
                            env={**cli_env, **extra}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGTERM, 0)])
def test_worker_stopped_mid_batch_loses_nothing(sig: signal.Signals, code: int, photos: Photos, amqp_url: str,
                                                topology: Topology, cli_env: dict[str, str],
                                                libwatch: Callable[..., Any]) -> None:
    for i in range(12):
        photos.add(f"{i:02d}.jpg", size=(1600, 1200), color=(i * 20, 0, 0))
    env = _broker_env(amqp_url, topology)
    assert libwatch("rebuild", "photos", env=env).code == 0
    victim = _worker(cli_env, env, "--prefetch", "10", "--processes", "1")
    _wait_for(lambda: bool(list((photos.root.parent / "cache").rglob("*.jpg"))))
    victim.send_signal(sig)
    _out, err = victim.communicate(timeout=120)
    assert victim.returncode == code, err
    assert not all(pair == ("done", "done") for pair in photos.states().values())
    survivor = _worker(cli_env, env, "--idle-exit", "2", "--processes", "1")
    _out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err
    assert _states(photos) == {("done", "done")}


@pytest.mark.slow
def test_two_workers_share_the_queue_and_sigterm_exits_0(photos: Photos, amqp_url: str, topology: Topology,
                                                          cli_env: dict[str, str],
                                                          libwatch: Callable[..., Any]) -> None:
    for i in range(16):
        photos.add(f"{i:02d}.jpg", size=(200, 150), color=(0, i * 10, 0))
    env = _broker_env(amqp_url, topology)
    assert libwatch("rebuild", "photos", env=env).code == 0
    workers = [_worker(cli_env, env, "--prefetch", "4", "--processes", "1") for _ in range(2)]
    _wait_for(lambda: _states(photos) == {("done", "done")}, timeout=240)
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    results = [json.loads(worker.communicate(timeout=60)[0]) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0]
    rendered = sum(result["counts"].get("done", 0) for result in results)
    assert rendered == 32  # each request rendered once, not by both workers
    assert all(result["counts"].get("done", 0) > 0 for result in results)
    assert os.listdir(photos.root)  # the library is untouched


def test_scan_publishes_once_per_new_or_modified_image_and_worker_completes(
        photos: Photos, amqp_url: str, topology: Topology, cli_env: dict[str, str],
        libwatch: Callable[..., Any]) -> None:
    from support import write_image

    root = photos.root.parent / "library"
    write_image(root / "2024/a.jpg", (120, 90), fmt="JPEG")
    write_image(root / "2024/b.jpg", (90, 120), (0, 0, 250), fmt="JPEG")
    write_image(root / "c.png", (50, 50), (0, 250, 0))
    env = _broker_env(amqp_url, topology)
    assert libwatch("library", "add", "lib", str(root)).code == 0
    first = libwatch("--json", "scan", "lib", env=env)
    assert first.code == 0, first.stderr
    assert json.loads(first.stdout)["rebuild"]["published"] == 6
    os.utime(root / "c.png", ns=(1, 10**18))  # touched: same content
    (root / "2024/b.jpg").rename(root / "2024/renamed.jpg")
    write_image(root / "2024/a.jpg", (120, 90), (10, 10, 10), fmt="JPEG")  # modified
    second = libwatch("--json", "scan", "lib", env=env)
    assert second.code == 0, second.stderr
    assert json.loads(second.stdout)["rebuild"]["published"] == 2
    worker = _worker(cli_env, env, "--idle-exit", "1", "--processes", "1")
    out, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    counts = json.loads(out)["counts"]
    assert counts["received"] == 8 and counts["done"] == 6 and counts["skipped"] == 2  # a.jpg's first version
    states = {d["path"]: (d["rebuild"]["cache"], d["rebuild"]["thumbnail"])
              for d in photos.db.files.find({"library": "lib"})}
    assert states == {"2024/a.jpg": ("done", "done"), "2024/renamed.jpg": ("done", "done"), "c.png": ("done", "done")}


def test_a_request_stuck_in_queued_is_published_again_by_the_next_scan(
        photos: Photos, amqp_url: str, topology: Topology, libwatch: Callable[..., Any]) -> None:
    from datetime import UTC, datetime, timedelta

    from support import write_image

    root = photos.root.parent / "stuck"
    write_image(root / "a.jpg", (60, 40), fmt="JPEG")
    env = _broker_env(amqp_url, topology)
    assert libwatch("library", "add", "stuck", str(root)).code == 0
    first = libwatch("--json", "scan", "stuck", env=env)
    assert first.code == 0 and json.loads(first.stdout)["rebuild"]["published"] == 2, first.stderr
    lost = drain(amqp_url, topology.queues["cache"]) + drain(amqp_url, topology.queues["thumbnail"])
    assert len(lost) == 2  # the broker "loses" them: nobody will ever render these requests
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    photos.db.files.update_many({"library": "stuck"}, {"$set": {"rebuild.cache_at": long_ago,
                                                                  "rebuild.thumbnail_at": long_ago}})

    assert libwatch("cleanup", "stuck", env=env).code == 0
    record = photos.db.files.find_one({"library": "stuck", "path": "a.jpg"})
    assert (record["rebuild"]["cache"], record["rebuild"]["thumbnail"]) == ("pending", "pending")
    again = libwatch("--json", "scan", "stuck", env=env)
    assert again.code == 0 and json.loads(again.stdout)["rebuild"]["published"] == 2, again.stderr
    republished = drain(amqp_url, topology.queues["cache"]) + drain(amqp_url, topology.queues["thumbnail"])
    assert sorted(p.message_id for p, _ in republished) == sorted(p.message_id for p, _ in lost)
    record = photos.db.files.find_one({"library": "stuck", "path": "a.jpg"})
    assert (record["rebuild"]["cache"], record["rebuild"]["thumbnail"]) == ("queued", "queued")
