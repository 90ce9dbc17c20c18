"""Publishing and consuming throughput of libwatch.bus against plain pika, in one run.

Publishing: unconfirmed ``basic_publish`` on a BlockingConnection (it flushes
the socket per message) and on a SelectConnection (everything buffered, ended by
one round trip), a confirm per message (BlockingConnection.confirm_delivery),
and ``Publisher.publish_batch``; the target is at least 50 % of the better
unconfirmed rate. Consuming: plain pika with prefetch 1
and an ack per message, plain pika with prefetch 100 and batched acks (the
ceiling), and ``Consumer`` with a no-op handler; the target is at least 10,000
msg/s. Everything runs on a temporary prefixed topology that is deleted
at the end. Each figure is the best of ``--repeat`` runs: the broker shares the
machine's two cores with everything else, and a confirmed rate (which waits for
the broker to write each persistent message) moves by a third between runs.

    .venv/bin/python benchmarks/publish.py --count 20000
"""
from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable
from typing import Final

import pika
import pika.channel

from libwatch.bus import Consumer, OutgoingMessage, Publisher, Topology, declare, delete_topology

KIND: Final = "thumbnail"
PUBLISH_TARGET: Final = 0.5
CONSUME_TARGET: Final = 10_000.0
# A confirm per message runs at about 1,400 msg/s: a slice is enough for its rate.
PER_MESSAGE_CONFIRM_SHARE: Final = 10
BODY: Final = (
    b'{"schema": "libwatch.rebuild/1", "kind": "thumbnail", "imageId": "65f0c0ffee0000000000abcd",'
    b' "collectionId": "65f0c0ffee0000000000dcba", "libraryId": "photos",'
    b' "imagePath": "/srv/photos/2024/trip/IMG_0001.jpg",'
    b' "contentHash": "xxh3-128:0123456789abcdef0123456789abcdef",'
    b' "forceRegenerate": true, "requestedAt": "2026-11-28T18:00:00Z"}'
)


def _properties(i: int) -> pika.BasicProperties:
    return pika.BasicProperties(content_type="application/json", delivery_mode=2, message_id=f"bench:{i}",
                                priority=5, timestamp=int(time.time()))


def _rate(count: int, run: Callable[[], int], repeat: int, before: Callable[[], None]) -> float:
    """The best rate of ``repeat`` runs, each after ``before`` (untimed)."""
    best = 0.0
    for _ in range(repeat):
        before()
        started = time.perf_counter()
        done = run()
        elapsed = time.perf_counter() - started
        if done != count:
            raise SystemExit(f"expected {count} messages, handled {done}")
        best = max(best, count / elapsed)
    return best


def unconfirmed(channel: pika.adapters.blocking_connection.BlockingChannel, topology: Topology, count: int) -> int:
    """Plain basic_publish, no confirms: the client-side ceiling."""
    for i in range(count):
        channel.basic_publish(topology.exchange, Topology.routing_key(KIND), BODY, _properties(i))
    channel.connection.process_data_events(0)
    return count


def unconfirmed_async(url: str, topology: Topology, count: int) -> int:
    """SelectConnection, no confirms, every message buffered at once, ended by one round trip."""
    handled = []

    def on_open(connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=on_channel)

    def on_channel(channel: pika.channel.Channel) -> None:
        for i in range(count):
            channel.basic_publish(topology.exchange, Topology.routing_key(KIND), BODY, _properties(i))
        # The broker answers only after it has read every publish before it on the channel.
        channel.queue_declare(topology.queues[KIND], passive=True, callback=lambda _frame: finish(channel))

    def finish(channel: pika.channel.Channel) -> None:
        handled.append(count)
        channel.connection.close()

    connection = pika.SelectConnection(pika.URLParameters(url), on_open_callback=on_open,
                                       on_close_callback=lambda conn, _reason: conn.ioloop.stop())
    connection.ioloop.start()
    connection.ioloop.close()
    return sum(handled)


