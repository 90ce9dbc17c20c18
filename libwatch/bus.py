"""The RabbitMQ adapter: topology, confirmed publishing and consuming of rebuild messages.

This is the only module of libwatch that imports pika. It moves plain bytes and
their metadata; the message body (``libwatch.messages``), the outbox and the
worker loop are built on top of it.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import islice, takewhile
from types import MappingProxyType, TracebackType
from typing import Any, Final

import pika
import pika.channel
import pika.exceptions
import pika.frame
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel

from libwatch.config import mask_url
from libwatch.errors import ServiceUnavailable
from pika.adapters.utils.connection_workflow import (
    AMQPConnectionWorkflowFailed,
    AMQPConnectorException,
    AMQPConnectorPhaseErrorBase,
    AMQPConnectorStackTimeout,
)

log = logging.getLogger(__name__)
# pika logs every failed connection attempt with a traceback at ERROR; we raise
# one-line errors instead, so its records only show where logging is configured.
logging.getLogger("pika").addHandler(logging.NullHandler())

KINDS: Final = ("cache", "thumbnail")
CONTENT_TYPE: Final = "application/json"
PERSISTENT: Final = 2
DEFAULT_PRIORITY: Final = 5
# A window of confirms must make progress within this long, and a connection the
# broker blocks (memory or disk alarm) is dropped after it, so nothing hangs forever.
CONFIRM_TIMEOUT_S: Final = 30.0
RECONNECT_DELAYS_S: Final = (0.5, 1.0, 2.0)
CLOSE_TIMEOUT_S: Final = 2.0
# The longest the consumer waits for I/O at once, so that stop() from a signal
# handler (which only sets a flag) is noticed promptly.
WAIT_SLICE_S: Final = 0.2
_PRECONDITION_FAILED: Final = 406
_NOT_FOUND: Final = 404
_MISMATCH: Final = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for (?P<what>queue|exchange) '(?P<name>[^']*)'"
    r" in vhost '[^']*': (?P<detail>.*)"
)


class BusError(ServiceUnavailable):
    """A RabbitMQ operation failed; the message is one line for the user (exit 69)."""


class BrokerUnavailable(BusError):
    """The broker could not be reached or the connection was lost (connect refused,
    timeout, login refused, unknown host). The message names the URL with its
    password masked."""


class TopologyMismatch(BusError):
    """An exchange or queue already exists with other arguments than libwatch
    declares; delete it or use other names."""


class Unroutable(BusError):
    """The broker returned a mandatory message: no queue is bound for its routing key."""


class PublishNacked(BusError):
    """The broker refused to take responsibility for a message (basic.nack)."""


def _frozen_queues() -> Mapping[str, str]:
    return MappingProxyType({kind: f"libwatch.rebuild.{kind}" for kind in KINDS})


@dataclass(frozen=True, slots=True)
class Topology:
    """Names of the exchanges and queues; a prefix isolates tests on a shared broker."""

    exchange: str = "libwatch"
    queues: Mapping[str, str] = field(default_factory=_frozen_queues, hash=False)
    dead_letter_exchange: str = "libwatch.dlx"
    dead_letter_queue: str = "libwatch.dead"
    max_priority: int = 10

    @classmethod
    def prefixed(cls, prefix: str) -> Topology:
        """The default topology with every exchange and queue name prefixed, e.g. ``test-1a2b.``."""
        base = cls()
        return cls(
            exchange=prefix + base.exchange,
            queues=MappingProxyType({kind: prefix + name for kind, name in base.queues.items()}),
            dead_letter_exchange=prefix + base.dead_letter_exchange,
            dead_letter_queue=prefix + base.dead_letter_queue,
            max_priority=base.max_priority,
        )

    @staticmethod
    def routing_key(kind: str) -> str:
        """The routing key of a kind's rebuild messages (``rebuild.cache``)."""
        return f"rebuild.{kind}"

    def queue_arguments(self) -> dict[str, Any]:
        """The arguments every rebuild queue is declared with."""
        return {"x-max-priority": self.max_priority, "x-dead-letter-exchange": self.dead_letter_exchange}


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message to publish; ``key`` is the caller's handle, echoed in its result."""

    routing_key: str
    body: bytes
    message_id: str
    priority: int = DEFAULT_PRIORITY
    key: object = None

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= 255:
            raise ValueError(f"priority must be 0..255, not {self.priority}")


