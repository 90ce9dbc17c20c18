"""Consuming: answering deliveries, redelivery after a crash, sharing, batched acks, idle end, stop()."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from libwatch.bus import Consumer, PublishResult, Topology, queue_depths

pytestmark = pytest.mark.broker

Publish = Callable[[list[tuple[str, str, int]]], dict[str, PublishResult]]


def _ids(n: int, kind: str = "cache") -> list[tuple[str, str, int]]:
    return [(kind, f"m{i:03d}", 5) for i in range(n)]


def test_reject_dead_letters_the_message(amqp_url: str, topology: Topology, publish: Publish,
                                         drain: Callable[[str], list]) -> None:
    publish([("thumbnail", "bad", 5)])
    with Consumer(amqp_url, topology) as consumer:
        for delivery in consumer.deliveries(idle_timeout_s=0.3):
            consumer.reject(delivery)
    assert queue_depths(amqp_url, topology) == {"cache": 0, "thumbnail": 0, "dead": 1}
    [(method, props, _body)] = drain(topology.dead_letter_queue)
    assert props.message_id == "bad" and method.routing_key == "rebuild.thumbnail"
    assert props.headers["x-death"][0]["reason"] == "rejected"


def test_requeue_comes_back_redelivered(amqp_url: str, topology: Topology, publish: Publish) -> None:
    publish([("cache", "flaky", 5)])
    seen = []
    with Consumer(amqp_url, topology) as consumer:
        for delivery in consumer.deliveries(idle_timeout_s=0.3):
            seen.append((delivery.message_id, delivery.redelivered))
            if delivery.redelivered:
                consumer.ack(delivery)
            else:
                consumer.requeue(delivery)
    assert seen == [("flaky", False), ("flaky", True)]
    assert queue_depths(amqp_url, topology) == {"cache": 0, "thumbnail": 0, "dead": 0}


_HOLDER = """
import sys
from libwatch.bus import Consumer, Topology
with Consumer(sys.argv[1], Topology.prefixed(sys.argv[2]), prefetch=4) as consumer:
    for delivery in consumer.deliveries():
        print(delivery.message_id, flush=True)
"""


def test_a_consumer_killed_without_acking_loses_nothing(amqp_url: str, topology: Topology, publish: Publish) -> None:
    publish(_ids(10))
    prefix = topology.exchange.removesuffix("libwatch")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, amqp_url, prefix], stdout=subprocess.PIPE, text=True)
    try:
        taken = [holder.stdout.readline().strip() for _ in range(4)]  # type: ignore[union-attr]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    assert len(set(taken)) == 4
    got = {}
    with Consumer(amqp_url, topology) as consumer:
        for delivery in consumer.deliveries(idle_timeout_s=0.5):
            got[delivery.message_id] = delivery.redelivered
            consumer.ack(delivery)
    assert sorted(got) == [f"m{i:03d}" for i in range(10)]
    assert {mid for mid, redelivered in got.items() if redelivered} == set(taken)


def test_two_consumers_share_a_queue_without_duplicates(amqp_url: str, topology: Topology, publish: Publish) -> None:
    publish(_ids(60))
    with Consumer(amqp_url, topology, prefetch=10) as first, Consumer(amqp_url, topology, prefetch=10) as second:
        held = []
        for delivery in first.deliveries(idle_timeout_s=0.3):  # holds its whole window, acks nothing yet
            held.append(delivery)
        by_second = []
        for delivery in second.deliveries(idle_timeout_s=0.3):
            by_second.append(delivery.message_id)
            second.ack(delivery)
        for delivery in held:
            first.ack(delivery)
        by_first = [d.message_id for d in held]
        for delivery in first.deliveries(idle_timeout_s=0.3):
            by_first.append(delivery.message_id)
            first.ack(delivery)
    assert len(held) == 10 and by_second
    assert not set(by_first) & set(by_second)
    assert sorted(by_first + by_second) == [f"m{i:03d}" for i in range(60)]
    assert queue_depths(amqp_url, topology)["cache"] == 0


def test_batched_acks_interleaved_with_rejects_answer_exactly_the_right_messages(
        amqp_url: str, topology: Topology, publish: Publish, drain: Callable[[str], list]) -> None:
    publish(_ids(40))
    rejected, acked, requeued = set(), [], set()
    with Consumer(amqp_url, topology, prefetch=12) as consumer:
        held, acked_when_held = None, 0
        for delivery in consumer.deliveries(idle_timeout_s=0.4):
            number = int(delivery.message_id[1:])
            if number % 10 == 0 and held is None:
                # Settled only after more acks than a batch (prefetch // 2) of higher tags.
                held, acked_when_held = delivery, len(acked)
            elif number % 5 == 0:
                consumer.reject(delivery)
                rejected.add(delivery.message_id)
            elif number % 7 == 3 and not delivery.redelivered:
                consumer.requeue(delivery)
                requeued.add(delivery.message_id)
            else:
                consumer.ack(delivery)
                acked.append(delivery.message_id)
            if held is not None and len(acked) - acked_when_held >= 8:
                consumer.reject(held)
                rejected.add(held.message_id)
                held = None
        assert held is None
    assert requeued and all(mid in acked for mid in requeued)
    assert rejected == {f"m{i:03d}" for i in range(0, 40, 5)}
    assert sorted(acked + sorted(rejected)) == [f"m{i:03d}" for i in range(40)]
    assert queue_depths(amqp_url, topology)["cache"] == 0
    assert {props.message_id for _m, props, _b in drain(topology.dead_letter_queue)} == rejected


def test_settling_twice_is_refused(amqp_url: str, topology: Topology, publish: Publish) -> None:
    publish(_ids(1))
    with Consumer(amqp_url, topology) as consumer:
        [delivery] = list(consumer.deliveries(idle_timeout_s=0.3))
        consumer.ack(delivery)
        with pytest.raises(ValueError, match="already answered"):
            consumer.reject(delivery)


def test_idle_timeout_ends_the_iterator(amqp_url: str, topology: Topology) -> None:
    with Consumer(amqp_url, topology) as consumer:
        started = time.monotonic()
        assert list(consumer.deliveries(idle_timeout_s=0.5)) == []
        assert 0.5 <= time.monotonic() - started < 1.5


def test_stop_from_a_signal_handler_ends_after_the_current_message(amqp_url: str, topology: Topology,
                                                                   publish: Publish) -> None:
    publish(_ids(5))
    done = []
    with Consumer(amqp_url, topology, prefetch=5) as consumer:
        previous = signal.signal(signal.SIGALRM, lambda _signum, _frame: consumer.stop())
        try:
            for delivery in consumer.deliveries():
                signal.setitimer(signal.ITIMER_REAL, 0.05)
                time.sleep(0.2)  # the "render" during which the signal arrives
                consumer.ack(delivery)
                done.append(delivery.message_id)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    assert done == ["m000"]
    assert queue_depths(amqp_url, topology)["cache"] == 4  # the prefetched rest went back


def test_stop_from_a_signal_handler_ends_an_idle_wait(amqp_url: str, topology: Topology) -> None:
    with Consumer(amqp_url, topology) as consumer:
        previous = signal.signal(signal.SIGALRM, lambda _signum, _frame: consumer.stop())
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            started = time.monotonic()
            assert list(consumer.deliveries()) == []  # no idle timeout: only stop() ends it
            assert time.monotonic() - started < 1.0
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
