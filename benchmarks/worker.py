"""The worker's overhead per message with a no-op render, against a bare pika consume loop, in one run.

Both consume the same number of real ``libwatch.rebuild/1`` messages published by the
outbox from real file records in a temporary SecantusDB: the baseline acks them with
prefetch 100 and a batched ``multiple`` ack, the worker decodes them, reads their
records, "renders" with a stub (``--render noop``, the default) and records ``done``
before acking. Target: at least 10,000 msg/s for the worker.

The catalog is a SecantusDB server in a process of its own (``libwatch store serve``,
as the ``libwatch-store`` unit runs it). The time spent in the catalog calls (one read
and one bulk write per batch) is measured too and reported apart: on SecantusDB every
document updated costs about 0.7 ms, which bounds the worker, whatever the bus and
decoding cost; a batch holds the whole prefetch window of both queues so that an
image's two requests share one document write.

    .venv/bin/python benchmarks/worker.py --count 2000
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Self

import pika
import pymongo
from bson import ObjectId

from libwatch.bus import Topology, delete_topology
from libwatch.catalog import libraries, rebuilds
from libwatch.catalog.schema import ensure_schema
from libwatch.config import Settings
from libwatch.library import Library
from libwatch.renderpool import DONE, RenderJob, RenderOutcome
from libwatch.services import outbox
from libwatch.services.worker import Worker, WorkerOptions

TARGET: Final = 10_000.0
PREFETCH: Final = 100


def noop_render(jobs: Iterable[RenderJob]) -> Iterator[RenderOutcome]:
    """The render step stubbed out: every job done at once."""
    return (RenderOutcome(job.key, DONE) for job in jobs)


def seed(db: Any, root: Path, count: int) -> None:
    """``count`` present records, both kinds pending, in a library ``bench``."""
    libraries.insert(db, Library(name="bench", path=str(root)))
    now = datetime.now(UTC)
    docs = []
    for i in range(count):
        digest = f"xxh3-128:{i:032x}"
        docs.append({"_id": ObjectId(), "library": "bench", "path": f"{i:07d}.jpg", "collection": "", "size": 1,
                     "mtime_ns": 1, "hash": digest, "status": "present",
                     "rebuild": {"hash": digest, "priority": 5, "cache": "pending", "thumbnail": "pending",
                                 "cache_at": now, "thumbnail_at": now}})
    db.files.insert_many(docs)


@contextlib.contextmanager
def store_process(home: Path) -> Iterator[str]:
    """`libwatch store serve` in a process of its own, as libwatch-store.service runs it; yields its URI.

    Not in this process: SecantusDB is Python, and sharing the worker's interpreter
    (and its GIL) would charge the store's work to the worker.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "LIBWATCH_HOME": str(home), "LIBWATCH_CONFIG": "/dev/null"}
    process = subprocess.Popen([sys.executable, "-m", "libwatch", "store", "serve", "--port", str(port)],
                               env=env, stderr=subprocess.DEVNULL)
    uri = f"mongodb://127.0.0.1:{port}/"
    try:
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=60_000) as client:
            client.admin.command("ping")
        yield uri
    finally:
        process.terminate()
        process.wait(60)


def republish(db: Any, settings: Settings, topology: Topology) -> int:
    db.files.update_many({}, {"$set": {"rebuild.cache": "pending", "rebuild.thumbnail": "pending"}})
    return outbox.publish_pending(db, settings, library="bench", topology=topology)["published"]


def bare_consume(url: str, topology: Topology, count: int) -> float:
    """Plain pika: prefetch 100, an ack with multiple=True every 50 messages; returns msg/s."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=PREFETCH)
    seen = acked = last = 0
    started = time.perf_counter()
    for queue in topology.queues.values():
        for method, _props, _body in channel.consume(queue, inactivity_timeout=1):
            if method is None:
                break
            seen += 1
            last = method.delivery_tag
            if seen % (PREFETCH // 2) == 0:
                channel.basic_ack(last, multiple=True)
                acked = last
        if last > acked:
            channel.basic_ack(last, multiple=True)
            acked = last
        channel.cancel()
    elapsed = time.perf_counter() - started - 2  # the two inactivity timeouts
    connection.close()
    if seen != count:
        raise SystemExit(f"bare consumer saw {seen} of {count} messages")
    return count / elapsed


class CatalogClock:
    """Times the worker's catalog calls by wrapping them in place (measurement only; they still run)."""

    CALLS: Final = ("records_by_id", "record_results", "library_roots")

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> Self:
        self._saved = {name: getattr(rebuilds, name) for name in self.CALLS}
        for name, call in self._saved.items():
            setattr(rebuilds, name, self._timed(call))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for name, call in self._saved.items():
            setattr(rebuilds, name, call)

    def _timed(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
        return timed


def worker_consume(db: Any, settings: Settings, topology: Topology, count: int, prefetch: int) -> tuple[float, float]:
    """The worker's rate, and its rate with the catalog's share of the time taken out."""
    worker = Worker(db, settings, WorkerOptions(prefetch=prefetch, max_messages=count), topology=topology,
                    render=noop_render)
    with CatalogClock() as clock:
        started = time.perf_counter()
        counts = worker.run()
        elapsed = time.perf_counter() - started
    if counts.get("done") != count:
        raise SystemExit(f"worker handled {counts}, expected {count} done")
    return count / elapsed, count / (elapsed - clock.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="file records (two messages each)")
    parser.add_argument("--prefetch", type=int, default=PREFETCH)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    args = parser.parse_args()
    topology = Topology.prefixed(f"bench-{uuid.uuid4().hex[:8]}.")
    with tempfile.TemporaryDirectory() as tmp, store_process(Path(tmp) / "home") as uri:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, tz_aware=True)
        db = client["bench"]
        ensure_schema(db)
        settings = Settings(mongo_uri=uri, database="bench", amqp_url=args.amqp_url,
                            cache_dir=Path(tmp) / "cache", home=Path(tmp))
        try:
            seed(db, Path(tmp), args.count)
            messages = republish(db, settings, topology)
            bare = bare_consume(args.amqp_url, topology, messages)
            republish(db, settings, topology)
            ours, without_catalog = worker_consume(db, settings, topology, messages, args.prefetch)
        finally:
            delete_topology(args.amqp_url, topology)
            client.close()
    print(f"messages                      {messages:>10,}")
    print(f"bare pika consume (baseline)  {bare:>10,.0f} msg/s")
    print(f"libwatch worker, no-op render {ours:>10,.0f} msg/s  ({ours / bare:.0%} of the baseline)")
    print(f"  of which outside the catalog {without_catalog:>10,.0f} msg/s  (bus, decoding, classifying, acks)")
    print(f"target >= {TARGET:,.0f} msg/s: {'met' if ours >= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
