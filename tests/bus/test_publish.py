"""Publishing: properties, priority, confirms, unroutable messages, unreachable brokers, reconnection."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from pika.adapters.blocking_connection import BlockingChannel

from libwatch.bus import (
    BrokerUnavailable,
    Consumer,
    OutgoingMessage,
    Publisher,
    PublishResult,
    Topology,
    Unroutable,
    check,
)

pytestmark = pytest.mark.broker

Publish = Callable[[list[tuple[str, str, int]]], dict[str, PublishResult]]


def _message(kind: str, message_id: str, priority: int = 5) -> OutgoingMessage:
    return OutgoingMessage(Topology.routing_key(kind), json.dumps({"id": message_id}).encode(), message_id,
                           priority, key=message_id)


def test_round_trip_carries_the_properties(amqp_url: str, topology: Topology, publish: Publish,
                                           drain: Callable[[str], list]) -> None:
    before = int(time.time())
    results = publish([("cache", "f1:h1:cache", 7), ("thumbnail", "f1:h1:thumbnail", 3)])
    assert all(result.ok and result.error == "" for result in results.values())
    [(method, props, body)] = drain(topology.queues["cache"])
    assert (props.delivery_mode, props.content_type, props.message_id, props.priority) == (
        2, "application/json", "f1:h1:cache", 7)
    assert before <= props.timestamp <= time.time() + 1
    assert method.routing_key == "rebuild.cache" and json.loads(body) == {"id": "f1:h1:cache"}
    with Consumer(amqp_url, topology) as consumer:
        [delivery] = list(consumer.deliveries(idle_timeout_s=0.3))
        consumer.ack(delivery)
    assert (delivery.kind, delivery.message_id, delivery.priority, delivery.redelivered) == (
        "thumbnail", "f1:h1:thumbnail", 3, False)
    assert json.loads(delivery.body) == {"id": "f1:h1:thumbnail"}


def test_higher_priority_is_consumed_first(amqp_url: str, topology: Topology, publish: Publish) -> None:
    publish([("cache", "low", 1), ("cache", "mid", 5), ("cache", "high", 9)])
    with Consumer(amqp_url, topology, prefetch=1) as consumer:
        order = []
        for delivery in consumer.deliveries(idle_timeout_s=0.3):
            order.append(delivery.message_id)
            consumer.ack(delivery)
    assert order == ["high", "mid", "low"]


def test_a_message_for_a_deleted_queue_is_unroutable_not_ok(amqp_url: str, topology: Topology,
                                                            channel: BlockingChannel) -> None:
    with Publisher(amqp_url, topology) as publisher:
        channel.queue_delete(topology.queues["thumbnail"])
        results = {r.key: r for r in publisher.publish_batch([_message("cache", "c"), _message("thumbnail", "t"),
                                                              _message("cache", "c2")])}
        assert results["c"].ok and results["c2"].ok
        assert not results["t"].ok and results["t"].error.startswith("unroutable: 312 NO_ROUTE")
        with pytest.raises(Unroutable, match="NO_ROUTE"):
            publisher.publish(_message("thumbnail", "t2"))
        publisher.publish(_message("cache", "c3"))  # the channel survives returns


def test_many_messages_in_flight_each_get_one_result(amqp_url: str, topology: Topology,
                                                     drain: Callable[[str], list]) -> None:
    messages = [_message("cache" if i % 2 else "thumbnail", f"m{i}", i % 10) for i in range(3000)]
    with Publisher(amqp_url, topology, max_in_flight=500) as publisher:
        results = list(publisher.publish_batch(messages))
    assert sorted(r.key for r in results) == sorted(m.message_id for m in messages)
    assert all(r.ok for r in results)
    assert len(drain(topology.queues["cache"])) + len(drain(topology.queues["thumbnail"])) == 3000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("opener", ["publisher", "consumer", "check"])
def test_nothing_listening_is_broker_unavailable_fast_with_the_password_masked(opener: str) -> None:
    url = f"amqp://guest:s3cret@127.0.0.1:{_free_port()}/"
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as unavailable:
        if opener == "publisher":
            Publisher(url, connect_timeout_s=2).__enter__()
        elif opener == "consumer":
            Consumer(url, connect_timeout_s=2).__enter__()
        else:
            check(url, 2)
    assert time.monotonic() - started < 3
    text = str(unavailable.value)
    assert "s3cret" not in text and "guest:***@127.0.0.1" in text and "refused" in text.lower()
    assert "\n" not in text


def test_a_silent_server_times_out_within_the_connect_timeout() -> None:
    with socket.socket() as server:  # accepts TCP, never speaks AMQP
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"amqp://guest:s3cret@127.0.0.1:{server.getsockname()[1]}/"
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="timed out") as unavailable:
            Publisher(url, connect_timeout_s=1).__enter__()
        assert time.monotonic() - started < 2
        assert "s3cret" not in str(unavailable.value)


def test_unknown_host_is_broker_unavailable() -> None:
    with pytest.raises(BrokerUnavailable, match="resolve"):
        check("amqp://guest:guest@no-such-host.invalid:5672/", 2)


def test_a_channel_lost_mid_batch_reports_the_unconfirmed_and_resumes(
        amqp_url: str, topology: Topology, channel: BlockingChannel, drain: Callable[[str], list]) -> None:
    def messages() -> Iterator[OutgoingMessage]:
        for i in range(400):
            if i == 120:
                # Publishing to a missing exchange makes the broker close the channel (404).
                channel.exchange_delete(topology.exchange)
            yield _message("cache", f"m{i}")

    with Publisher(amqp_url, topology, max_in_flight=50) as publisher:
        results = list(publisher.publish_batch(messages()))
    assert sorted(r.key for r in results) == sorted(f"m{i}" for i in range(400))
    failed = {r.key for r in results if not r.ok}
    assert failed and all("connection lost" in r.error for r in results if not r.ok)
    assert results[-1].ok and all(r.ok for r in results if int(r.key[1:]) >= 200)
    queued = {props.message_id for _method, props, _body in drain(topology.queues["cache"])}
    assert {r.key for r in results if r.ok} <= queued  # at-least-once: ok means it is in the queue


def test_an_abandoned_batch_does_not_leak_results_into_the_next(amqp_url: str, topology: Topology) -> None:
    with Publisher(amqp_url, topology, max_in_flight=100) as publisher:
        batch = publisher.publish_batch(_message("cache", f"old{i}") for i in range(1000))
        next(batch)
        batch.close()
        results = list(publisher.publish_batch([_message("cache", "new")]))
    assert [(r.key, r.ok) for r in results] == [("new", True)]


def _close_our_connection(role: str) -> None:
    """Have the broker close this process's connection (only ours: the name carries host and pid)."""
    name = f"libwatch {role} {socket.gethostname()}:{os.getpid()}"
    listing = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
    [pid] = [line.split("\t", 1)[0] for line in listing.splitlines() if f'"{name}"' in line]
    subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "closed by the libwatch test"],
                   capture_output=True, check=True, timeout=30)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl to close a connection")
def test_a_connection_closed_by_the_broker_mid_batch_reconnects(
        amqp_url: str, topology: Topology, drain: Callable[[str], list]) -> None:
    def messages() -> Iterator[OutgoingMessage]:
        for i in range(300):
            if i == 100:
                _close_our_connection("publisher")
            yield _message("thumbnail", f"m{i}")

    with Publisher(amqp_url, topology, max_in_flight=40) as publisher:
        results = list(publisher.publish_batch(messages()))
    assert sorted(r.key for r in results) == sorted(f"m{i}" for i in range(300))
    failed = [r for r in results if not r.ok]
    assert failed and all("CONNECTION_FORCED" in r.error for r in failed)
    assert all(r.ok for r in results if int(r.key[1:]) >= 150)
    queued = {props.message_id for _method, props, _body in drain(topology.queues["thumbnail"])}
    assert {r.key for r in results if r.ok} <= queued
