"""The SelectConnection state machine behind the publisher: a channel in confirm mode, driven step by step.

Each published message is tracked by its sequence number until the broker's
basic.ack (or basic.nack, or basic.return before the ack) resolves it; a lost
connection or channel resolves every message still in flight as not confirmed.
The ioloop runs only inside ``open``, ``wait`` and ``close``, until the awaited
condition holds or its timeout passes.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import takewhile
from typing import Any, Final

import pika
import pika.channel
import pika.frame
import pika.spec

from libwatch.bus.connection import CONFIRM_TIMEOUT_S, parameters, reason
from libwatch.config import mask_url
from libwatch.errors import BrokerUnavailable, BusError, PublishNacked, Unroutable
from libwatch.messages import DEFAULT_PRIORITY

CONTENT_TYPE: Final = "application/json"
PERSISTENT: Final = 2
CLOSE_TIMEOUT_S: Final = 2.0


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


class ConfirmLink:
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
            parameters(url, timeout_s, role),
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_close,
        )

    @classmethod
    def open(cls, url: str, timeout_s: float, role: str) -> ConfirmLink:
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
        self._lose(reason(exc))
        self._closed = True
        self._wake()

    def _on_close(self, _connection: pika.SelectConnection, exc: BaseException) -> None:
        self._lose(reason(exc))
        self._closed = True
        self._wake()

    def _on_channel_closed(self, _channel: pika.channel.Channel, exc: BaseException) -> None:
        self._lose(f"channel closed: {reason(exc)}")
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
