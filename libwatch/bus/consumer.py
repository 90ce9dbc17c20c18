"""The consumer: deliveries from the rebuild queues with manual, batched acknowledgements.

Each delivery is answered exactly once, by ``ack`` (done with it), ``reject``
(dead-lettered for good) or ``requeue`` (back to its queue, redelivered later);
answering a delivery twice raises, so a bug cannot ack a message twice or ack one
that was rejected.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Final

import pika
import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel

from libwatch.bus.connection import blocking, close_quietly, reason, unavailable
from libwatch.bus.topology import DEFAULT_TOPOLOGY, Topology, declare
from libwatch.errors import BusError
from libwatch.messages import KINDS

# The longest the consumer waits for I/O at once, so that stop() from a signal
# handler (which only sets a flag) is noticed promptly.
WAIT_SLICE_S: Final = 0.2


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message taken from a rebuild queue; answer it once with Consumer.ack, reject or requeue.

    ``size`` is the body's length in bytes as received; a body over the consumer's
    ``max_body_bytes`` is dropped on arrival (``body`` is then empty, ``oversize`` true).
    """

    kind: str
    body: bytes
    message_id: str | None
    redelivered: bool
    tag: int
    priority: int | None
    size: int = 0
    oversize: bool = False


class Consumer:
    """Consumes the rebuild queues of ``kinds`` with manual acks and a prefetch window.

    Usage: ``with Consumer(url) as c: for d in c.deliveries(idle_timeout_s=60): ...; c.ack(d)``.
    Acks are batched (one ``multiple=True`` ack for a run of consecutive tags),
    sent every half prefetch window and whenever the consumer is about to wait
    for the broker. A multiple ack is only used when every unanswered tag up to
    it is being acked, so a delivery held back, rejected or requeued is never
    acked by accident. The connection is serviced (heartbeats) only while the
    caller is inside ``deliveries()``, so keep the work per message well under
    the negotiated heartbeat (60 s by default).
    """

    def __init__(self, url: str, topology: Topology = DEFAULT_TOPOLOGY, *, prefetch: int = 100,
                 kinds: Iterable[str] = KINDS, connect_timeout_s: float = 5,
                 max_body_bytes: int | None = None) -> None:
        self._kinds = tuple(kinds)
        unknown = set(self._kinds) - set(topology.queues)
        if unknown or not self._kinds:
            raise ValueError(f"unknown kinds {sorted(unknown)}; known: {sorted(topology.queues)}")
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self._url = url
        self._topology = topology
        self._prefetch = prefetch
        self._max_body = max_body_bytes
        self._timeout = connect_timeout_s
        self._ack_batch = max(1, prefetch // 2)
        self._connection: pika.BlockingConnection | None = None
        self._channels: dict[str, BlockingChannel] = {}
        self._buffer: deque[Delivery] = deque()
        self._unanswered: set[tuple[str, int]] = set()  # (kind, delivery tag): tags count per channel
        self._pending_acks: dict[str, list[int]] = {kind: [] for kind in self._kinds}
        self._stopping = False

    def __enter__(self) -> Consumer:
        self._connection = blocking(self._url, self._timeout, "worker")
        # One channel per queue: on a shared channel, the consume-ok of the second
        # queue waits behind every delivery the first queue's consumer already sent,
        # which pika reads and holds in full meanwhile (measured: a window of 24
        # bodies of 8 MiB, 190 MB). On its own channel it comes at once.
        try:
            for kind in self._kinds:
                channel = self._connection.channel()
                if not self._channels:
                    declare(channel, self._topology)
                channel.basic_qos(prefetch_count=self._prefetch)
                channel.basic_consume(self._topology.queues[kind], partial(self._on_message, kind))
                self._channels[kind] = channel
        except BaseException:
            close_quietly(self._connection)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Flush pending acks and close; unanswered deliveries go back to their queue."""
        if self._connection is None:
            return
        try:
            if self._connection.is_open:
                self._flush_acks()
        finally:
            close_quietly(self._connection)
            self._connection = None

    def stop(self) -> None:
        """Ask deliveries() to end after the current message; safe in a signal handler.

        It only sets a flag: the iterator notices it within WAIT_SLICE_S, flushes
        the acks and ends; leaving the ``with`` block closes the connection.
        """
        self._stopping = True

    def _on_message(self, kind: str, _channel: BlockingChannel, method: pika.spec.Basic.Deliver,
                    props: pika.spec.BasicProperties, body: bytes) -> None:
        self._unanswered.add((kind, method.delivery_tag))
        # Dropping an oversized body here keeps at most one in memory, whatever the prefetch window.
        oversize = self._max_body is not None and len(body) > self._max_body
        self._buffer.append(Delivery(kind, b"" if oversize else body, props.message_id, method.redelivered,
                                     method.delivery_tag, props.priority, len(body), oversize))

    def deliveries(self, *, idle_timeout_s: float | None = None) -> Iterator[Delivery]:
        """Yield deliveries until stop(), or until ``idle_timeout_s`` passes without one."""
        last = time.monotonic()
        while not self._stopping:
            if self._buffer:
                yield self._buffer.popleft()
                last = time.monotonic()
                continue
            self._flush_acks()
            wait = WAIT_SLICE_S
            if idle_timeout_s is not None:
                wait = min(wait, idle_timeout_s - (time.monotonic() - last))
                if wait <= 0:
                    break
            self._io(lambda connection, limit=wait: connection.process_data_events(time_limit=limit))
        self._flush_acks()

    def ack(self, d: Delivery) -> None:
        """Acknowledge the delivery (batched)."""
        self._answer(d)
        pending = self._pending_acks[d.kind]
        pending.append(d.tag)
        if len(pending) >= self._ack_batch:
            self._flush_acks()

    def reject(self, d: Delivery) -> None:
        """Refuse the delivery for good: it goes to the dead-letter queue."""
        self._answer(d)
        self._io(lambda _connection: self._channel(d.kind).basic_nack(d.tag, requeue=False))

    def requeue(self, d: Delivery) -> None:
        """Give the delivery back to its queue (transient error); it comes back redelivered."""
        self._answer(d)
        self._io(lambda _connection: self._channel(d.kind).basic_nack(d.tag, requeue=True))

    def answered(self, d: Delivery) -> bool:
        """True once the delivery was acked, rejected or requeued."""
        return (d.kind, d.tag) not in self._unanswered

    def _answer(self, d: Delivery) -> None:
        """Mark the delivery answered by the caller (acks may still be pending); answering twice raises."""
        if (d.kind, d.tag) not in self._unanswered:
            raise ValueError(f"delivery {d.tag} ({d.message_id}) is already answered")
        self._unanswered.remove((d.kind, d.tag))

    def _flush_acks(self) -> None:
        for kind, pending in self._pending_acks.items():
            if pending:
                self._pending_acks[kind] = []
                self._ack_all(kind, pending)

    def _ack_all(self, kind: str, tags: list[int]) -> None:
        top = max(tags)
        channel = self._channel(kind)
        # Tags below `top` still held by the caller would be acked by multiple=True.
        if all(tag > top for held_kind, tag in self._unanswered if held_kind == kind):
            self._io(lambda _connection: channel.basic_ack(top, multiple=True))
        else:
            for tag in tags:
                self._io(lambda _connection, tag=tag: channel.basic_ack(tag))

    def _channel(self, kind: str) -> BlockingChannel:
        if kind not in self._channels:
            raise RuntimeError("use the Consumer as a context manager")
        return self._channels[kind]

    def _io(self, step: Callable[[pika.BlockingConnection], None]) -> None:
        if self._connection is None:
            raise RuntimeError("use the Consumer as a context manager")
        try:
            step(self._connection)
        except pika.exceptions.AMQPConnectionError as exc:
            raise unavailable(self._url, exc, "lost the connection to") from exc
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise BusError(f"RabbitMQ closed the consumer channel: {exc.reply_code} {exc.reply_text}") from exc
        except pika.exceptions.AMQPChannelError as exc:
            raise BusError(f"RabbitMQ consumer channel unusable: {reason(exc)}") from exc
