"""Scan and diff: walk a library, compare it with the catalog, record what changed.

`plan` is detection only (walk, match, hash, classify: the result is pure data);
`diff` renders a plan; `scan` takes the library's lease, applies the plan with
batched idempotent writes, publishes rebuild requests from the outbox and records the
run. The same `plan` serves both, so diff and scan can never disagree.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pymongo.database import Database

from libwatch import statindex
from libwatch.catalog import files as catalog_files
from libwatch.catalog import libraries as catalog_libraries
from libwatch.catalog import runs
from libwatch.catalog.locks import Lease
from libwatch.config import Settings
from libwatch.core import diff as engine
from libwatch.core.diff import (
    ADDED,
    CORRUPTED,
    DELETED,
    MODIFIED,
    RENAMED,
    Change,
    Record,
)
from libwatch.core.hashing import Fingerprint, hash_files
from libwatch.core.paths import b64_of, collection_of, is_exact
from libwatch.core.parallel_walk import walk
from libwatch.core.walk import (
    DiskEntry,
    FolderCheck,
    Same,
    Skip,
    WalkOptions,
    reason_of,
)
from libwatch.errors import GuardRefused, RootNotListable, RootUnavailable
from libwatch.library import Library
from libwatch.messages import DEFAULT_PRIORITY

log = logging.getLogger("libwatch.scan")

# Timestamps closer than this to the scan's start may hide a later same-size write
# (git's "racy clean"): such records are hashed again next time. 2 s covers FAT/SMB.
GRANULARITY_NS: Final = 2_000_000_000
ERROR_REASONS: Final = frozenset({"io-error"})
# Below this many files the walk takes a few tens of milliseconds: forking worker processes
# would save about what it costs. (A first scan has no index to tell: it is bound by hashing.)
PARALLEL_WALK_FILES: Final = 10_000
FILE_CHANGES: Final = engine.CHANGE_TYPES

Db = Database[dict[str, Any]]
Progress = Callable[[str, int], None]


def _no_progress(phase: str, amount: int) -> None:
    """The default progress sink: nothing to show."""


@dataclass(frozen=True, slots=True)
class ScanOptions:
    verify: bool = False
    settle_s: float = 0.0
    trigger: str = "manual"
    dry_run: bool = False
    publish: bool = True
    allow_mass_delete: bool = False
    max_delete: float | None = None
    wait_lock_s: float = 0.0
    priority: int = DEFAULT_PRIORITY


@dataclass(slots=True)
class Plan:
    """Everything a scan would record; built without writing anything."""

    library: Library
    started_at: datetime
    changes: list[Change] = field(default_factory=list)
    refresh: list[engine.Confirmed] = field(default_factory=list)
    rehashed: list[Record] = field(default_factory=list)
    fingerprints: int = 0
    skipped: list[Skip] = field(default_factory=list)
    probes: dict[str, catalog_files.Probe] = field(default_factory=dict)
    tallies: dict[str, tuple[int, int]] = field(default_factory=dict)
    collections_before: dict[str, dict[str, Any]] = field(default_factory=dict)
    collections_added: list[str] = field(default_factory=list)
    collections_removed: list[str] = field(default_factory=list)
    scanned: int = 0
    unchanged: int = 0
    present_before: int = 0  # catalog records met in the merge
    hashed_bytes: int = 0
    used_index: bool = False
    spool: statindex.Spool | None = None

    @property
    def counts(self) -> dict[str, int]:
        by_type = Counter(change.type for change in self.changes)
        errors = sum(1 for s in self.skipped if s.reason in ERROR_REASONS) + sum(
            1 for p in self.probes.values() if p.error)
        return {"scanned": self.scanned, "unchanged": self.unchanged,
                **{kind: by_type.get(kind, 0) for kind in FILE_CHANGES},
                "skipped": sum(1 for s in self.skipped if s.reason not in ERROR_REASONS), "errors": errors,
                "collections_added": len(self.collections_added),
                "collections_removed": len(self.collections_removed), "hashed_bytes": self.hashed_bytes}

    @property
    def has_changes(self) -> bool:
        return bool(self.changes or self.collections_added or self.collections_removed)


@dataclass(frozen=True, slots=True)
class ScanReport:
    """The result of one scan or diff, as the JSON document of DESIGN.md."""

    document: dict[str, Any]
    exit_code: int = 0


def walk_options(library: Library) -> WalkOptions:
    return WalkOptions(include=library.include, exclude=library.exclude, hidden=library.hidden,
                       follow_symlinks=library.follow_symlinks, cross_mounts=library.cross_mounts)


def _catalog_identity(settings: Settings) -> str:
    where = settings.mongo_uri or f"embedded:{settings.store_dir}"
    return f"{where.split('@')[-1]}|{settings.database}"


def _index_file(settings: Settings, library: Library) -> Path:
    return statindex.index_path(settings.home, _catalog_identity(settings), library.name)


def _index_root(library: Library) -> str:
    return library.path + "|" + str(library.created_at)


def _open_index(settings: Settings, library: Library, plan: Plan) -> statindex.Index | None:
    index = statindex.read(_index_file(settings, library), library=library.name, generation=library.generation,
                           root=_index_root(library))
    plan.used_index = index is not None
    if index is None:
        log.info("reading the catalog of %s (no valid local index)", library.name)
    return index


def _folder_check(digests: dict[str, bytes], settle_cutoff_ns: int | None) -> FolderCheck:
    """Whether a folder's walked files are exactly those of the index (then none of them is looked at again)."""

    def unchanged(folder: str, files: list[DiskEntry]) -> bool:
        expected = digests.get(folder)
        if expected is None:
            return False
        if settle_cutoff_ns is not None and any(engine.recently_written(entry, settle_cutoff_ns) for entry in files):
            return False  # settling files are reported as skipped, as the per-file match does
        return statindex.folder_digest(files) == expected

    return unchanged


