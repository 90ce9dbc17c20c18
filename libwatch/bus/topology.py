"""The exchanges and queues of libwatch and the admin calls on them: declare, depths, broker check."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final

import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from libwatch import messages
from libwatch.bus.confirms import ConfirmLink
from libwatch.bus.connection import blocking, close_quietly, reason, unavailable
from libwatch.errors import AccessRefused, BusError, TopologyMismatch

_ACCESS_REFUSED: Final = 403
_PRECONDITION_FAILED: Final = 406
_NOT_FOUND: Final = 404
_MISMATCH: Final = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for (?P<what>queue|exchange) '(?P<name>[^']*)'"
    r" in vhost '[^']*': (?P<detail>.*)"
)


def _frozen_queues() -> Mapping[str, str]:
    return MappingProxyType({kind: f"libwatch.rebuild.{kind}" for kind in messages.KINDS})


@dataclass(frozen=True, slots=True)
class Topology:
    """Names of the exchanges and queues; a prefix isolates tests on a shared broker.

    The dead-letter queue is bounded: at most ``dead_letter_max_length`` messages
    and ``dead_letter_max_bytes`` bytes of bodies (the oldest are dropped first),
    each kept ``dead_letter_ttl_s`` seconds.
    """

    exchange: str = "libwatch"
    queues: Mapping[str, str] = field(default_factory=_frozen_queues, hash=False)
    dead_letter_exchange: str = "libwatch.dlx"
    dead_letter_queue: str = "libwatch.dead"
    max_priority: int = 10
    dead_letter_max_length: int = 100_000
    dead_letter_max_bytes: int = 1 << 30
    dead_letter_ttl_s: int = 30 * 86_400

    @classmethod
    def prefixed(cls, prefix: str) -> Topology:
        """The default topology with every exchange and queue name prefixed, e.g. ``test-1a2b.``."""
        base = cls()
        return replace(
            base,
            exchange=prefix + base.exchange,
            queues=MappingProxyType({kind: prefix + name for kind, name in base.queues.items()}),
            dead_letter_exchange=prefix + base.dead_letter_exchange,
            dead_letter_queue=prefix + base.dead_letter_queue,
        )

    @staticmethod
    def routing_key(kind: str) -> str:
        """The routing key of a kind's rebuild messages (``rebuild.cache``)."""
        return messages.routing_key(kind)

    def queue_arguments(self) -> dict[str, Any]:
        """The arguments every rebuild queue is declared with."""
        return {"x-max-priority": self.max_priority, "x-dead-letter-exchange": self.dead_letter_exchange}

    def dead_letter_arguments(self) -> dict[str, Any]:
        """The arguments the dead-letter queue is declared with (its bounds)."""
        return {"x-max-length": self.dead_letter_max_length, "x-max-length-bytes": self.dead_letter_max_bytes,
                "x-message-ttl": self.dead_letter_ttl_s * 1000}

    def all_queues(self) -> dict[str, str]:
        """The rebuild queues by kind and the dead-letter queue as ``dead``."""
        return {**self.queues, "dead": self.dead_letter_queue}


# The default for every call that takes a topology (a frozen value, shared safely).
DEFAULT_TOPOLOGY: Final = Topology()


def _mismatch(exc: pika.exceptions.ChannelClosedByBroker) -> TopologyMismatch:
    found = _MISMATCH.search(exc.reply_text)
    if found is None:
        return TopologyMismatch(f"RabbitMQ refused the libwatch topology: {exc.reply_text}")
    what, name = found["what"], found["name"]
    fix = f"rabbitmqctl delete_queue {name}" if what == "queue" else f"rabbitmqadmin delete exchange name={name}"
    return TopologyMismatch(
        f"{what} {name!r} exists with a different {found['arg']!r} ({found['detail']}); "
        f"delete it ({fix}) or configure other names"
    )


def declare(channel: BlockingChannel, topology: Topology = DEFAULT_TOPOLOGY) -> None:
    """Declare the exchanges, queues and bindings; idempotent.

    Raises TopologyMismatch when one exists with other arguments (the broker's
    PRECONDITION_FAILED closes the channel).
    """
    try:
        channel.exchange_declare(topology.dead_letter_exchange, "fanout", durable=True)
        channel.queue_declare(topology.dead_letter_queue, durable=True, arguments=topology.dead_letter_arguments())
        channel.queue_bind(topology.dead_letter_queue, topology.dead_letter_exchange)
        channel.exchange_declare(topology.exchange, "topic", durable=True)
        for kind, queue in topology.queues.items():
            channel.queue_declare(queue, durable=True, arguments=topology.queue_arguments())
            channel.queue_bind(queue, topology.exchange, routing_key=topology.routing_key(kind))
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == _PRECONDITION_FAILED:
            raise _mismatch(exc) from exc
        error = AccessRefused if exc.reply_code == _ACCESS_REFUSED else BusError
        raise error(f"RabbitMQ refused to declare the libwatch topology: {exc.reply_text}") from exc


def declare_for_publishing(connection: pika.BlockingConnection, topology: Topology = DEFAULT_TOPOLOGY) -> None:
    """Declare the topology, or, for a user that may only publish, check that its exchange exists.

    Declaring a dead-lettered queue needs the right to read it, which a publish-only
    user (scanners, see the README) does not have; for it a worker's (or an admin's)
    declaration must come first. Raises AccessRefused saying so, or TopologyMismatch.
    """
    try:
        declare(connection.channel(), topology)
    except AccessRefused as refused:
        try:
            connection.channel().exchange_declare(topology.exchange, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise AccessRefused(f"{refused}; a user that may only publish needs the topology declared first: "
                                "start a worker once, or declare it as an admin") from exc


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue as the broker reports it: messages ready and consumers attached (0 and 0 when missing)."""

    messages: int = 0
    consumers: int = 0


def queue_stats(url: str, topology: Topology = DEFAULT_TOPOLOGY, *, timeout_s: float = 5.0) -> dict[str, QueueStats]:
    """Each rebuild queue's and the dead-letter queue's (``dead``) ready messages and consumers."""
    stats: dict[str, QueueStats] = {}
    connection = blocking(url, timeout_s, "status")
    try:
        channel = connection.channel()
        for name, queue in topology.all_queues().items():
            try:
                method = channel.queue_declare(queue, passive=True).method
                stats[name] = QueueStats(method.message_count, method.consumer_count)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != _NOT_FOUND:
                    raise BusError(f"RabbitMQ refused to inspect queue {queue!r}: {reason(exc)}") from exc
                stats[name] = QueueStats()
                channel = connection.channel()
    except pika.exceptions.AMQPConnectionError as exc:
        raise unavailable(url, exc, "lost the connection to") from exc
    finally:
        close_quietly(connection)
    return stats


def queue_depths(url: str, topology: Topology = DEFAULT_TOPOLOGY, *, timeout_s: float = 5.0) -> dict[str, int]:
    """Messages ready in each rebuild queue and in the dead-letter queue (``dead``); 0 for a missing queue."""
    return {name: queue.messages for name, queue in queue_stats(url, topology, timeout_s=timeout_s).items()}


def check(url: str, timeout_s: float = 5.0) -> str:
    """The broker's product and version (``RabbitMQ 3.10.8``), for ``libwatch doctor``."""
    link = ConfirmLink.open(url, timeout_s, "doctor")
    try:
        props = link.server_properties
        return f"{props.get('product', 'AMQP broker')} {props.get('version', '?')}"
    finally:
        link.close()
