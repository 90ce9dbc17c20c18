"""Test-only admin calls on a RabbitMQ topology: purge its queues, delete it.

They are not part of the production adapter (libwatch.bus): no libwatch command
drops messages or deletes queues.
"""
from __future__ import annotations

import pika.exceptions

from libwatch.bus import Topology, declare
from libwatch.bus.connection import blocking, close_quietly, unavailable


def purge(url: str, topology: Topology, *, timeout_s: float = 5.0) -> dict[str, int]:
    """Drop the ready messages of the rebuild queues (not the dead letters); returns how many per kind."""
    connection = blocking(url, timeout_s, "purge")
    try:
        channel = connection.channel()
        declare(channel, topology)
        return {kind: channel.queue_purge(queue).method.message_count for kind, queue in topology.queues.items()}
    except pika.exceptions.AMQPConnectionError as exc:
        raise unavailable(url, exc, "lost the connection to") from exc
    finally:
        close_quietly(connection)


def delete_topology(url: str, topology: Topology, *, timeout_s: float = 5.0) -> None:
    """Delete the topology's queues (with their messages) and exchanges; missing ones are fine."""
    connection = blocking(url, timeout_s, "delete")
    try:
        channel = connection.channel()
        for queue in topology.all_queues().values():
            channel.queue_delete(queue)
        for exchange in (topology.exchange, topology.dead_letter_exchange):
            channel.exchange_delete(exchange)
    finally:
        close_quietly(connection)