def walk_workers(files: int) -> int:
    """Processes for walking a library of about ``files`` images: one per CPU this process may run on, if large."""
    return len(os.sched_getaffinity(0)) if files >= PARALLEL_WALK_FILES else 1


def _root_is_empty(root: str) -> bool:
    """Whether the root has no entries at all (an unmounted mount point); raises if it cannot be listed."""
    try:
        with os.scandir(root) as entries:
            return next(entries, None) is None
    except OSError as error:
        raise RootUnavailable(f"library root {root} is unavailable: {error.strerror}; nothing was changed") from None


def _refuse_empty_root(root: str, result: Plan) -> None:
    """Refuse to treat an unmounted or empty root as 'everything deleted'."""
    if result.present_before:
        raise RootUnavailable(f"library root {root} is empty while the catalog has {result.present_before} "
                              "files (an unmounted share?); nothing was marked deleted")


def plan(db: Db, settings: Settings, library: Library, options: ScanOptions, *,
         progress: Progress = _no_progress, spool: bool = False) -> Plan:
    """Detect what changed between the disk and the catalog; writes nothing to the catalog."""
    now = statindex.clock_ns(_index_file(settings, library))
    result = Plan(library=library, started_at=datetime.now(UTC),
                  spool=statindex.Spool(_index_file(settings, library)) if spool else None)
    root_empty = _root_is_empty(library.path)
    settle_cutoff = now - int(options.settle_s * 1e9) if options.settle_s > 0 else None
    needs_hash: list[engine.NeedsHash] = []
    gone: list[engine.Gone] = []
    tallies: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    index = _open_index(settings, library, result)
    check = _folder_check(index.folders, settle_cutoff) if index is not None and not options.verify else None
    try:
        with contextlib.closing(walk(library.path, walk_options(library), unchanged=check,
                                     workers=walk_workers(index.count if index is not None else 0))) as walked:
            # Read while the walk's worker processes are under way.
            result.collections_before = catalog_files.collection_documents(db, library.name)
            records = index.spans() if index is not None else catalog_files.present_records(
                db, library.name, result.collections_before)
            disk = _counted(walked, result, progress)
            for verdict in engine.match(disk, records, verify=options.verify, settle_cutoff_ns=settle_cutoff):
                _sort_verdict(verdict, result, needs_hash, gone, tallies)
    except RootNotListable as error:
        raise RootUnavailable(f"library root {library.path} is unavailable: {error.strerror}; "
                              "nothing was changed") from None
    hashed = list(_hashed(library, needs_hash, result, tallies, progress))
    classified = engine.classify(hashed, gone, scan_started_ns=now, granularity_ns=GRANULARITY_NS,
                                 scan_ended_ns=statindex.clock_ns(_index_file(settings, library)),
                                 verify=options.verify)
    _absorb(classified, result)
    if root_empty:
        _refuse_empty_root(library.path, result)
    result.tallies = {path: (count, size) for path, (count, size) in tallies.items() if count}
    before = {path for path, doc in result.collections_before.items() if doc.get("missing_since") is None}
    result.collections_added = sorted(set(result.tallies) - before)
    result.collections_removed = sorted(before - set(result.tallies))
    _probe(library.path, result)
    return result


