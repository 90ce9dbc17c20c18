"""Topology names, declaration, mismatches and the status helpers."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from libwatch.bus import (
    Consumer,
    OutgoingMessage,
    Publisher,
    PublishResult,
    Topology,
    TopologyMismatch,
    check,
    declare,
    queue_depths,
)
from libwatch.config import mask_url
from libwatch.errors import UsageError
from libwatch.services.outbox import default_topology

from broker import purge

pytestmark = pytest.mark.broker


def test_default_names_follow_the_design() -> None:
    topo = Topology()
    assert topo.exchange == "libwatch"
    assert dict(topo.queues) == {"cache": "libwatch.rebuild.cache", "thumbnail": "libwatch.rebuild.thumbnail"}
    assert (topo.dead_letter_exchange, topo.dead_letter_queue, topo.max_priority) == (
        "libwatch.dlx", "libwatch.dead", 10)
    assert Topology.routing_key("thumbnail") == "rebuild.thumbnail"


def test_prefixed_renames_everything_and_stays_frozen_and_hashable() -> None:
    topo = Topology.prefixed("test-x.")
    assert topo.exchange == "test-x.libwatch"
    assert dict(topo.queues) == {"cache": "test-x.libwatch.rebuild.cache",
                                 "thumbnail": "test-x.libwatch.rebuild.thumbnail"}
    assert (topo.dead_letter_exchange, topo.dead_letter_queue) == ("test-x.libwatch.dlx", "test-x.libwatch.dead")
    with pytest.raises(TypeError):
        topo.queues["cache"] = "other"  # type: ignore[index]
    assert hash(topo) == hash(Topology.prefixed("test-x.")) and topo == Topology.prefixed("test-x.")


def test_bus_masks_passwords_with_the_shared_helper() -> None:
    assert mask_url("amqp://user:s3cret@broker.lan:5672/vhost") == "amqp://user:***@broker.lan:5672/vhost"
    assert mask_url("amqp://broker.lan/") == "amqp://broker.lan/"


def test_declare_creates_the_queues_with_priority_and_dead_lettering_idempotently(
        amqp_url: str, topology: Topology, channel: BlockingChannel) -> None:
    declare(channel, topology)
    declare(channel, topology)
    for queue in topology.queues.values():
        # An active declare with the same arguments succeeds only if they are equal.
        channel.queue_declare(queue, durable=True, arguments=topology.queue_arguments())
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.queue_declare(topology.queues["cache"], durable=True, arguments={"x-max-priority": 3})
    assert refused.value.reply_code == 406
    assert queue_depths(amqp_url, topology) == {"cache": 0, "thumbnail": 0, "dead": 0}


def test_existing_queue_with_other_arguments_is_a_one_line_topology_mismatch(
        amqp_url: str, topology: Topology, channel: BlockingChannel) -> None:
    queue = topology.queues["thumbnail"]
    channel.queue_declare(queue, durable=True, arguments={**topology.queue_arguments(), "x-max-priority": 5})
    with pytest.raises(TopologyMismatch) as mismatch, Publisher(amqp_url, topology):
        pass
    text = str(mismatch.value)
    assert "\n" not in text
    assert repr(queue) in text and "'x-max-priority'" in text and "delete" in text


def test_queue_depths_and_purge(amqp_url: str, topology: Topology,
                                publish: Callable[[list[tuple[str, str, int]]], dict[str, PublishResult]]) -> None:
    assert queue_depths(amqp_url, topology) == {"cache": 0, "thumbnail": 0, "dead": 0}  # nothing declared yet
    publish([("cache", "a", 5), ("cache", "b", 5), ("thumbnail", "c", 5)])
    assert queue_depths(amqp_url, topology) == {"cache": 2, "thumbnail": 1, "dead": 0}
    assert purge(amqp_url, topology) == {"cache": 2, "thumbnail": 1}
    assert queue_depths(amqp_url, topology) == {"cache": 0, "thumbnail": 0, "dead": 0}


def test_check_names_the_broker(amqp_url: str) -> None:
    assert check(amqp_url, 3).startswith("RabbitMQ ")


def test_the_dead_letter_queue_is_bounded_in_length_bytes_and_age(
        amqp_url: str, topology: Topology, channel: BlockingChannel) -> None:
    declare(channel, topology)
    assert topology.dead_letter_arguments() == {"x-max-length": 100_000, "x-max-length-bytes": 1 << 30,
                                                "x-message-ttl": 30 * 86_400_000}
    # An active declare with the same arguments succeeds only if they are equal.
    channel.queue_declare(topology.dead_letter_queue, durable=True, arguments=topology.dead_letter_arguments())


def _reject_all(amqp_url: str, topology: Topology) -> None:
    with Consumer(amqp_url, topology) as consumer:
        for delivery in consumer.deliveries(idle_timeout_s=0.3):
            consumer.reject(delivery)


def test_dead_letters_beyond_the_bounds_are_dropped_oldest_first(
        amqp_url: str, topology: Topology, drain: Callable[[str], list]) -> None:
    small = replace(topology, dead_letter_max_length=2, dead_letter_ttl_s=2)
    with Publisher(amqp_url, small) as publisher:
        for mid in ("m1", "m2", "m3"):
            publisher.publish(OutgoingMessage(Topology.routing_key("cache"), b"{}", mid))
    _reject_all(amqp_url, small)
    assert queue_depths(amqp_url, small)["dead"] == 2
    assert [props.message_id for _method, props, _body in drain(small.dead_letter_queue)] == ["m2", "m3"]
    with Publisher(amqp_url, small) as publisher:
        publisher.publish(OutgoingMessage(Topology.routing_key("cache"), b"{}", "m4"))
    _reject_all(amqp_url, small)
    assert queue_depths(amqp_url, small)["dead"] == 1
    time.sleep(2.5)
    assert queue_depths(amqp_url, small)["dead"] == 0  # expired


def test_an_unbounded_dead_letter_queue_of_an_older_version_is_named_with_the_fix(
        amqp_url: str, topology: Topology, channel: BlockingChannel) -> None:
    channel.queue_declare(topology.dead_letter_queue, durable=True)  # as libwatch declared it before
    with pytest.raises(TopologyMismatch) as mismatch, Publisher(amqp_url, topology):
        pass
    text = str(mismatch.value)
    assert f"queue {topology.dead_letter_queue!r} exists with a different 'x-message-ttl'" in text
    assert "but current is none" in text
    assert f"rabbitmqctl delete_queue {topology.dead_letter_queue}" in text and "\n" not in text


def test_dead_letter_bounds_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBWATCH_DEAD_LETTER_MAX_LENGTH", "500")
    monkeypatch.setenv("LIBWATCH_DEAD_LETTER_MAX_BYTES", "1048576")
    monkeypatch.setenv("LIBWATCH_DEAD_LETTER_TTL_DAYS", "3")
    assert default_topology().dead_letter_arguments() == {
        "x-max-length": 500, "x-max-length-bytes": 1048576, "x-message-ttl": 3 * 86_400_000}
    monkeypatch.setenv("LIBWATCH_DEAD_LETTER_TTL_DAYS", "forever")
    with pytest.raises(UsageError,
                       match="LIBWATCH_DEAD_LETTER_TTL_DAYS must be a positive whole number, not 'forever'"):
        default_topology()
