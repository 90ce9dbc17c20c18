"""`libwatch rebuild`: ask for cache images and thumbnails of a scope to be rebuilt, or render them here.

Publishing mode marks the selected records ``pending`` and lets the outbox publish
them (so a broker outage loses nothing); ``run_here`` (``--run``, and always
without a broker) renders them in a process pool and records ``done``/``failed``
directly. Selections: ``pending`` (what is pending, plus what has been queued for
longer than the queued timeout: a message lost or purged), ``missing`` (the
rendering is not in the cache folder), ``failed`` (what `libwatch failed` lists: each
unreadable header is read again first, and the failed renders of every file whose header
now reads, or never decided it, are asked for again) and ``all`` (everything, forced, at a
low priority so that it never starves the changes a scan finds).
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from pymongo.database import Database

from libwatch import cachefiles, messages, renderpool
from libwatch.bus import Topology
from libwatch.catalog import libraries as catalog_libraries
from libwatch.catalog import rebuilds, runs
from libwatch.catalog.rebuilds import FileState, RenderResult, Scope
from libwatch.config import Settings
from libwatch.core.paths import raw_of
from libwatch.errors import EXIT_OK, UsageError
from libwatch.imaging import DEFAULT_SPECS, RenderSpec
from libwatch.library import Library
from libwatch.messages import CACHE, THUMBNAIL
from libwatch.quantity import count
from libwatch.renderpool import RenderJob, RenderOutcome
from libwatch.result import Problem, Result
from libwatch.services import cleanup, outbox
from libwatch.services.probing import probe_header

SELECTIONS: Final = ("pending", "missing", "failed", "all")
# A thumbnail is rendered from the image's cache image when the cache holds it: the
# cache kind comes first in rebuilds.KINDS, so a batch renders it first.
DERIVED_FROM: Final = {THUMBNAIL: CACHE}
BULK_PRIORITY: Final = 1
QUEUED_TIMEOUT_S: Final = 3600.0
MAX_FAILURES_SHOWN: Final = 100

Db = Database[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RebuildOptions:
    """What to rebuild and how; ``kinds`` None means each library's own choice."""

    selection: str = "pending"
    kinds: tuple[str, ...] | None = None
    collection: str | None = None
    path: str | None = None
    priority: int | None = None
    run_here: bool = False
    queued_timeout_s: float = QUEUED_TIMEOUT_S
    trigger: str = "manual"

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise UsageError(f"selection must be one of {', '.join(SELECTIONS)}, not {self.selection!r}")
        if self.priority is not None and not 0 <= self.priority <= 10:
            raise UsageError(f"--priority must be 0..10, not {self.priority}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RebuildResult(Result):
    """One rebuild run: what it selected and rendered or published (``counts``), and the renders
    that did not succeed (``failures``, at most MAX_FAILURES_SHOWN; those that failed for good are
    also its ``problems``, kind ``cache`` or ``thumbnail``: the status is then ``partial``).

    Exit 0 even then: per-file problems are listed in ``libwatch failed``, and a unit should not
    fail for one unreadable photo (README: exit codes).
    """

    run_id: str
    mode: str  # "run" (rendered here) or "publish"
    selection: str
    libraries: tuple[str, ...]
    started_at: datetime
    finished_at: datetime
    counts: dict[str, int]
    failures: tuple[dict[str, Any], ...] = ()

    @property
    def exit_code(self) -> int:
        return EXIT_OK

    def data(self) -> dict[str, Any]:
        """The `rebuild --json` document's own fields."""
        return {"run_id": self.run_id, "mode": self.mode, "selection": self.selection,
                "libraries": list(self.libraries), "started_at": self.started_at, "finished_at": self.finished_at,
                "counts": self.counts, "failures": list(self.failures)}


def render_specs(settings: Settings) -> dict[str, RenderSpec]:
    """How each kind is rendered, from the settings (sizes, format)."""
    edges = {CACHE: settings.cache_edge, THUMBNAIL: settings.thumbnail_edge}
    return {kind: replace(spec, max_edge=edges[kind], format=settings.image_format)
            for kind, spec in DEFAULT_SPECS.items()}


def render_job(key: object, root: str, follow_symlinks: bool, record: FileState, kind: str, content_hash: str,
               spec: RenderSpec, *, force: bool) -> RenderJob:
    """The job rendering ``record``'s file, opened beneath its library ``root`` (its name may not be UTF-8).

    The render pool renders only bytes hashing to ``content_hash`` and never follows a
    link out of ``root`` (none at all unless the library follows links).
    """
    return RenderJob(key, raw_of(record.path, record.path_b64), kind, content_hash, spec, force=force,
                     derive_from=DERIVED_FROM.get(kind), root=os.fsencode(root), follow_symlinks=follow_symlinks)


def render_result(key: tuple[FileState, str], outcome: RenderOutcome) -> RenderResult | None:
    """What to record of a finished rendering; None when nothing may be recorded (vanished, changed, transient)."""
    record, kind = key
    assert record.hash is not None
    if outcome.status == renderpool.DONE:
        return RenderResult(record.id, kind, record.hash)
    if outcome.status == renderpool.FAILED and not outcome.transient:
        return RenderResult(record.id, kind, record.hash, outcome.error or "failed")
    return None


def drop_orphaned(db: Db, rendered: Sequence[tuple[str, str, str, Path]]) -> int:
    """Delete renderings just written whose record is gone meanwhile (its library removed with
    ``--purge``, the record cleaned up), unless another record names that content; how many went.

    ``rendered`` holds ``(record id, kind, content hash, path)``; call it after recording the
    results, so that a record removed after this check is seen by its remover with the file there.
    """
    if not rendered:
        return 0
    alive = rebuilds.records_by_id(db, {record_id for record_id, *_ in rendered})
    gone = [(kind, content_hash, path) for record_id, kind, content_hash, path in rendered if record_id not in alive]
    return cleanup.remove_cached_files(db, gone) if gone else 0


def _relative(library: Library, path: str | None) -> str | None:
    if path is None:
        return None
    if os.path.isabs(path):
        root = os.path.normpath(library.path)
        normal = os.path.normpath(path)
        if os.path.commonpath([root, normal]) != root:
            raise UsageError(f"--path {path} is not inside the library {library.name} ({library.path})")
        path = os.path.relpath(normal, root)
    path = path.strip("/")
    return "" if path == "." else path


def _wanted(db: Db, settings: Settings, library: Library, scope: Scope, kinds: Sequence[str],
            options: RebuildOptions, counts: Counter[str]) -> Iterator[tuple[list[FileState], str]]:
    """The selected records, a page and a kind at a time."""
    if options.selection == "pending":
        cutoff = datetime.now(UTC) - timedelta(seconds=options.queued_timeout_s)
        counts["requeued_stale"] += rebuilds.requeue_stale(db, scope, kinds, queued_before=cutoff)
        for page in rebuilds.pending_pages(db, scope, kinds):
            for kind in kinds:
                yield [r for r in page if r.wants(kind, rebuilds.PENDING)], kind
        return
    if options.selection == "failed":
        for page in rebuilds.failed_pages(db, scope, kinds):
            hopeless = _probe_again(db, library, page, counts)
            for kind in kinds:
                yield [r for r in page if r.wants(kind, rebuilds.FAILED) and r.id not in hopeless], kind
        return
    for page in rebuilds.record_pages(db, scope):
        for kind in kinds:
            chosen = [r for r in page if r.hash is not None]
            if options.selection == "missing":
                chosen = [r for r in chosen if cachefiles.existing(settings.cache_dir, kind, r.hash or "") is None]
            yield chosen, kind


def _probe_again(db: Db, library: Library, page: Sequence[FileState], counts: Counter[str]) -> set[str]:
    """Read again the headers that could not be read; returns the ids of those no render can succeed for.

    Their renders stay failed, with the new reason and time; a header that reads now is
    recorded and its failed renders are retried.
    """
    probed = [(record, probe_header(library.path, raw_of(record.path, record.path_b64)))
              for record in page if record.probe_error and record.hash is not None]
    now = datetime.now(UTC)
    rebuilds.record_probes(db, probed, now=now)
    counts["headers_read"] += sum(1 for _, probe in probed if probe.error is None)
    counts["headers_unreadable"] += sum(1 for _, probe in probed if probe.error is not None)
    hopeless = [(record, probe) for record, probe in probed if probe.hopeless]
    rebuilds.record_results(db, [RenderResult(record.id, kind, record.hash or "", probe.error or "")
                                 for record, probe in hopeless for kind in messages.KINDS
                                 if record.wants(kind, rebuilds.FAILED)], now=now)
    return {record.id for record, _ in hopeless}


def _publish(db: Db, settings: Settings, library: Library, scope: Scope, kinds: Sequence[str],
             options: RebuildOptions, topology: Topology | None, counts: Counter[str]) -> None:
    """Mark the selection pending, then let the outbox publish everything pending in scope."""
    priority = options.priority
    if options.selection == "pending":
        cutoff = datetime.now(UTC) - timedelta(seconds=options.queued_timeout_s)
        counts["requeued_stale"] += rebuilds.requeue_stale(db, scope, kinds, queued_before=cutoff)
    else:
        bulk = options.selection == "all"
        stored = priority if priority is not None else BULK_PRIORITY if bulk else messages.DEFAULT_PRIORITY
        now = datetime.now(UTC)
        for records, kind in _wanted(db, settings, library, scope, kinds, options, counts):
            counts["selected"] += len(records)
            rebuilds.mark_pending(db, records, [kind], priority=stored, force=bulk, now=now)
        priority = None  # each request carries the priority stored with it
    result = outbox.publish_pending(db, settings, kinds=kinds, scope=scope, topology=topology, priority=priority)
    counts["published"] += result["published"]
    counts["pending"] += result["pending"]
    if options.selection == "pending":
        counts["selected"] += result["published"]


def _jobs(settings: Settings, library: Library, selected: Iterable[tuple[list[FileState], str]],
          force: bool) -> Iterator[RenderJob]:
    specs = render_specs(settings)
    for records, kind in selected:
        for record in records:
            assert record.hash is not None
            yield render_job((record, kind), library.path, library.follow_symlinks, record, kind, record.hash,
                             specs[kind], force=force or record.force)


def _render_here(db: Db, settings: Settings, library: Library, scope: Scope, kinds: Sequence[str],
                 options: RebuildOptions, pool: renderpool.RenderPool, counts: Counter[str],
                 failures: list[dict[str, Any]], progress: Callable[[int], None]) -> None:
    jobs = _jobs(settings, library, _wanted(db, settings, library, scope, kinds, options, counts),
                 force=options.selection == "all")
    results: list[RenderResult] = []
    rendered: list[tuple[str, str, str, Path]] = []
    try:
        for outcome in pool.render_many(jobs):
            counts["selected"] += 1
            progress(1)
            record, kind = outcome.key  # type: ignore[misc]
            counts["retry" if outcome.transient else outcome.status] += 1
            if outcome.status != renderpool.DONE and len(failures) < MAX_FAILURES_SHOWN:
                failures.append({"path": record.path, "kind": kind, "error": outcome.error,
                                 "status": "retry" if outcome.transient else outcome.status})
            result = render_result((record, kind), outcome)
            if result is not None:
                results.append(result)
            if outcome.status == renderpool.DONE and outcome.path is not None:
                rendered.append((record.id, kind, record.hash, outcome.path))
            if len(results) >= rebuilds.PAGE:
                _record(db, results, rendered)
                results, rendered = [], []
    except KeyboardInterrupt:
        # Ctrl-C: what was rendered is recorded done, so the catalog agrees with the counts shown.
        _record(db, results, rendered)
        raise
    _record(db, results, rendered)


def _record(db: Db, results: list[RenderResult], rendered: list[tuple[str, str, str, Path]]) -> None:
    if results:
        rebuilds.record_results(db, results, now=datetime.now(UTC))
    drop_orphaned(db, rendered)


def rebuild(db: Db, settings: Settings, library: str | None, options: RebuildOptions, *,
            topology: Topology | None = None, processes: int | None = None,
            progress: Callable[[int], None] = lambda _done: None) -> RebuildResult:
    """Rebuild the selection of one library (all libraries when None), recorded as a ``rebuild`` run.

    ``progress`` is called with 1 for each rendering finished here (``--run``).
    """
    libraries = [catalog_libraries.get(db, library)] if library else catalog_libraries.all_libraries(db)
    if (options.collection is not None or options.path is not None) and library is None:
        raise UsageError("--collection and --path need a library name")
    run_here = options.run_here or not settings.amqp_url
    counts: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []
    started = datetime.now(UTC)
    with runs.recorded(db, "rebuild", library, options.trigger, selection=options.selection,
                       mode="run" if run_here else "publish") as run:
        run.counts = counts
        pool = (renderpool.RenderPool(settings.cache_dir, processes=processes, file_mode=settings.cache_mode)
                if run_here else None)
        try:
            for lib in libraries:
                kinds = options.kinds if options.kinds is not None else lib.rebuild_kinds
                scope = Scope(lib.name, options.collection, _relative(lib, options.path))
                if not kinds:
                    continue
                if pool is not None:
                    _render_here(db, settings, lib, scope, kinds, options, pool, counts, failures, progress)
                else:
                    _publish(db, settings, lib, scope, kinds, options, topology, counts)
        finally:
            if pool is not None:
                pool.close()
        if counts["failed"]:  # per-file problems: the run is partial and says how many (exit 0 stays)
            run.problem(f"{count(counts['failed'], 'rendering')} failed (libwatch failed lists them)")
    return RebuildResult(
        run_id=run.run_id, mode="run" if run_here else "publish", selection=options.selection,
        libraries=tuple(lib.name for lib in libraries), started_at=started, finished_at=datetime.now(UTC),
        counts=_counts(counts, run_here, options.selection), failures=tuple(failures),
        problems=tuple(Problem(f["path"], f["kind"], f["error"] or "failed")
                       for f in failures if f["status"] == renderpool.FAILED))


def _counts(counts: Counter[str], run_here: bool, selection: str) -> dict[str, int]:
    keys = ("selected", "done", "failed", "skipped", "changed", "retry") if run_here \
        else ("selected", "published", "pending")
    probes = ("headers_read", "headers_unreadable") if selection == "failed" else ()
    return {key: counts[key] for key in (*keys, *probes, "requeued_stale")}

