"""The worker against the real RabbitMQ and SecantusDB, rendering real images."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pika
import pytest

from libwatch import cachefiles
from libwatch.bus import Topology
from libwatch.config import Settings
from libwatch.renderpool import RenderJob
from libwatch.services import outbox
from libwatch.services.worker import Worker, WorkerOptions

from .conftest import Photos, add_samples, drain

BROKEN = ["corrupt.png", "bomb.gif"]
GOOD_SAMPLES = ["orientation_2.jpg", "orientation_6.png"]


def _work(photos: Photos, settings: Settings, topology: Topology, **options: Any) -> dict[str, int]:
    worker = Worker(photos.db, settings, WorkerOptions(idle_exit_s=1.0, **options), topology=topology, processes=1)
    return worker.run().counts


def _publish(photos: Photos, settings: Settings, topology: Topology) -> dict[str, int]:
    return outbox.publish_pending(photos.db, settings, library="photos", topology=topology)


def test_renders_real_images_done_or_failed_with_reason(photos: Photos, broker_settings: Settings,
                                                        topology: Topology, amqp_url: str) -> None:
    photos.add("a.jpg", size=(800, 600))
    photos.add("sub/b.jpg", size=(300, 900), color=(10, 200, 10))
    add_samples(GOOD_SAMPLES + BROKEN, photos)
    _publish(photos, broker_settings, topology)

    counts = _work(photos, broker_settings, topology)

    assert counts["received"] == 12
    assert counts["done"] == 8 and counts["failed"] == 4
    states = photos.states()
    for name in ("a.jpg", "sub/b.jpg", *GOOD_SAMPLES):
        assert states[name] == ("done", "done")
        digest = photos.record(name)["hash"]
        for kind in ("cache", "thumbnail"):
            assert cachefiles.existing(broker_settings.cache_dir, kind, digest) == \
                cachefiles.cache_path(broker_settings.cache_dir, kind, digest, "jpg")
    for name in BROKEN:
        record = photos.record(name)
        assert states[name] == ("failed", "failed")
        assert record["rebuild"]["thumbnail_error"]
    dead = drain(amqp_url, topology.dead_letter_queue)
    assert len(dead) == 4  # permanent failures are dead-lettered, never retried forever
    assert not list(broker_settings.cache_dir.rglob(".*.tmp"))


def test_stale_message_does_not_mark_done(photos: Photos, broker_settings: Settings, topology: Topology) -> None:
    photos.add("a.jpg")
    _publish(photos, broker_settings, topology)
    newer = "xxh3-128:" + "cd" * 16
    photos.db.files.update_one({"path": "a.jpg"}, {"$set": {"hash": newer, "rebuild.hash": newer,
                                                             "rebuild.cache": "pending",
                                                             "rebuild.thumbnail": "pending"}})
    counts = _work(photos, broker_settings, topology)
    assert counts == {"received": 2, "skipped": 2}
    assert photos.states() == {"a.jpg": ("pending", "pending")}
    assert not list(broker_settings.cache_dir.rglob("*.jpg"))


def test_duplicate_is_acked_without_work(photos: Photos, broker_settings: Settings, topology: Topology) -> None:
    photos.add("a.jpg")
    _publish(photos, broker_settings, topology)
    assert _work(photos, broker_settings, topology)["done"] == 2
    rendered = cachefiles.existing(broker_settings.cache_dir, "cache", photos.record("a.jpg")["hash"])
    assert rendered is not None
    before = rendered.stat().st_mtime_ns
    photos.db.files.update_one({"path": "a.jpg"},
                               {"$set": {"rebuild.cache": "pending", "rebuild.thumbnail": "pending"}})
    _publish(photos, broker_settings, topology)  # published twice (at-least-once)
    photos.db.files.update_one({"path": "a.jpg"}, {"$set": {"rebuild.cache": "done", "rebuild.thumbnail": "done"}})

    def must_not_render(jobs: Any) -> Any:
        for job in jobs:
            raise AssertionError(f"rendered a duplicate: {job}")
        return iter(())

    worker = Worker(photos.db, broker_settings, WorkerOptions(idle_exit_s=1.0), topology=topology,
                    render=must_not_render)
    assert worker.run().counts == {"received": 2, "duplicate": 2}
    assert rendered.stat().st_mtime_ns == before


def _raw_publish(amqp_url: str, topology: Topology, kind: str, body: bytes) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(topology.exchange, Topology.routing_key(kind), body,
                              pika.BasicProperties(delivery_mode=2, message_id="raw"), mandatory=True)
    finally:
        connection.close()


def test_malformed_and_outside_root_are_dead_lettered(photos: Photos, broker_settings: Settings,
                                                      topology: Topology, amqp_url: str, tmp_path: Path) -> None:
    record_id = photos.add("a.jpg")
    _publish(photos, broker_settings, topology)  # declares the topology, queues the two real requests
    good = json.loads(drain(amqp_url, topology.queues["cache"])[0][1])
    outside = {**good, "imagePath": str(tmp_path / "elsewhere.jpg")}
    _raw_publish(amqp_url, topology, "cache", b"{not json")
    _raw_publish(amqp_url, topology, "cache", json.dumps(outside).encode())
    _raw_publish(amqp_url, topology, "cache", json.dumps({**good, "schema": "other/9"}).encode())

    counts = _work(photos, broker_settings, topology)

    assert counts == {"received": 4, "invalid": 3, "done": 1}
    assert len(drain(amqp_url, topology.dead_letter_queue)) == 3
    assert photos.record("a.jpg")["_id"].__str__() == record_id


def test_vanished_file_is_acked_as_skipped(photos: Photos, broker_settings: Settings, topology: Topology,
                                           amqp_url: str) -> None:
    photos.add("a.jpg")
    _publish(photos, broker_settings, topology)
    (photos.root / "a.jpg").unlink()
    counts = _work(photos, broker_settings, topology)
    assert counts == {"received": 2, "skipped": 2}
    assert drain(amqp_url, topology.dead_letter_queue) == []


def test_full_cache_disk_is_requeued_not_failed(photos: Photos, broker_settings: Settings,
                                                topology: Topology) -> None:
    photos.add("a.jpg")
    _publish(photos, broker_settings, topology)
    blocked = replace(broker_settings, cache_dir=Path("/proc/libwatch-cannot-write"))
    counts = _work(photos, blocked, topology, max_messages=2)
    assert counts["requeued"] == 2 and "failed" not in counts
    assert photos.states() == {"a.jpg": ("queued", "queued")}
    assert _work(photos, broker_settings, topology)["done"] == 2  # the requeued requests come back


def test_max_messages_stops_and_leaves_the_rest(photos: Photos, broker_settings: Settings,
                                                topology: Topology) -> None:
    for i in range(3):
        photos.add(f"{i}.jpg", color=(i, 0, 0))
    _publish(photos, broker_settings, topology)

    def noop(jobs: Any) -> Any:
        from libwatch.renderpool import DONE, RenderOutcome
        return (RenderOutcome(job.key, DONE) for job in jobs if isinstance(job, RenderJob))

    worker = Worker(photos.db, broker_settings, WorkerOptions(max_messages=4, prefetch=2, idle_exit_s=1.0),
                    topology=topology, render=noop)
    assert worker.run().counts["received"] == 4
    assert sum(state == "done" for pair in photos.states().values() for state in pair) == 4
    assert _work(photos, broker_settings, topology, prefetch=2)["received"] == 2


@pytest.mark.parametrize("prefetch", [1])
def test_options_are_validated(prefetch: int, photos: Photos, settings: Settings) -> None:
    from libwatch.errors import UsageError

    with pytest.raises(UsageError, match="needs RabbitMQ"):
        Worker(photos.db, settings, WorkerOptions(prefetch=prefetch))
