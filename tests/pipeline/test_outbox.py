"""The outbox against the real RabbitMQ and SecantusDB.

One message per pending (record, kind), queued only after confirm.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

import pytest

from libwatch.bus import Topology
from libwatch.catalog import rebuilds
from libwatch.config import Settings
from libwatch.messages import decode
from libwatch.services import outbox

from .conftest import Photos, drain

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/"


def _bodies(amqp_url: str, topology: Topology, kind: str) -> list[dict[str, Any]]:
    return [json.loads(body) for _props, body in drain(amqp_url, topology.queues[kind])]


def test_one_message_per_pending_record_and_kind(photos: Photos, broker_settings: Settings, topology: Topology,
                                                 amqp_url: str) -> None:
    a = photos.add("2024/a.jpg")
    b = photos.add("2024/trip/b.jpg", color=(1, 2, 3))
    photos.add("done.jpg", color=(9, 9, 9), states={"cache": "done", "thumbnail": "done"})
    photos.add("thumb-only.jpg", color=(7, 7, 7), states={"cache": None})

    result = outbox.publish_pending(photos.db, broker_settings, library="photos", topology=topology)

    assert result == {"published": 5, "pending": 0}
    cache = _bodies(amqp_url, topology, "cache")
    thumbs = _bodies(amqp_url, topology, "thumbnail")
    assert sorted(m["imageId"] for m in cache) == sorted([a, b])
    assert sorted(m["imageId"] for m in thumbs) == sorted([a, b, photos.ids["thumb-only.jpg"]])
    first = next(m for m in cache if m["imageId"] == a)
    assert first["imagePath"] == str(photos.root / "2024/a.jpg")
    assert first["contentHash"] == photos.record("2024/a.jpg")["hash"]
    assert first["collectionId"] == str(photos.db.collections.find_one({"path": "2024"})["_id"])
    assert photos.states() == {"2024/a.jpg": ("queued", "queued"), "2024/trip/b.jpg": ("queued", "queued"),
                               "done.jpg": ("done", "done"), "thumb-only.jpg": (None, "queued")}


def test_priority_travels_as_amqp_property(photos: Photos, broker_settings: Settings, topology: Topology,
                                           amqp_url: str) -> None:
    photos.add("a.jpg")
    outbox.publish_pending(photos.db, broker_settings, library="photos", topology=topology, priority=8)
    assert {props.priority for props, _ in drain(amqp_url, topology.queues["cache"])} == {8}


def test_non_utf8_name_round_trips_exactly(photos: Photos, broker_settings: Settings, topology: Topology,
                                           amqp_url: str) -> None:
    photos.add(b"caf\xe9.jpg")
    outbox.publish_pending(photos.db, broker_settings, library="photos", topology=topology)
    ((_props, body),) = drain(amqp_url, topology.queues["cache"])
    body.decode("ascii")  # escapes, not invalid UTF-8
    request = decode(body, root_of=lambda _name: str(photos.root))
    assert os.fsencode(request.image_path) == os.fsencode(photos.root) + b"/caf\xe9.jpg"
    assert os.path.exists(os.fsencode(request.image_path))


def test_record_changed_between_read_and_flip_stays_pending(photos: Photos, broker_settings: Settings,
                                                            topology: Topology, amqp_url: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    photos.add("a.jpg")
    photos.add("b.jpg", color=(0, 0, 255))
    real_flip = rebuilds.mark_queued
    newer = "xxh3-128:" + "ab" * 16

    def scan_in_between(*args: Any, **kwargs: Any) -> int:
        # A scan records a new version of a.jpg after its message was confirmed.
        photos.db.files.update_one({"path": "a.jpg"}, {"$set": {"hash": newer, "rebuild.hash": newer,
                                                                 "rebuild.cache": "pending",
                                                                 "rebuild.thumbnail": "pending"}})
        return real_flip(*args, **kwargs)

    monkeypatch.setattr(rebuilds, "mark_queued", scan_in_between)
    result = outbox.publish_pending(photos.db, broker_settings, library="photos", topology=topology)

    assert result == {"published": 4, "pending": 1}
    assert photos.states() == {"a.jpg": ("pending", "pending"), "b.jpg": ("queued", "queued")}
    monkeypatch.undo()
    again = outbox.publish_pending(photos.db, broker_settings, library="photos", topology=topology)
    assert again == {"published": 2, "pending": 0}
    newest = [m for m in _bodies(amqp_url, topology, "cache") if m["contentHash"] == newer]
    assert len(newest) == 1


def test_broker_unreachable_leaves_pending_then_publishes_all(photos: Photos, broker_settings: Settings,
                                                              topology: Topology, amqp_url: str) -> None:
    for i in range(3):
        photos.add(f"{i}.jpg", color=(i, i, i))
    down = replace(broker_settings, amqp_url=UNREACHABLE)

    with pytest.raises(outbox.PublishFailed) as failed:
        outbox.publish_pending(photos.db, down, library="photos", topology=topology)
    assert failed.value.exit_code == 69
    assert set(photos.states().values()) == {("pending", "pending")}

    assert outbox.publish_pending(photos.db, broker_settings, library="photos", topology=topology) == \
        {"published": 6, "pending": 0}
    assert len(_bodies(amqp_url, topology, "thumbnail")) == 3



def test_missing_collection_document_still_gives_a_valid_message(photos: Photos, broker_settings: Settings,
                                                                 topology: Topology, amqp_url: str) -> None:
    photos.add("lost/a.jpg")
    photos.db.collections.delete_many({})
    outbox.publish_pending(photos.db, broker_settings, library="photos", topology=topology, kinds=("cache",))
    ((_props, body),) = drain(amqp_url, topology.queues["cache"])
    assert decode(body, root_of=lambda _name: str(photos.root)).collection_id == "photos:lost"


def test_crash_between_confirm_and_flip_publishes_again(photos: Photos, broker_settings: Settings,
                                                        topology: Topology, amqp_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    photos.add("a.jpg")

    def crash(*_args: Any, **_kwargs: Any) -> int:
        raise RuntimeError("killed before the flip")

    monkeypatch.setattr(rebuilds, "mark_queued", crash)
    with pytest.raises(RuntimeError):
        outbox.publish_pending(photos.db, broker_settings, library="photos", topology=topology)
    assert photos.states() == {"a.jpg": ("pending", "pending")}
    monkeypatch.undo()
    assert outbox.publish_pending(photos.db, broker_settings, library="photos", topology=topology)["published"] == 2
    assert len(_bodies(amqp_url, topology, "cache")) == 2  # at-least-once: twice, never zero times