def _counted(items: Iterable[DiskEntry | Skip | Same], result: Plan,
             progress: Progress) -> Iterator[DiskEntry | Skip | Same]:
    shown = 0
    for item in items:
        kind = type(item)
        if kind is DiskEntry:
            result.scanned += 1
        elif kind is Same:
            result.scanned += item.files  # type: ignore[union-attr]
        if result.scanned - shown >= 1000:
            progress("walk", result.scanned - shown)
            shown = result.scanned
        yield item


def _sort_verdict(verdict: Any, result: Plan, needs_hash: list[engine.NeedsHash], gone: list[engine.Gone],
                  tallies: dict[str, list[int]]) -> None:
    kind = type(verdict)
    if kind is Same:  # a whole folder as the index has it: its records were not read one by one
        result.present_before += verdict.files
        result.unchanged += verdict.files
        tally = tallies[verdict.path]
        tally[0] += verdict.files
        tally[1] += verdict.size
        if result.spool is not None:
            result.spool.carry(verdict.path)
        return
    if kind is not Skip and (kind is not engine.NeedsHash or verdict.record is not None):
        result.present_before += 1  # a catalog record met in the merge
    if kind is engine.Unchanged or kind is engine.Kept:
        # Both leave the record as it is: it counts in its folder and goes to the new index.
        # (A Kept record's skip comes through the merge as its own verdict: listing it here
        # too would report a folder once per record under it.)
        result.unchanged += kind is engine.Unchanged
        record = verdict.record
        tally = tallies[collection_of(record.path)]
        tally[0] += 1
        tally[1] += record.size
        if result.spool is not None:
            result.spool.add(record)
    elif kind is engine.NeedsHash:
        needs_hash.append(verdict)
    elif kind is engine.Gone:
        gone.append(verdict)
    else:
        result.skipped.append(verdict)


def _hashed(library: Library, needs_hash: list[engine.NeedsHash], result: Plan, tallies: dict[str, list[int]],
            progress: Progress) -> Iterator[tuple[engine.NeedsHash, Fingerprint | Skip]]:
    """Hash what needs it, tallying every file still present and keeping the records it re-hashed."""
    def count(nbytes: int) -> None:
        result.hashed_bytes += nbytes
        progress("hash", nbytes)

    # The hasher must follow links exactly when the walk did, or it refuses the files the walk found.
    outcomes = hash_files(os.fsencode(library.path), (item.entry for item in needs_hash),
                          follow_symlinks=library.follow_symlinks, progress=count)
    for needs, outcome in zip(needs_hash, outcomes, strict=True):
        present = outcome.entry if type(outcome) is Fingerprint else needs.record
        if present is not None:
            tally = tallies[collection_of(present.path)]
            tally[0] += 1
            tally[1] += present.size
        if type(outcome) is Fingerprint:
            result.fingerprints += 1
        if needs.record is not None:
            result.rehashed.append(needs.record)
        yield needs, outcome


