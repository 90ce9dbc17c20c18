"""The RabbitMQ adapter: the only part of libwatch that imports pika.

It moves plain bytes and their metadata; the message body (``libwatch.messages``),
the outbox and the worker loop are built on top of it. One idea per module:

- ``connection``: parameters, one-line failure reasons, closing quietly;
- ``topology``: the exchanges and queues, and the admin calls on them (declare, depths, check);
- ``confirms``: the SelectConnection state machine that streams publisher confirms;
- ``publisher``: the confirmed publisher with reconnection;
- ``consumer``: deliveries with manual, batched acknowledgements, each answered once.

The errors live in ``libwatch.errors`` (``BusError`` and its subclasses).
"""
from __future__ import annotations

from libwatch.bus.confirms import OutgoingMessage
from libwatch.bus.consumer import Consumer, Delivery
from libwatch.bus.publisher import Publisher, PublishResult
from libwatch.bus.topology import QueueStats, Topology, check, declare, queue_depths, queue_stats
from libwatch.errors import BrokerUnavailable, BusError, PublishNacked, TopologyMismatch, Unroutable

__all__ = [
    "BrokerUnavailable", "BusError", "Consumer", "Delivery", "OutgoingMessage", "PublishNacked", "PublishResult",
    "Publisher", "QueueStats", "Topology", "TopologyMismatch", "Unroutable", "check", "declare", "queue_depths",
    "queue_stats",
]