@dataclass(frozen=True, slots=True)
class PublishResult:
    """ok only when the broker confirmed the message and did not return it."""

    key: object
    ok: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message taken from a rebuild queue; settle it with Consumer.ack/reject/requeue."""

    kind: str
    body: bytes
    message_id: str | None
    redelivered: bool
    tag: int
    priority: int | None


def _reason(exc: BaseException) -> str:
    """The root cause of a pika connection failure, in a few words."""
    if isinstance(exc, AMQPConnectionWorkflowFailed) and exc.exceptions:
        return _reason(exc.exceptions[-1])
    if isinstance(exc, AMQPConnectorPhaseErrorBase):
        return _reason(exc.exception)
    if isinstance(exc, (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError)):
        return "login refused (check the user name and password)"
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return "access to the virtual host refused"
    if isinstance(exc, (pika.exceptions.ConnectionClosed, pika.exceptions.ChannelClosed)):
        return f"{exc.reply_code} {exc.reply_text}"
    if isinstance(exc, (AMQPConnectorStackTimeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, pika.exceptions.AMQPConnectionError) and exc.args and isinstance(exc.args[0], BaseException):
        return _reason(exc.args[0])
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _unavailable(url: str, exc: BaseException, doing: str = "cannot connect to") -> BrokerUnavailable:
    return BrokerUnavailable(f"RabbitMQ {doing} {mask_url(url)}: {_reason(exc)}")


def _connection_name(role: str) -> str:
    """How the broker lists our connections (rabbitmqctl, management UI): role, host and pid."""
    return f"libwatch {role} {socket.gethostname()}:{os.getpid()}"


def _parameters(url: str, timeout_s: float, role: str) -> pika.URLParameters:
    try:
        params = pika.URLParameters(url)
    except (ValueError, TypeError) as exc:
        raise BrokerUnavailable(f"invalid AMQP URL {mask_url(url)}: {exc}") from exc
    params.socket_timeout = timeout_s
    params.stack_timeout = timeout_s
    params.blocked_connection_timeout = CONFIRM_TIMEOUT_S
    params.client_properties = {"connection_name": _connection_name(role)}
    return params


def _blocking(url: str, timeout_s: float, role: str) -> pika.BlockingConnection:
    params = _parameters(url, timeout_s, role)
    try:
        return pika.BlockingConnection(params)
    except (pika.exceptions.AMQPError, AMQPConnectorException, OSError) as exc:
        raise _unavailable(url, exc) from exc


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


def declare(channel: BlockingChannel, topology: Topology = Topology()) -> None:
    """Declare the exchanges, queues and bindings; idempotent.

    Raises TopologyMismatch when one exists with other arguments (the broker's
    PRECONDITION_FAILED closes the channel).
    """
    try:
        channel.exchange_declare(topology.dead_letter_exchange, "fanout", durable=True)
        channel.queue_declare(topology.dead_letter_queue, durable=True)
        channel.queue_bind(topology.dead_letter_queue, topology.dead_letter_exchange)
        channel.exchange_declare(topology.exchange, "topic", durable=True)
        for kind, queue in topology.queues.items():
            channel.queue_declare(queue, durable=True, arguments=topology.queue_arguments())
            channel.queue_bind(queue, topology.exchange, routing_key=topology.routing_key(kind))
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == _PRECONDITION_FAILED:
            raise _mismatch(exc) from exc
        raise BusError(f"RabbitMQ refused to declare the libwatch topology: {exc.reply_text}") from exc


def _all_queues(topology: Topology) -> dict[str, str]:
    return {**topology.queues, "dead": topology.dead_letter_queue}


def queue_depths(url: str, topology: Topology = Topology(), *, timeout_s: float = 5.0) -> dict[str, int]:
    """Messages ready in each rebuild queue and in the dead-letter queue (``dead``); 0 for a missing queue."""
    depths: dict[str, int] = {}
    connection = _blocking(url, timeout_s, "status")
    try:
        channel = connection.channel()
        for name, queue in _all_queues(topology).items():
            try:
                depths[name] = channel.queue_declare(queue, passive=True).method.message_count
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != _NOT_FOUND:
                    raise BusError(f"RabbitMQ refused to inspect queue {queue!r}: {_reason(exc)}") from exc
                depths[name] = 0
                channel = connection.channel()
    except pika.exceptions.AMQPConnectionError as exc:
        raise _unavailable(url, exc, "lost the connection to") from exc
    finally:
        _close_quietly(connection)
    return depths


def purge(url: str, topology: Topology = Topology(), *, timeout_s: float = 5.0) -> dict[str, int]:
    """Drop the ready messages of the rebuild queues (not the dead letters); returns how many per kind."""
    connection = _blocking(url, timeout_s, "purge")
    try:
        channel = connection.channel()
        declare(channel, topology)
        return {kind: channel.queue_purge(queue).method.message_count for kind, queue in topology.queues.items()}
    except pika.exceptions.AMQPConnectionError as exc:
        raise _unavailable(url, exc, "lost the connection to") from exc
    finally:
        _close_quietly(connection)


def delete_topology(url: str, topology: Topology, *, timeout_s: float = 5.0) -> None:
    """Delete the topology's queues (with their messages) and exchanges; missing ones are fine."""
    connection = _blocking(url, timeout_s, "delete")
    try:
        channel = connection.channel()
        for queue in _all_queues(topology).values():
            channel.queue_delete(queue)
        for exchange in (topology.exchange, topology.dead_letter_exchange):
            channel.exchange_delete(exchange)
    finally:
        _close_quietly(connection)