def _absorb(classified: engine.Classified, result: Plan) -> None:
    result.changes = list(classified.changes)
    result.refresh = list(classified.confirmed)
    result.skipped.extend(skip for skip, _ in classified.skipped)
    result.unchanged += result.fingerprints - sum(1 for c in result.changes if c.type != DELETED)


def _probe(root: str, result: Plan) -> None:
    probed = [(change.path, change.entry) for change in result.changes
              if change.type in (ADDED, MODIFIED, CORRUPTED) and change.entry is not None]
    if not probed:
        return
    # Imported here: Pillow (about 25 ms to import) only when something was added or changed.
    from libwatch import imaging

    for path, entry in probed:
        try:
            info = imaging.probe(os.path.join(os.fsencode(root), entry.raw))
            result.probes[path] = catalog_files.Probe(info.width, info.height, info.format)
        except imaging.ImageError as error:
            result.probes[path] = catalog_files.Probe(error=error.reason)
        except OSError as error:  # gone, unreadable or turned into a folder since it was hashed
            result.probes[path] = catalog_files.Probe(error=f"{reason_of(error)}: {error.strerror or error}")


def check_guards(result: Plan, options: ScanOptions) -> None:
    """Refuse a mass deletion unless allowed."""
    deleted = sum(1 for change in result.changes if change.type == DELETED)
    limit = result.library.max_delete if options.max_delete is None else options.max_delete
    if deleted and not options.allow_mass_delete and deleted > limit * max(result.present_before, 1):
        raise GuardRefused(f"{result.library.name}: {deleted} of {result.present_before} files would be marked "
                           f"deleted (more than {limit:.0%}); nothing was changed. If that is right, run again "
                           "with --allow-mass-delete")


def _activity(result: Plan, rebuild_kinds: tuple[str, ...]) -> dict[str, Counter[str]]:
    per_collection: dict[str, Counter[str]] = defaultdict(Counter)
    for change in result.changes:
        seen = per_collection[collection_of(change.path)]
        seen[change.type] += 1
        if change.type in (ADDED, MODIFIED, CORRUPTED) and rebuild_kinds:
            seen["pending"] += len(rebuild_kinds)
    return per_collection


def apply(db: Db, result: Plan, run_id: str, lease: Lease, *, priority: int) -> int:
    """Record the plan in the catalog; returns the number of rebuild requests made pending."""
    library, now = result.library, datetime.now(UTC)
    name, kinds = library.name, library.rebuild_kinds
    missing = catalog_files.missing_paths(db, name) if result.changes else set()
    revive = {c.path for c in result.changes if c.type == ADDED and c.path in missing}
    catalog_files.clear_missing_targets(db, name, [c.path for c in result.changes
                                                   if c.type == RENAMED and c.path in missing])
    check = lease.check
    catalog_files.write_batches(db, "files", catalog_files.file_operations(
        name, result.changes, revive=revive, probes=result.probes, rebuild_kinds=kinds, now=now, priority=priority),
        before_batch=check)
    catalog_files.write_batches(db, "files", catalog_files.refresh_operations(name, result.refresh, now),
                                before_batch=check)
    catalog_files.write_batches(db, "events", catalog_files.event_operations(name, result.changes, run_id, now),
                                before_batch=check)
    catalog_files.write_batches(db, "events", catalog_files.collection_event_operations(
        name, result.collections_added, result.collections_removed, run_id, now), before_batch=check)
    catalog_files.write_batches(db, "collections", catalog_files.collection_operations(
        name, result.tallies, result.collections_before, _activity(result, kinds), now), before_batch=check)
    return sum(len(kinds) for c in result.changes if c.type in (ADDED, MODIFIED, CORRUPTED))


