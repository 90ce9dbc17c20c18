"""`libwatch worker`: consume rebuild messages, render, record the outcome, then acknowledge.

Deliveries are handled in batches (what the prefetch window holds at the moment):
one catalog read for the batch's records, the renderings spread over the
render pool's processes, one bulk write of the outcomes, and only then the acks, so
a worker killed at any point loses nothing (unacked messages are redelivered and
a redelivered request that is already done is acknowledged without work).

Per message:
- a body over the size limit (dropped unread on arrival), a body that does not
  decode, a field over its length limit, a path outside its library's root, a
  record of another library → rejected (dead-lettered), the reason logged;
- any exception raised while handling a batch (other than the catalog or the
  broker being unavailable) → the batch's unanswered messages are handled again
  one by one, and the message that still raises alone is rejected with the
  exception as its reason: one poison message never stops the worker;
- a message delivered again (``redelivered``) is handled alone after counting the
  attempt in the catalog (``catalog.deliveries``); when an earlier attempt alone
  ended without an answer (the worker died on it), it is rejected unread;
- the record gone, missing, or holding other content than the message's hash →
  acknowledged and counted ``skipped`` (a newer request exists or none is needed);
- no file at the record's path (moved or deleted since the scan) → acknowledged,
  counted ``skipped``, and the request set back to ``pending`` for the next scan,
  which records the move and publishes it again;
- a file at the path that no longer holds the message's content (rewritten, or
  swapped for a symbolic link or a folder since the scan) → nothing is written,
  acknowledged, counted ``changed``, and the request set back to ``pending``: the
  next scan records the change (see ``renderpool``);
- already ``done`` for this hash → acknowledged, counted ``duplicate``;
- rendered → ``done``; the image is broken (decode error, bomb, timeout, crash)
  → ``failed`` with the reason, and rejected so it is never retried forever;
- a transient failure (the catalog unreachable, the cache disk full, the source's
  NAS timing out) → requeued after a backoff.
The outcome is recorded only where the record's hash still equals the message's.
The source is read from the record's current path (a file renamed since the
request keeps its id and content).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pymongo.database import Database

from libwatch import bus, messages, renderpool
from libwatch.catalog import deliveries, rebuilds, runs
from libwatch.catalog.rebuilds import FileState
from libwatch.config import Settings, mask_url
from libwatch.errors import BrokerLost, BusError, CatalogUnavailable, InvalidMessage, UsageError
from libwatch.renderpool import RenderJob, RenderOutcome
from libwatch.result import Result
from libwatch.services import outbox
from libwatch.services.rebuild import drop_orphaned, render_job, render_result, render_specs
from libwatch.text import for_log

log = logging.getLogger("libwatch.worker")

# How long to wait for more deliveries to fill a batch once one has arrived.
GATHER_S: Final = 0.005
BACKOFF_S: Final = (0.5, 1.0, 2.0, 5.0, 10.0)
# The prefetch window's upper bound: with bodies of at most --max-message-size kept in
# memory (larger ones are dropped on arrival), it bounds the memory deliveries take.
MAX_PREFETCH: Final = 1000
# Records of redelivered messages that never came back are dropped after this long.
DELIVERY_RECORD_DAYS: Final = 7

Db = Database[dict[str, Any]]
Render = Callable[[Iterable[RenderJob]], Iterator[RenderOutcome]]


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """``batch`` defaults to the whole prefetch window of both queues; ``idle_exit_s`` None waits forever.

    The whole window, so that an image's cache and thumbnail requests, which arrive on
    two queues, usually share a batch and so one catalog write: measured on SecantusDB,
    where each document written costs about 0.7 ms, a batch of half the window held a
    single queue's deliveries and the no-op worker ran at half the rate.
    """

    prefetch: int = 100
    max_messages: int | None = None
    idle_exit_s: float | None = None
    batch: int | None = None
    trigger: str = "manual"
    max_message_bytes: int = messages.MAX_BODY_BYTES
    max_alone_attempts: int = 1
    heartbeat_s: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.prefetch <= MAX_PREFETCH:
            raise UsageError(f"--prefetch must be 1 to {MAX_PREFETCH}")
        if self.max_message_bytes < 1:
            raise UsageError("--max-message-size must be at least 1 byte")
        if self.heartbeat_s <= 0:
            raise UsageError("--heartbeat must be more than 0 seconds")
        if self.max_messages is not None and self.max_messages < 1:
            raise UsageError("--max-messages must be at least 1")

    @property
    def batch_size(self) -> int:
        return self.batch or self.prefetch * len(messages.KINDS)


@dataclass(slots=True)
class _Task:
    """One request of a batch and every delivery carrying it (a duplicate in the same batch rides along)."""

    request: messages.RebuildRequest
    record: FileState
    deliveries: list[bus.Delivery] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerResult(Result):
    """How a worker run ended: its run id (in ``libwatch history``) and counts per outcome.

    Failed renders and rejected messages are recorded and counted, not problems of the
    run: a daemon under ``Restart=on-failure`` must not exit non-zero for them.
    """

    run_id: str
    counts: dict[str, int]

    def data(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "counts": dict(self.counts)}


class _Heartbeat:
    """Logs at info, every ``interval_s``, what the worker did since the last beat, so its journal shows it alive."""

    def __init__(self, counts: Counter[str], interval_s: float) -> None:
        self._counts, self._interval = counts, interval_s
        self._last_at, self._last = time.monotonic(), Counter(counts)

    def due_in(self) -> float:
        """Seconds until the next beat (0 when due)."""
        return max(0.0, self._last_at + self._interval - time.monotonic())

    def beat_if_due(self) -> None:
        if self.due_in() > 0:
            return
        now, since = time.monotonic(), self._counts - self._last
        done = since["done"] + since["duplicate"] + since["skipped"]
        log.info("worker alive: %d done, %d failed, %d rejected, %d requeued in the last %.0f s (%.1f messages/s); "
                 "%d messages since start", done, since["failed"], since["invalid"], since["requeued"],
                 now - self._last_at, done / max(now - self._last_at, 1e-9), self._counts["received"])
        self._last_at, self._last = now, Counter(self._counts)


class Worker:
    """The consumer loop; ``stop()`` (e.g. from a SIGTERM handler) ends it after the current image."""

    def __init__(self, db: Db, settings: Settings, options: WorkerOptions = WorkerOptions(), *,
                 topology: bus.Topology | None = None, render: Render | None = None,
                 processes: int | None = None) -> None:
        if not settings.amqp_url:
            raise UsageError("the worker needs RabbitMQ (--amqp-url / LIBWATCH_AMQP_URL); "
                             "without one, render with `libwatch rebuild --run`")
        self.db, self.settings, self.options = db, settings, options
        self.topology = topology or outbox.default_topology()
        self.counts: Counter[str] = Counter()
        self._render = render
        self._processes = processes or len(os.sched_getaffinity(0))
        self._specs = render_specs(settings)
        self._roots: dict[str, str] = {}
        self._following: frozenset[str] = frozenset()
        self._stopping = threading.Event()
        self._consumer: bus.Consumer | None = None
        self._transient_streak = 0
        self._heartbeat = _Heartbeat(self.counts, options.heartbeat_s)

    def stop(self) -> None:
        """End after the image being rendered; safe in a signal handler, also before run()."""
        self._stopping.set()
        if self._consumer is not None:
            self._consumer.stop()

    def run(self) -> WorkerResult:
        """Consume until stopped, idle for ``idle_exit_s`` or ``max_messages`` handled."""
        with runs.recorded(self.db, "worker", None, self.options.trigger) as run:
            run.counts = self.counts
            self._consume()
        log.info("worker stopped: %s", ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items())) or "no messages")
        return WorkerResult(run_id=run.run_id, counts=dict(self.counts))

    def _consume(self) -> None:
        if self._stopping.is_set():
            return  # SIGTERM before the start: nothing is held yet
        assert self.settings.amqp_url is not None
        deliveries.forget_older(self.db, datetime.now(UTC) - timedelta(days=DELIVERY_RECORD_DAYS))
        pool = None
        if self._render is None:
            pool = renderpool.RenderPool(self.settings.cache_dir, processes=self._processes,
                                          file_mode=self.settings.cache_mode)
            self._render = pool.render_many
        try:
            with bus.Consumer(self.settings.amqp_url, self.topology, prefetch=self.options.prefetch,
                              max_body_bytes=self.options.max_message_bytes) as consumer:
                self._consumer = consumer
                if self._stopping.is_set():
                    consumer.stop()
                self._log_start()
                self._loop(consumer)
        except BusError as error:
            raise BrokerLost(f"{error}; unacknowledged messages will be delivered again") from error
        finally:
            self._consumer = None
            if pool is not None:
                pool.close()

    def _log_start(self) -> None:
        assert self.settings.amqp_url is not None
        log.info("worker started: broker %s, queues %s, prefetch %d, %d render processes, messages up to %d bytes",
                 mask_url(self.settings.amqp_url), ", ".join(self.topology.queues.values()), self.options.prefetch,
                 self._processes, self.options.max_message_bytes)

    def _loop(self, consumer: bus.Consumer) -> None:
        while not self._stopping.is_set():
            batch = self._take(consumer)
            if not batch:
                return
            self.counts["received"] += len(batch)
            self._handle(consumer, batch)
            self._heartbeat.beat_if_due()
            if self.options.max_messages is not None and self.counts["received"] >= self.options.max_messages:
                return

    def _take(self, consumer: bus.Consumer) -> list[bus.Delivery]:
        """The next batch: wait for one delivery, then take what arrives within GATHER_S, up to the batch size."""
        first = self._first(consumer)
        if first is None:
            return []
        limit = self.options.batch_size
        if self.options.max_messages is not None:
            limit = min(limit, self.options.max_messages - self.counts["received"])
        batch = [first]
        if len(batch) < limit:
            for delivery in consumer.deliveries(idle_timeout_s=GATHER_S):
                batch.append(delivery)
                if len(batch) >= limit:
                    break
        return batch

    def _first(self, consumer: bus.Consumer) -> bus.Delivery | None:
        """Wait for a delivery (None: stopped, or idle for ``idle_exit_s``), beating the heartbeat meanwhile."""
        idle_since = time.monotonic()
        while not self._stopping.is_set():
            wait = self._heartbeat.due_in()
            if self.options.idle_exit_s is not None:
                left = self.options.idle_exit_s - (time.monotonic() - idle_since)
                if left <= 0:
                    return None
                wait = min(wait, left)
            for delivery in consumer.deliveries(idle_timeout_s=wait):
                return delivery
            self._heartbeat.beat_if_due()
        return None

    def _handle(self, consumer: bus.Consumer, batch: list[bus.Delivery]) -> None:
        """Handle the fresh deliveries together and each redelivered one alone."""
        fresh = [d for d in batch if not d.redelivered]
        if fresh:
            self._guarded(consumer, fresh)
        for delivery in batch:
            if delivery.redelivered:
                if delivery.oversize:
                    self._guarded(consumer, [delivery])  # rejected unread: nothing to count
                else:
                    self._redelivered(consumer, delivery)

    def _redelivered(self, consumer: bus.Consumer, delivery: bus.Delivery) -> None:
        """Handle a redelivered message alone, unless a worker already died handling it alone."""
        key = deliveries.key_of(delivery.kind, delivery.body)
        try:
            attempts = deliveries.attempt(self.db, key, now=datetime.now(UTC))
        except CatalogUnavailable as error:
            self._requeue_unanswered(consumer, [delivery], error)
            return
        if attempts > self.options.max_alone_attempts:
            self._reject_invalid(consumer, delivery, f"delivered again after {attempts - 1} attempts that ended "
                                                     "without an answer (a worker died while handling it)")
        else:
            self._guarded(consumer, [delivery])
        try:
            deliveries.forget(self.db, [key])
        except CatalogUnavailable as error:
            log.warning("%s; the delivery record %s stays until the message comes back", error, key)

    def _guarded(self, consumer: bus.Consumer, batch: list[bus.Delivery]) -> None:
        """Handle a batch; on an unexpected exception, its unanswered messages one by one, rejecting the culprit."""
        try:
            tasks = self._tasks(consumer, batch)
            self._render_and_record(consumer, self._answer_known(consumer, tasks))
        except CatalogUnavailable as error:
            self._requeue_unanswered(consumer, batch, error)
        except BusError:
            raise
        except Exception as error:  # noqa: BLE001 - any fault tied to a message must not stop the worker
            unanswered = [d for d in batch if not consumer.answered(d)]
            if len(batch) == 1:
                log.debug("handling a message raised", exc_info=True)
                for delivery in unanswered:
                    self._reject_invalid(consumer, delivery, f"handling it raised {type(error).__name__}: {error}")
                return
            log.warning("handling a batch of %d messages raised %s; handling its %d unanswered messages one by one",
                        len(batch), for_log(f"{type(error).__name__}: {error}"), len(unanswered))
            for delivery in unanswered:
                self._guarded(consumer, [delivery])

    def _requeue_unanswered(self, consumer: bus.Consumer, batch: list[bus.Delivery], error: Exception) -> None:
        unanswered = [d for d in batch if not consumer.answered(d)]
        log.warning("%s; %d messages go back to the queue", error, len(unanswered))
        self._backoff()
        for delivery in unanswered:
            self._answer(consumer.requeue, delivery, "requeued")

    def _answer(self, how: Callable[[bus.Delivery], None], delivery: bus.Delivery, outcome: str) -> None:
        how(delivery)
        self.counts[outcome] += 1

    def _tasks(self, consumer: bus.Consumer, batch: list[bus.Delivery]) -> list[_Task]:
        """Decode the batch (rejecting what is invalid) and read its records in one query."""
        decoded: list[tuple[bus.Delivery, messages.RebuildRequest]] = []
        for delivery in batch:
            if delivery.oversize:
                self._reject_invalid(consumer, delivery, f"body of {delivery.size} bytes is over the limit of "
                                                         f"{self.options.max_message_bytes} bytes")
                continue
            try:
                decoded.append((delivery, messages.decode(delivery.body, root_of=self._root_of,
                                                          max_bytes=self.options.max_message_bytes)))
            except InvalidMessage as error:
                self._reject_invalid(consumer, delivery, error.reason)
        records = rebuilds.records_by_id(self.db, (request.image_id for _, request in decoded))
        tasks: dict[str, _Task] = {}
        for delivery, request in decoded:
            record = records.get(request.image_id)
            if record is not None and record.library != request.library_id:
                self._reject_invalid(consumer, delivery, f"image {messages.shown(request.image_id)} is not in "
                                                         f"library {messages.shown(request.library_id)}")
                continue
            task = tasks.get(request.message_id)
            if task is None:
                task = tasks[request.message_id] = _Task(request, record or _GONE)
            task.deliveries.append(delivery)
        return list(tasks.values())

    def _root_of(self, library: str) -> str | None:
        if library not in self._roots:
            self._roots = rebuilds.library_roots(self.db)
            self._following = rebuilds.following_symlinks(self.db)
        return self._roots.get(library)

    def _reject_invalid(self, consumer: bus.Consumer, delivery: bus.Delivery, reason: str) -> None:
        log.warning("rejected message %s from %s: %s", for_log(delivery.message_id or "(no id)"),
                    self.topology.queues[delivery.kind], for_log(reason))
        self._answer(consumer.reject, delivery, "invalid")
    def _answer_known(self, consumer: bus.Consumer, tasks: list[_Task]) -> list[_Task]:
        """Acknowledge what needs no rendering; returns the tasks to render."""
        work = []
        for task in tasks:
            request, record = task.request, task.record
            if record is _GONE or not record.present or record.hash != request.content_hash:
                self._ack(consumer, task, "skipped")
            elif record.wants(request.kind, rebuilds.DONE):
                self._ack(consumer, task, "duplicate")
            else:
                work.append(task)
        # Cache images first: the thumbnails of the same images are then rendered from them.
        return sorted(work, key=lambda task: messages.KINDS.index(task.request.kind))

    def _ack(self, consumer: bus.Consumer, task: _Task, outcome: str) -> None:
        for delivery in task.deliveries:
            self._answer(consumer.ack, delivery, outcome)

    def _jobs(self, tasks: list[_Task]) -> Iterator[RenderJob]:
        root_of = self._roots
        for index, task in enumerate(tasks):
            if self._stopping.is_set():
                return  # SIGTERM: finish the images under way, leave the rest to the queue
            request = task.request
            library = task.record.library
            yield render_job(index, root_of[library], library in self._following, task.record, request.kind,
                             request.content_hash, self._specs[request.kind],
                             force=request.force_regenerate or task.record.force)

    def _render_and_record(self, consumer: bus.Consumer, tasks: list[_Task]) -> None:
        assert self._render is not None
        outcomes: dict[int, RenderOutcome] = {}
        for outcome in self._render(self._jobs(tasks)):
            assert isinstance(outcome.key, int)
            outcomes[outcome.key] = outcome
        now = datetime.now(UTC)
        results = [r for i, o in outcomes.items() if (r := render_result((tasks[i].record, tasks[i].request.kind), o))]
        if results:
            rebuilds.record_results(self.db, results, now=now)
        drop_orphaned(self.db, [(tasks[i].record.id, tasks[i].request.kind, tasks[i].request.content_hash, o.path)
                                for i, o in outcomes.items() if o.status == renderpool.DONE and o.path is not None])
        unserved = [(tasks[i].record.id, tasks[i].request.kind, tasks[i].request.content_hash)
                    for i, o in outcomes.items() if o.status in (renderpool.SKIPPED, renderpool.CHANGED)]
        if unserved:
            rebuilds.unqueue(self.db, unserved, now=now)
        retry: list[_Task] = []
        for index, task in enumerate(tasks):
            outcome = outcomes.get(index)
            if outcome is None or outcome.transient:
                if outcome is not None:
                    log.warning("%s: %s; retrying later", for_log(task.record.path), for_log(outcome.error))
                retry.append(task)
            elif outcome.status == renderpool.FAILED:
                log.warning("%s (%s): %s", for_log(task.record.path), task.request.kind, for_log(outcome.error))
                for delivery in task.deliveries:
                    self._answer(consumer.reject, delivery, "failed")
            else:
                self._ack(consumer, task, outcome.status)
        if any(outcome.transient for outcome in outcomes.values()):
            self._backoff()
        else:
            self._transient_streak = 0
        for task in retry:
            for delivery in task.deliveries:
                self._answer(consumer.requeue, delivery, "requeued")

    def _backoff(self) -> None:
        delay = BACKOFF_S[min(self._transient_streak, len(BACKOFF_S) - 1)]
        self._transient_streak += 1
        self._stopping.wait(delay)


_GONE: Final = FileState(id="", library="", path="", path_b64=None, collection="", hash=None, present=False)

