"""The README's broker users: a publish-only scanner and a worker that cannot publish requests (issue 12.5)."""
from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pika
import pytest

from libwatch.bus import Consumer, OutgoingMessage, Publisher, Topology
from libwatch.errors import AccessRefused, BusError

pytestmark = pytest.mark.broker

SCAN_PERMISSIONS = ("^$", "^libwatch$", "^$")
WORKER_PERMISSIONS = (r"^libwatch(\..*)?$", r"^libwatch\.(dlx|rebuild\..*|dead)$", r"^libwatch(\..*)?$")


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def users(amqp_url: str) -> Iterator[tuple[str, str]]:
    """A vhost of its own with the README's scanner and worker users; URLs (scan, work)."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to create the test's users")
    tag = uuid.uuid4().hex[:8]
    vhost, scan, work = f"libwatch-test-{tag}", f"lw-scan-{tag}", f"lw-work-{tag}"
    _ctl("add_vhost", vhost)
    try:
        _ctl("add_user", scan, "s")
        _ctl("add_user", work, "w")
        _ctl("set_permissions", "-p", vhost, scan, *SCAN_PERMISSIONS)
        _ctl("set_permissions", "-p", vhost, work, *WORKER_PERMISSIONS)
        host = amqp_url.split("@", 1)[1].split("/", 1)[0]
        yield f"amqp://{scan}:s@{host}/{quote(vhost, safe='')}", f"amqp://{work}:w@{host}/{quote(vhost, safe='')}"
    finally:
        for user in (scan, work):
            subprocess.run(["rabbitmqctl", "delete_user", user], capture_output=True, timeout=60)
        _ctl("delete_vhost", vhost)


def test_a_publish_only_scanner_publishes_once_a_worker_declared_and_reads_nothing(users: tuple[str, str]) -> None:
    scan, work = users
    with pytest.raises(AccessRefused, match="needs the topology declared first"), Publisher(scan):
        pass
    with Consumer(work):
        pass  # the worker declares the topology
    with Publisher(scan) as publisher:
        publisher.publish(OutgoingMessage(Topology.routing_key("cache"), b"{}", "m1"))
    connection = pika.BlockingConnection(pika.URLParameters(scan))
    try:
        for queue in (*Topology().queues.values(), Topology().dead_letter_queue):
            with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="ACCESS_REFUSED"):
                connection.channel().basic_get(queue, auto_ack=True)
    finally:
        connection.close()
    with Consumer(work) as consumer:
        got = list(consumer.deliveries(idle_timeout_s=0.5))
        for delivery in got:
            consumer.reject(delivery)  # dead-lettering needs the worker's write on libwatch.dlx
    assert [d.message_id for d in got] == ["m1"]


def test_the_workers_user_cannot_publish_rebuild_requests(users: tuple[str, str]) -> None:
    _scan, work = users
    with Consumer(work):
        pass
    with pytest.raises(BusError, match="ACCESS_REFUSED - access to exchange .libwatch."), Publisher(work) as publisher:
        publisher.publish(OutgoingMessage(Topology.routing_key("cache"), b"{}", "m1"))