def confirm_each(url: str, topology: Topology, count: int) -> int:
    """BlockingConnection with confirm_delivery(): one round trip per message."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    for i in range(count):
        channel.basic_publish(topology.exchange, Topology.routing_key(KIND), BODY, _properties(i), mandatory=True)
    connection.close()
    return count


def libwatch_publish(url: str, topology: Topology, count: int) -> int:
    """Publisher.publish_batch; counts only confirmed, unreturned messages."""
    messages = (OutgoingMessage(Topology.routing_key(KIND), BODY, f"bench:{i}", key=i) for i in range(count))
    with Publisher(url, topology) as publisher:
        return sum(result.ok for result in publisher.publish_batch(messages))


def plain_consume(url: str, topology: Topology, count: int, prefetch: int) -> int:
    """Plain pika: an ack per message with prefetch 1, else one multiple=True ack per half window."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    every = max(1, prefetch // 2)
    done = 0
    for method, _props, _body in channel.consume(topology.queues[KIND], inactivity_timeout=2):
        if method is None:
            break
        done += 1
        if done % every == 0 or done == count:
            channel.basic_ack(method.delivery_tag, multiple=every > 1)
        if done == count:
            break
    channel.cancel()
    connection.close()
    return done


def libwatch_consume(url: str, topology: Topology, count: int) -> int:
    """Consumer with prefetch 100 and a no-op handler: the worker's overhead per message."""
    done = 0
    with Consumer(url, topology, prefetch=100, kinds=(KIND,)) as consumer:
        for delivery in consumer.deliveries(idle_timeout_s=2):
            consumer.ack(delivery)
            done += 1
            if done == count:
                break
    return done


def _fill(url: str, topology: Topology, count: int) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_purge(topology.queues[KIND])
    unconfirmed(channel, topology, count)
    while channel.queue_declare(topology.queues[KIND], passive=True).method.message_count < count:
        time.sleep(0.05)
    connection.close()


def main() -> None:
    """Run every measurement and print msg/s and the ratios against the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="messages per measurement (default 20000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement, best kept (default 3)")
    parser.add_argument("--url", default=os.environ.get("LIBWATCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    args = parser.parse_args()
    count, url = args.count, args.url
    slow_count = max(100, count // PER_MESSAGE_CONFIRM_SHARE)
    topology = Topology.prefixed(f"bench-{uuid.uuid4().hex[:8]}.")
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        declare(channel, topology)
        unconfirmed(channel, topology, slow_count)  # warm-up: the queue's first messages are slower

        def purge() -> None:
            channel.queue_purge(topology.queues[KIND])

        def fill() -> None:
            _fill(url, topology, count)

        rep = args.repeat
        rates = {"unconfirmed": _rate(count, lambda: unconfirmed(channel, topology, count), rep, purge),
                 "unconfirmed async": _rate(count, lambda: unconfirmed_async(url, topology, count), rep, purge),
                 "confirm per message": _rate(slow_count, lambda: confirm_each(url, topology, slow_count), rep, purge),
                 "libwatch Publisher": _rate(count, lambda: libwatch_publish(url, topology, count), rep, purge),
                 "consume prefetch 1": _rate(count, lambda: plain_consume(url, topology, count, 1), rep, fill),
                 "consume prefetch 100": _rate(count, lambda: plain_consume(url, topology, count, 100), rep, fill),
                 "libwatch Consumer": _rate(count, lambda: libwatch_consume(url, topology, count), rep, fill)}
    finally:
        connection.close()
        delete_topology(url, topology)
    print(f"messages: {count} ({slow_count} for the confirm-per-message baseline), body {len(BODY)} bytes")
    for name, rate in rates.items():
        print(f"{name:>22}: {rate:9,.0f} msg/s")
    ceiling = max(rates["unconfirmed"], rates["unconfirmed async"])
    ratio = rates["libwatch Publisher"] / ceiling
    print(f"Publisher / best unconfirmed: {ratio:.2f} (target >= {PUBLISH_TARGET:.2f}) "
          f"{'ok' if ratio >= PUBLISH_TARGET else 'MISSED'}")
    print(f"Publisher / confirm per message: {rates['libwatch Publisher'] / rates['confirm per message']:.1f}x")
    consumer = rates["libwatch Consumer"]
    print(f"Consumer: {consumer:,.0f} msg/s vs target {CONSUME_TARGET:,.0f}: {consumer / CONSUME_TARGET:.2f} "
          f"{'ok' if consumer >= CONSUME_TARGET else 'MISSED'}; "
          f"{consumer / rates['consume prefetch 1']:.1f}x plain prefetch 1, "
          f"{consumer / rates['consume prefetch 100']:.2f} of plain prefetch 100 with batched acks")


if __name__ == "__main__":
    main()