def check(url: str, timeout_s: float = 5.0) -> str:
    """The broker's product and version (``RabbitMQ 3.10.8``), for ``libwatch doctor``."""
    link = _ConfirmLink.open(url, timeout_s, "doctor")
    try:
        props = link.server_properties
        return f"{props.get('product', 'AMQP broker')} {props.get('version', '?')}"
    finally:
        link.close()


def _close_quietly(connection: pika.BlockingConnection) -> None:
    if connection.is_open:
        try:
            connection.close()
        except pika.exceptions.AMQPError:
            log.debug("closing an already broken RabbitMQ connection failed", exc_info=True)


class _ConfirmLink:
    """One SelectConnection with a channel in confirm mode, driven step by step.

    BlockingConnection's confirm_delivery() waits for every publish's confirm (one
    round trip per message). Here publishes are buffered and the ioloop runs only
    until enough confirms came back, so thousands of messages stay in flight.
    """

    def __init__(self, url: str, timeout_s: float, role: str) -> None:
        self.failure: str | None = None
        self.server_properties: dict[str, Any] = {}
        self._ready = False
        self._closed = False
        self._done: Callable[[], bool] = lambda: True
        self._running = False
        self._channel: pika.channel.Channel | None = None
        self._next_seq = 1
        self._in_flight: dict[int, OutgoingMessage] = {}
        self._waiting_return: dict[tuple[str, str], deque[int]] = {}
        self._returned: dict[int, Unroutable] = {}
        self._outcomes: list[tuple[OutgoingMessage, BusError | None]] = []
        self.confirmed = 0
        self._connection = pika.SelectConnection(
            _parameters(url, timeout_s, role),
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_close,
        )

    @classmethod
    def open(cls, url: str, timeout_s: float, role: str) -> _ConfirmLink:
        """Connect and enable confirms, or raise BrokerUnavailable."""
        link = cls(url, timeout_s, role)
        link._run_until(lambda: link._ready or link.failure is not None, timeout_s + 1.0)
        if not link._ready:
            link.close()
            raise BrokerUnavailable(
                f"RabbitMQ cannot connect to {mask_url(url)}: {link.failure or 'timed out'}"
            )
        return link

    @property
    def in_flight(self) -> int:
        """Messages published and not yet confirmed."""
        return len(self._in_flight)

    def _on_open(self, connection: pika.SelectConnection) -> None:
        self.server_properties = dict(connection.server_properties or {})
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame: pika.frame.Method) -> None:
        self._ready = True
        self._wake()

    def _on_open_error(self, _connection: pika.SelectConnection, exc: BaseException) -> None:
        self._lose(_reason(exc))
        self._closed = True
        self._wake()

    def _on_close(self, _connection: pika.SelectConnection, exc: BaseException) -> None:
        self._lose(_reason(exc))
        self._closed = True
        self._wake()

    def _on_channel_closed(self, _channel: pika.channel.Channel, exc: BaseException) -> None:
        self._lose(f"channel closed: {_reason(exc)}")
        if self._connection.is_open:
            self._connection.close()
        self._wake()

    def _lose(self, reason: str) -> None:
        """Fail every unconfirmed message: it may or may not be in a queue (at-least-once)."""
        if self.failure is None:
            self.failure = reason
        for seq in list(self._in_flight):
            self._resolve(seq, BrokerUnavailable(f"not confirmed, connection lost: {self.failure}"))

    def _on_return(self, _channel: pika.channel.Channel, method: pika.spec.Basic.Return,
                   props: pika.spec.BasicProperties, _body: bytes) -> None:
        # The broker sends basic.return before the basic.ack of the same message,
        # and returns messages of one (message_id, routing key) in publish order.
        waiting = self._waiting_return.get((props.message_id or "", method.routing_key))
        if waiting:
            self._returned[waiting.popleft()] = Unroutable(
                f"unroutable: {method.reply_code} {method.reply_text} "
                f"(exchange {method.exchange!r}, routing key {method.routing_key!r})"
            )

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        error = None if isinstance(method, pika.spec.Basic.Ack) else PublishNacked("nacked by the broker")
        tag = method.delivery_tag
        seqs = list(takewhile(lambda seq: seq <= tag, self._in_flight)) if method.multiple else [tag]
        for seq in seqs:
            self._resolve(seq, error)
        self._wake()

    def _resolve(self, seq: int, error: BusError | None) -> None:
        message = self._in_flight.pop(seq, None)
        if message is None:
            return
        waiting = self._waiting_return.get((message.message_id, message.routing_key))
        if waiting and seq in waiting:
            waiting.remove(seq)
            if not waiting:
                del self._waiting_return[(message.message_id, message.routing_key)]
        error = self._returned.pop(seq, error)
        if error is None:
            self.confirmed += 1
        self._outcomes.append((message, error))

    def publish(self, messages: Iterable[OutgoingMessage], exchange: str) -> None:
        """Buffer the messages for sending; each one is resolved by a later confirm or failure."""
        stamp = int(time.time())
        for message in messages:
            if self.failure is not None or self._channel is None:
                self._outcomes.append((message, BrokerUnavailable(f"not published, connection lost: {self.failure}")))
                continue
            props = pika.BasicProperties(
                content_type=CONTENT_TYPE, delivery_mode=PERSISTENT, message_id=message.message_id,
                priority=message.priority, timestamp=stamp,
            )
            self._channel.basic_publish(exchange, message.routing_key, message.body, props, mandatory=True)
            seq = self._next_seq
            self._next_seq += 1
            self._in_flight[seq] = message
            self._waiting_return.setdefault((message.message_id, message.routing_key), deque()).append(seq)

    def wait(self, at_most_in_flight: int) -> None:
        """Run the ioloop until no more than that many messages await their confirm."""
        self._run_until(lambda: self.in_flight <= at_most_in_flight or self.failure is not None, CONFIRM_TIMEOUT_S)
        if self.in_flight > at_most_in_flight:
            self._lose(f"no confirm within {CONFIRM_TIMEOUT_S:g} s")

    @property
    def busy(self) -> bool:
        """Messages are in flight or resolved but not yet taken."""
        return bool(self._in_flight or self._outcomes)

    def take_outcomes(self) -> list[tuple[OutgoingMessage, BusError | None]]:
        """The messages resolved since the last call, each with its error (None: confirmed)."""
        outcomes, self._outcomes = self._outcomes, []
        return outcomes

    def close(self) -> None:
        """Close the connection (bounded) and release the ioloop."""
        if not self._closed and not self._connection.is_closing and not self._connection.is_closed:
            self._connection.close()
        self._run_until(lambda: self._closed, CLOSE_TIMEOUT_S)
        self._connection.ioloop.close()

    def _run_until(self, done: Callable[[], bool], timeout_s: float) -> None:
        if done():
            return
        self._done = done
        ioloop = self._connection.ioloop
        timer = ioloop.call_later(timeout_s, ioloop.stop)
        self._running = True
        try:
            ioloop.start()
        finally:
            self._running = False
            ioloop.remove_timeout(timer)

    def _wake(self) -> None:
        # A stop() requested while the loop is not running would end its next run at once.
        if self._running and self._done():
            self._connection.ioloop.stop()