def _written_records(result: Plan) -> Iterable[Record]:
    """The records the index must hold besides the spooled ones: everything that was hashed."""
    by_path = {record.path: record for record in result.rehashed}
    for confirmed in result.refresh:
        e = confirmed.fingerprint.entry
        by_path[e.path] = Record(e.path, e.size, e.mtime_ns, e.ctime_ns, e.inode, confirmed.fingerprint.hash,
                                 confirmed.racy)
    for change in result.changes:
        if change.type == DELETED:
            by_path.pop(change.path, None)
        elif change.entry is not None:
            e = change.entry
            by_path[e.path] = Record(e.path, e.size, e.mtime_ns, e.ctime_ns, e.inode, change.hash, change.racy)
        if change.old_path is not None:
            by_path.pop(change.old_path, None)
    return by_path.values()


def _library_state(result: Plan, run_id: str, generation: int, options: ScanOptions) -> dict[str, Any]:
    now, counts = datetime.now(UTC), result.counts
    state = {"state.status": "ok", "state.last_scan": now, "state.generation": generation,
             "state.last_run_id": run_id, "state.last_counts": counts}
    if options.verify:
        state["state.last_full_scan"] = now
    if result.has_changes:
        state["state.last_change_detected"] = now
    return state


def _writes(result: Plan) -> bool:
    return result.has_changes or bool(result.refresh)


def _mark_writing(db: Db, result: Plan, lease: Lease) -> None:
    """Bump the generation before the first write, so that a scan killed among its writes
    leaves no local index (of any host) that still matches the catalog."""
    if _writes(result):
        lease.check()
        catalog_libraries.raw_update(db, result.library.name,
                                     {"$set": {"state.generation": result.library.generation + 1}})


def _record_state(db: Db, result: Plan, run_id: str, options: ScanOptions, lease: Lease) -> int:
    """Record the scan in the library's state, at the generation `_mark_writing` set."""
    library = result.library
    generation = library.generation + 1 if _writes(result) else library.generation
    lease.check()
    fields = _library_state(result, run_id, generation, options)
    increments = {f"state.totals.{kind}": count for kind, count in result.counts.items()
                  if kind in FILE_CHANGES and count}
    update: dict[str, Any] = {"$set": fields}
    if increments:
        update["$inc"] = increments
    catalog_libraries.raw_update(db, library.name, update)
    return generation


def _change_document(change: Change) -> dict[str, Any]:
    entry = change.entry
    doc: dict[str, Any] = {"type": change.type, "path": change.path, "collection": collection_of(change.path)}
    if change.old_path is not None:
        doc["old_path"] = change.old_path
    state = entry if entry is not None else change.record
    if state is not None:
        doc.update(size=state.size, mtime_ns=state.mtime_ns)
    doc["hash"] = change.hash
    if entry is not None and not is_exact(entry.raw):
        doc["path_b64"] = b64_of(entry.raw)
    return doc


def _skip_document(skip: Skip) -> dict[str, Any]:
    doc = {"path": skip.path, "reason": skip.reason}
    if skip.detail:
        doc["detail"] = skip.detail
    if not is_exact(skip.raw):
        doc["path_b64"] = b64_of(skip.raw)
    return doc


def document(result: Plan, *, run_id: str | None, dry_run: bool, rebuild: dict[str, int]) -> dict[str, Any]:
    """The scan/diff JSON document of DESIGN.md."""
    changes = [_change_document(change) for change in result.changes]
    changes += [{"type": "collection_added", "path": p, "collection": p} for p in result.collections_added]
    changes += [{"type": "collection_removed", "path": p, "collection": p} for p in result.collections_removed]
    errors = [{"path": s.path, "error": f"{s.reason}: {s.detail}" if s.detail else s.reason}
              for s in result.skipped if s.reason in ERROR_REASONS]
    errors += [{"path": path, "error": probe.error} for path, probe in sorted(result.probes.items()) if probe.error]
    return {"library": result.library.name, "root": result.library.path, "run_id": run_id, "dry_run": dry_run,
            "started_at": result.started_at, "finished_at": datetime.now(UTC), "counts": result.counts,
            "changes": changes,
            "skipped": [_skip_document(s) for s in result.skipped if s.reason not in ERROR_REASONS],
            "errors": errors, "rebuild": rebuild}


