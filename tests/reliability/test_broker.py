"""The broker under faults: an outage loses no rebuild request, an unroutable publish stays pending."""
from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from libwatch import bus
from libwatch.bus import Topology
from libwatch.config import Settings
from libwatch.services import outbox
from libwatch.services import scan as scan_service
from libwatch.services.outbox import PublishFailed
from libwatch.services.scan import ScanOptions

from .conftest import BAD_AMQP_URL, NAME, broker_env, one_clear_line
from support import write_image

KINDS = ("cache", "thumbnail")


def _states(db: Any) -> dict[str, tuple[str | None, str | None]]:
    return {d["path"]: (d["rebuild"]["cache"], d["rebuild"]["thumbnail"]) for d in db.files.find({"library": NAME})}


def test_broker_outage_keeps_every_request_pending_until_it_is_back(
        db: Any, root: Path, register: Any, libwatch: Any, amqp_url: str, topology: Topology) -> None:
    for i in range(3):
        write_image(root / f"2024/{i}.jpg", (40 + i, 30), fmt="JPEG")
    register()
    good, down = broker_env(amqp_url, topology), {**broker_env(amqp_url, topology), "LIBWATCH_AMQP_URL": BAD_AMQP_URL}

    first = libwatch("--json", "scan", NAME, env=down)
    assert first.code == 69, first.stderr
    one_clear_line(first.stderr, "127.0.0.1:1", "stay pending")
    published = json.loads(first.stdout)
    assert published["counts"]["added"] == 3  # recorded, even though nothing was published
    assert published["status"] == "partial" and [p["kind"] for p in published["problems"]] == ["publish"]
    assert published["problems"][0]["item"] == NAME and "127.0.0.1:1" in published["problems"][0]["reason"]
    assert set(_states(db).values()) == {("pending", "pending")}
    run = db.runs.find_one({"job": "scan"})  # honest history: the changes are recorded, the publish failed
    assert run["status"] == "partial" and run["counts"]["added"] == 3, run
    assert run["error"].startswith("publishing failed: ") and "127.0.0.1:1" in run["error"]

    back = libwatch("--json", "scan", NAME, env=good)  # nothing changed on disk: the outbox alone publishes
    assert back.code == 0, back.stderr
    assert json.loads(back.stdout)["status"] == "success"
    assert json.loads(back.stdout)["rebuild"] == {"requested": 0, "published": 6, "pending": 0}
    assert set(_states(db).values()) == {("queued", "queued")}

    write_image(root / "2024/0.jpg", (99, 99), (0, 0, 0), fmt="JPEG")  # a change found while the broker is down
    again = libwatch("scan", NAME, env=down)
    assert again.code == 69
    one_clear_line(again.stderr, "stay pending")
    assert _states(db)["2024/0.jpg"] == ("pending", "pending")
    publish = libwatch("--json", "rebuild", NAME, "--pending", env=good)
    assert publish.code == 0, publish.stderr
    assert json.loads(publish.stdout)["counts"]["published"] == 2
    assert bus.queue_depths(amqp_url, topology) == {"cache": 4, "thumbnail": 4, "dead": 0}  # 3 + 1 of each

    worker = libwatch("--json", "worker", "--idle-exit", "1", "--processes", "1", env=good, timeout=300)
    assert worker.code == 0, worker.stderr
    counts = json.loads(worker.stdout)["counts"]
    assert counts["done"] == 6 and counts["skipped"] == 2  # the two requests for 0.jpg's old content
    assert set(_states(db).values()) == {("done", "done")}


def test_an_unroutable_publish_is_an_error_and_the_request_stays_pending(
        db: Any, settings: Settings, root: Path, register: Any, amqp_url: str, topology: Topology) -> None:
    """No queue is bound for `rebuild.cache` when the message is routed.

    The publisher declares its topology on every connect, so deleting the queue
    beforehand would not do. Publishing with a topology that lacks the cache queue
    declares and binds only the thumbnail queue: the broker then returns each cache
    message as unroutable, exactly as it does when an admin has deleted or unbound
    that queue while libwatch runs.
    """
    write_image(root / "a.jpg", fmt="JPEG")
    write_image(root / "b.jpg", (10, 10), fmt="JPEG")
    library = register()
    with_broker = Settings(**{**{f: getattr(settings, f) for f in settings.__dataclass_fields__}, "amqp_url": amqp_url})
    scan_service.scan(db, with_broker, library, ScanOptions())
    no_cache_queue = Topology(exchange=topology.exchange,
                              queues=MappingProxyType({"thumbnail": topology.queues["thumbnail"]}),
                              dead_letter_exchange=topology.dead_letter_exchange,
                              dead_letter_queue=topology.dead_letter_queue)
    with pytest.raises(PublishFailed, match=r"did not accept 2 rebuild requests \(unroutable: 312 NO_ROUTE "
                                            r".*rebuild\.cache.*the rest stay pending") as failed:
        outbox.publish_pending(db, with_broker, library=NAME, topology=no_cache_queue)
    assert "\n" not in str(failed.value)
    assert set(_states(db).values()) == {("pending", "queued")}

    assert outbox.publish_pending(db, with_broker, library=NAME, topology=topology) == {"published": 2, "pending": 0}
    assert set(_states(db).values()) == {("queued", "queued")}
    assert bus.queue_depths(amqp_url, topology) == {"cache": 2, "thumbnail": 2, "dead": 0}


def test_a_request_whose_file_moved_before_the_worker_came_is_rendered_after_the_next_scan(
        db: Any, root: Path, register: Any, libwatch: Any, amqp_url: str, topology: Topology) -> None:
    # The found-by-hypothesis case: a rename keeps the record's rebuild state and asks for no
    # new rendering, so a request the worker could not serve (its source had moved) must not
    # stay `queued`: it goes back to pending, and the scan that records the move publishes it.
    write_image(root / "a.jpg", (40, 30), fmt="JPEG")
    register()
    env = broker_env(amqp_url, topology)
    assert libwatch("scan", NAME, env=env).code == 0
    (root / "moved").mkdir()
    (root / "a.jpg").rename(root / "moved/a.jpg")

    first = libwatch("--json", "worker", "--idle-exit", "1", "--processes", "1", env=env)
    assert first.code == 0, first.stderr
    assert json.loads(first.stdout)["counts"] == {"received": 2, "skipped": 2}
    assert _states(db) == {"a.jpg": ("pending", "pending")}

    rescan = libwatch("--json", "scan", NAME, env=env)
    assert rescan.code == 0, rescan.stderr
    assert json.loads(rescan.stdout)["counts"]["renamed"] == 1
    assert json.loads(rescan.stdout)["rebuild"]["published"] == 2
    second = libwatch("--json", "worker", "--idle-exit", "1", "--processes", "1", env=env)
    assert json.loads(second.stdout)["counts"] == {"received": 2, "done": 2}
    assert _states(db) == {"moved/a.jpg": ("done", "done")}