class Publisher:
    """Publishes rebuild messages persistently with publisher confirms and ``mandatory``.

    Usage: ``with Publisher(url) as pub: for result in pub.publish_batch(msgs): ...``.
    Entering connects (within ``connect_timeout_s``), declares the topology and
    enables confirms; it raises BrokerUnavailable or TopologyMismatch.

    Why a SelectConnection: BlockingConnection's confirm_delivery() makes every
    basic_publish wait for its own confirm, one round trip per message. Here up
    to ``max_in_flight`` messages are written before waiting, and the ioloop runs
    only until half of them are confirmed, so confirms stream back while the
    next half is taken from the caller's iterator and sent. Measured with
    ``benchmarks/publish.py --count 5000`` on the shared 2-core machine, broker on
    the same cores, under load from other jobs (figures vary by run): unconfirmed
    publishing 2,900-6,300 msg/s on a BlockingConnection (it flushes the socket
    per message) and 7,100 msg/s on a SelectConnection, a confirm per message
    175-1,270 msg/s, this publisher 4,800-9,400 msg/s confirmed, at worst 0.68 of
    the best unconfirmed rate of the same run. Its CPU time per message equals
    unconfirmed publishing's (about 25 us); the difference is waiting for the
    broker's confirms (persistent messages are confirmed once written).
    """

    def __init__(self, url: str, topology: Topology = Topology(), *, connect_timeout_s: float = 5,
                 max_in_flight: int = 5000) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._url = url
        self._topology = topology
        self._timeout = connect_timeout_s
        self._max_in_flight = max_in_flight
        self._entered = False
        self._link: _ConfirmLink | None = None

    def __enter__(self) -> Publisher:
        self._link = self._connect()
        self._entered = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; messages not confirmed by now simply got no ok result."""
        self._entered = False
        self._drop_link()

    def _drop_link(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    def _connect(self) -> _ConfirmLink:
        connection = _blocking(self._url, self._timeout, "publisher setup")
        try:
            declare(connection.channel(), self._topology)
        finally:
            _close_quietly(connection)
        return _ConfirmLink.open(self._url, self._timeout, "publisher")

    def _usable_link(self) -> _ConfirmLink:
        if not self._entered:
            raise RuntimeError("use the Publisher as a context manager")
        if self._link is not None and self._link.failure is None:
            return self._link
        failure = self._link.failure if self._link is not None else None
        self._drop_link()
        self._link = self._connect() if failure is None else self._reconnect(failure)
        return self._link

    def _reconnect(self, reason: str) -> _ConfirmLink:
        for attempt, delay in enumerate(RECONNECT_DELAYS_S, start=1):
            log.warning("RabbitMQ connection lost (%s); reconnecting in %g s (attempt %d of %d)",
                        reason, delay, attempt, len(RECONNECT_DELAYS_S))
            time.sleep(delay)
            try:
                return self._connect()
            except BrokerUnavailable as exc:
                reason = str(exc)
        raise BrokerUnavailable(f"RabbitMQ at {mask_url(self._url)} unavailable after "
                                f"{len(RECONNECT_DELAYS_S)} reconnection attempts: {reason}")

    def _outcomes(self, messages: Iterable[OutgoingMessage]) -> Iterator[tuple[OutgoingMessage, BusError | None]]:
        source = iter(messages)
        exhausted = False
        fruitless = 0  # connections in a row lost before confirming anything
        try:
            while True:
                link = self._usable_link()
                if not exhausted:
                    room = self._max_in_flight - link.in_flight
                    batch = list(islice(source, room))
                    exhausted = len(batch) < room
                    link.publish(batch, self._topology.exchange)
                link.wait(0 if exhausted else self._max_in_flight // 2)
                yield from link.take_outcomes()
                if exhausted and link.in_flight == 0:
                    return
                if link.failure is not None:
                    fruitless = 0 if link.confirmed else fruitless + 1
                    if fruitless > len(RECONNECT_DELAYS_S):
                        raise BrokerUnavailable(f"RabbitMQ at {mask_url(self._url)} keeps dropping the "
                                                f"connection: {link.failure}")
        finally:
            if self._link is not None and self._link.busy:
                # Abandoned or failed mid-batch: its late confirms must not leak into the next batch.
                self._drop_link()

    def publish_batch(self, messages: Iterable[OutgoingMessage]) -> Iterator[PublishResult]:
        """Publish the messages, yielding one result per message in confirm order (match on ``key``).

        A result is ok only once the broker confirmed the message and did not
        return it as unroutable. When the connection drops, the unconfirmed
        messages are reported not ok (they may have reached a queue:
        at-least-once) and publishing resumes on a new connection; after a few
        failed reconnections BrokerUnavailable is raised and the messages not
        yet taken from ``messages`` got no result (leave them pending).
        """
        for message, error in self._outcomes(messages):
            yield PublishResult(message.key, error is None, "" if error is None else str(error))

    def publish(self, message: OutgoingMessage) -> None:
        """Publish one message and wait for its confirm; raises Unroutable, PublishNacked or BrokerUnavailable."""
        for _message, error in self._outcomes([message]):
            if error is not None:
                raise error


class Consumer:
    """Consumes the rebuild queues of ``kinds`` with manual acks and a prefetch window.

    Usage: ``with Consumer(url) as c: for d in c.deliveries(idle_timeout_s=60): ...; c.ack(d)``.
    Acks are batched (one ``multiple=True`` ack for a run of consecutive tags),
    sent every half prefetch window and whenever the consumer is about to wait
    for the broker. A multiple ack is only used when every unsettled tag up to
    it is being acked, so a delivery held back, rejected or requeued is never
    acked by accident. The connection is serviced (heartbeats) only while the
    caller is inside ``deliveries()``, so keep the work per message well under
    the negotiated heartbeat (60 s by default).
    """

    def __init__(self, url: str, topology: Topology = Topology(), *, prefetch: int = 100,
                 kinds: Iterable[str] = KINDS, connect_timeout_s: float = 5) -> None:
        self._kinds = tuple(kinds)
        unknown = set(self._kinds) - set(topology.queues)
        if unknown or not self._kinds:
            raise ValueError(f"unknown kinds {sorted(unknown)}; known: {sorted(topology.queues)}")
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self._url = url
        self._topology = topology
        self._prefetch = prefetch
        self._timeout = connect_timeout_s
        self._ack_batch = max(1, prefetch // 2)
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._buffer: deque[Delivery] = deque()
        self._unsettled: set[int] = set()
        self._pending_acks: list[int] = []
        self._stopping = False

    def __enter__(self) -> Consumer:
        self._connection = _blocking(self._url, self._timeout, "worker")
        try:
            channel = self._connection.channel()
            declare(channel, self._topology)
            channel.basic_qos(prefetch_count=self._prefetch)
            for kind in self._kinds:
                channel.basic_consume(self._topology.queues[kind], partial(self._on_message, kind))
        except BaseException:
            _close_quietly(self._connection)
            raise
        self._channel = channel
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Flush pending acks and close; unsettled deliveries go back to their queue."""
        if self._connection is None:
            return
        try:
            if self._connection.is_open:
                self._flush_acks()
        finally:
            _close_quietly(self._connection)
            self._connection = None

    def stop(self) -> None:
        """Ask deliveries() to end after the current message; safe in a signal handler.

        It only sets a flag: the iterator notices it within WAIT_SLICE_S, flushes
        the acks and ends; leaving the ``with`` block closes the connection.
        """
        self._stopping = True

    def _on_message(self, kind: str, _channel: BlockingChannel, method: pika.spec.Basic.Deliver,
                    props: pika.spec.BasicProperties, body: bytes) -> None:
        self._unsettled.add(method.delivery_tag)
        self._buffer.append(Delivery(kind, body, props.message_id, method.redelivered,
                                     method.delivery_tag, props.priority))

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
            self._io(lambda connection: connection.process_data_events(time_limit=wait))
        self._flush_acks()

    def ack(self, d: Delivery) -> None:
        """Acknowledge the delivery (batched)."""
        self._take(d)
        self._pending_acks.append(d.tag)
        if len(self._pending_acks) >= self._ack_batch:
            self._flush_acks()

    def reject(self, d: Delivery) -> None:
        """Refuse the delivery for good: it goes to the dead-letter queue."""
        self._take(d)
        self._io(lambda _connection: self._open_channel().basic_nack(d.tag, requeue=False))

    def requeue(self, d: Delivery) -> None:
        """Give the delivery back to its queue (transient error); it comes back redelivered."""
        self._take(d)
        self._io(lambda _connection: self._open_channel().basic_nack(d.tag, requeue=True))

    def _take(self, d: Delivery) -> None:
        """Mark the delivery settled by the caller (acks may still be pending)."""
        if d.tag not in self._unsettled:
            raise ValueError(f"delivery {d.tag} ({d.message_id}) is already settled")
        self._unsettled.remove(d.tag)

    def _flush_acks(self) -> None:
        if not self._pending_acks:
            return
        top = max(self._pending_acks)
        channel = self._open_channel()
        pending, self._pending_acks = self._pending_acks, []
        # Tags below `top` still held by the caller would be acked by multiple=True.
        if all(tag > top for tag in self._unsettled):
            self._io(lambda _connection: channel.basic_ack(top, multiple=True))
        else:
            for tag in pending:
                self._io(lambda _connection, tag=tag: channel.basic_ack(tag))

    def _open_channel(self) -> BlockingChannel:
        if self._channel is None:
            raise RuntimeError("use the Consumer as a context manager")
        return self._channel

    def _io(self, step: Callable[[pika.BlockingConnection], None]) -> None:
        if self._connection is None:
            raise RuntimeError("use the Consumer as a context manager")
        try:
            step(self._connection)
        except pika.exceptions.AMQPConnectionError as exc:
            raise _unavailable(self._url, exc, "lost the connection to") from exc
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise BusError(f"RabbitMQ closed the consumer channel: {exc.reply_code} {exc.reply_text}") from exc
        except pika.exceptions.AMQPChannelError as exc:
            raise BusError(f"RabbitMQ consumer channel unusable: {_reason(exc)}") from exc