def diff(db: Db, settings: Settings, library: Library, options: ScanOptions, *,
         progress: Progress = _no_progress) -> ScanReport:
    """What a scan would record, writing nothing."""
    result = plan(db, settings, library, options, progress=progress)
    pending = sum(len(library.rebuild_kinds) for c in result.changes if c.type in (ADDED, MODIFIED, CORRUPTED))
    doc = document(result, run_id=None, dry_run=True, rebuild={"requested": pending, "published": 0, "pending": 0})
    return ScanReport(doc, 1 if result.has_changes else 0)


Publish = Callable[[Db, Library], dict[str, int]]


def _skipped_run(db: Db, library: Library, options: ScanOptions, why: str) -> ScanReport:
    run_id = runs.record_skipped(db, "scan", library.name, options.trigger, why)
    doc = {"library": library.name, "root": library.path, "run_id": run_id, "dry_run": options.dry_run,
           "skipped_run": why, "counts": {}, "changes": [], "skipped": [], "errors": [],
           "rebuild": {"requested": 0, "published": 0, "pending": 0}}
    return ScanReport(doc, 0)


def scan(db: Db, settings: Settings, library: Library, options: ScanOptions, *,
         progress: Progress = _no_progress, publish: Publish | None = None) -> ScanReport:
    """Detect, record and publish, under the library's lease, as one recorded run."""
    if library.paused or (not library.enabled and options.trigger != "manual"):
        why = "paused" if library.paused else "disabled"
        log.warning("library %s is %s: scan skipped", library.name, why)
        return _skipped_run(db, library, options, why)
    if options.dry_run:
        report = diff(db, settings, library, options, progress=progress)
        return ScanReport(report.document, 0)
    with runs.recorded(db, "scan", library.name, options.trigger) as run:
        lease = Lease(db, f"scan:{library.name}", run.run_id, settings.lease_s)
        lease.acquire(wait_s=options.wait_lock_s)
        result: Plan | None = None
        try:
            library = catalog_libraries.get(db, library.name)  # fresh state, now that we hold the lease
            result = plan(db, settings, library, options, progress=progress, spool=True)
            check_guards(result, options)
            _mark_writing(db, result, lease)
            requested = apply(db, result, run.run_id, lease, priority=options.priority)
            run.counts = result.counts
            generation = _record_state(db, result, run.run_id, options, lease)
            if result.spool is not None and (result.has_changes or result.refresh or not result.used_index):
                result.spool.commit(_written_records(result), library=library.name, generation=generation,
                                    root=_index_root(library), source_generation=library.generation)
            rebuild = {"requested": requested, "published": 0, "pending": requested}
            exit_code, publish_error = 0, None
            if publish is not None and options.publish:
                rebuild, exit_code, publish_error = _publish(db, library, rebuild, publish)
            if publish_error:  # the changes are recorded: the run keeps its counts and says what failed
                run.problem(f"publishing failed: {publish_error}")
            return ScanReport(document(result, run_id=run.run_id, dry_run=False, rebuild=rebuild), exit_code)
        finally:
            if result is not None and result.spool is not None:
                result.spool.discard()
            lease.release()


def _publish(db: Db, library: Library, rebuild: dict[str, int],
             publish: Publish) -> tuple[dict[str, int], int, str | None]:
    from libwatch.errors import ServiceUnavailable

    try:
        outcome = publish(db, library)
    except ServiceUnavailable as error:
        log.error("%s; the rebuild requests stay pending and the next run publishes them", error)
        return {**rebuild, "published": 0}, error.exit_code, str(error)
    return {"requested": rebuild["requested"], "published": outcome.get("published", 0),
            "pending": outcome.get("pending", 0)}, 0, None
