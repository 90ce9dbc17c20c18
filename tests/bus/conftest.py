"""Fixtures for the RabbitMQ adapter tests: a reachable broker and an isolated topology.

Self-contained on purpose (it may move to the top-level conftest): every test
gets its own prefixed topology, deleted afterwards, on the shared broker.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Final

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from libwatch.bus import BrokerUnavailable, OutgoingMessage, Publisher, PublishResult, Topology, check

from support import unavailable

DEFAULT_URL: Final = "amqp://guest:guest@127.0.0.1:5672/"

Spec = tuple[str, str, int]  # kind, message_id, priority
Got = tuple[pika.spec.Basic.GetOk, pika.BasicProperties, bytes]


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The test broker's URL; skips (or fails with LIBWATCH_REQUIRE_BROKER=1) when it is unreachable."""
    url = os.environ.get("LIBWATCH_TEST_AMQP_URL", DEFAULT_URL)
    try:
        check(url, 3)
    except BrokerUnavailable as exc:
        unavailable(f"RabbitMQ is unreachable: {exc}", "LIBWATCH_REQUIRE_BROKER")
    return url


@pytest.fixture
def channel(amqp_url: str) -> Iterator[BlockingChannel]:
    """A plain pika channel, to look at the broker independently of libwatch.bus."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    yield connection.channel()
    if connection.is_open:
        connection.close()


def _body_of(message_id: str) -> bytes:
    """The test body of a message."""
    return f'{{"id": "{message_id}"}}'.encode()


@pytest.fixture
def publish(amqp_url: str, topology: Topology) -> Callable[[list[Spec]], dict[str, PublishResult]]:
    """publish([(kind, message_id, priority), ...]) -> {message_id: result}, through libwatch.bus."""
    def run(specs: list[Spec]) -> dict[str, PublishResult]:
        messages = [OutgoingMessage(Topology.routing_key(kind), _body_of(mid), mid, priority, key=mid)
                    for kind, mid, priority in specs]
        with Publisher(amqp_url, topology) as publisher:
            return {str(result.key): result for result in publisher.publish_batch(messages)}

    return run


@pytest.fixture
def drain(channel: BlockingChannel) -> Callable[[str], list[Got]]:
    """drain(queue) -> every ready message with its properties, taken with plain pika."""
    def run(queue: str) -> list[Got]:
        got: list[Got] = []
        while True:
            method, props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return got
            got.append((method, props, body))

    return run
