"""`libwatch cleanup`: plan what is stale or orphaned, then (unless a dry run) remove it.

The plan is pure data read from the catalog and the cache folder; `--dry-run` renders it
and stops, a real run applies it. Cache files are only ever removed after a successful
catalog query said no record of this catalog has their hash (a deleted file's record kept
for its retention still owns its cache image): a catalog that cannot be read ends the
command (exit 69) before anything is deleted, and a library whose root is missing stops
orphan removal altogether, because its records may be all that still names a hash.

A cache folder belongs to one catalog: the marker file `.libwatch-catalog` in it names the
catalog (its id and where it lives). The first cleanup writes it; a cleanup of another
catalog refuses to run there (exit 2), since every file of the other catalog would look
like an orphan to it.
"""
from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby, islice
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, Final

from pymongo.database import Database

from libwatch import cachefiles, processes
from libwatch.catalog import housekeeping as repo
from libwatch.catalog import libraries as library_repo
from libwatch.catalog import runs
from libwatch.catalog.schema import EVENTS_TTL_S
from libwatch.config import Settings, mask_url
from libwatch.errors import EXIT_OK, EXIT_ROOT_UNAVAILABLE, ForeignCache, UsageError
from libwatch.library import Library
from libwatch.messages import KINDS
from libwatch.result import Problem, Result

RUNS_RETENTION: Final = timedelta(days=90)
EVENTS_RETENTION: Final = timedelta(seconds=EVENTS_TTL_S)
QUEUED_TIMEOUT: Final = timedelta(hours=1)
# Changes that need no rendering: their events are done as soon as they are recorded.
NO_REBUILD: Final = frozenset({"touched", "renamed", "deleted", "collection_added", "collection_removed"})
_AGE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
MARKER: Final = ".libwatch-catalog"
_AGE_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

Db = Database[dict[str, Any]]


def parse_age(text: str) -> timedelta:
    """`90m`, `12h`, `30d`, `2w` (or `45s`) as a duration; UsageError otherwise."""
    match = _AGE.fullmatch(text.strip().lower())
    if not match:
        raise UsageError(f"bad age {text!r}: use a number and a unit, e.g. 90m, 12h, 30d, 2w")
    return timedelta(**{_AGE_UNITS[match[2]]: float(match[1])})


@dataclass(frozen=True, slots=True)
class Orphan:
    """A cache file whose content hash no record of this catalog has (once this cleanup is done)."""

    kind: str
    hash: str
    path: Path
    size: int


@dataclass(frozen=True, slots=True)
class StaleRun:
    """A run recorded as running whose process is gone; `lock` is the lease it still holds."""

    run_id: str
    job: str
    library: str | None
    reason: str
    lock: str | None


@dataclass(frozen=True, slots=True)
class LibraryPlan:
    """What goes for one library: records missing since before `cutoff`, stuck rebuild requests."""

    library: str
    cutoff: datetime
    files: tuple[str, ...]
    collections: tuple[str, ...]
    stuck: dict[str, int]
    stuck_before: datetime


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one cleanup would do; applying it is a separate step."""

    library: str | None
    now: datetime
    orphans: tuple[Orphan, ...]
    temp_files: tuple[Path, ...]
    libraries: tuple[LibraryPlan, ...]
    events_done: tuple[Any, ...]
    old_events: int
    events_before: datetime
    old_runs: int
    runs_before: datetime
    stale_runs: tuple[StaleRun, ...]
    expired_locks: tuple[tuple[str, Any], ...]
    skipped: tuple[dict[str, str], ...] = ()

    def counts(self) -> dict[str, int]:
        """The plan's counts, with the same keys `apply` returns."""
        return {
            "orphan_files": len(self.orphans), "orphan_bytes": sum(o.size for o in self.orphans),
            "temp_files": len(self.temp_files),
            "missing_files": sum(len(lib.files) for lib in self.libraries),
            "missing_collections": sum(len(lib.collections) for lib in self.libraries),
            "events_processed": len(self.events_done), "old_events": self.old_events,
            "old_runs": self.old_runs, "stale_runs": len(self.stale_runs),
            "locks_released": sum(1 for run in self.stale_runs if run.lock) + len(self.expired_locks),
            "requeued": sum(sum(lib.stuck.values()) for lib in self.libraries),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CleanupResult(Result):
    """What a cleanup did (or, dry, would do); exit 74 when orphan removal was skipped (a root is missing)."""

    library: str | None
    run_id: str | None
    dry_run: bool
    started_at: datetime
    finished_at: datetime
    counts: dict[str, int]
    plan: Plan

    @property
    def exit_code(self) -> int:
        return EXIT_ROOT_UNAVAILABLE if self.problems else EXIT_OK

    def data(self) -> dict[str, Any]:
        """The `cleanup --json` document's own fields."""
        plan = self.plan
        return {
            "library": self.library, "run_id": self.run_id, "dry_run": self.dry_run,
            "started_at": self.started_at, "finished_at": self.finished_at, "counts": self.counts,
            "orphans": [{"kind": o.kind, "hash": o.hash, "path": str(o.path), "size": o.size} for o in plan.orphans],
            "missing_files": [{"library": lib.library, "path": path} for lib in plan.libraries for path in lib.files],
            "missing_collections": [{"library": lib.library, "path": path}
                                    for lib in plan.libraries for path in lib.collections],
            "stale_runs": [{"run_id": s.run_id, "job": s.job, "library": s.library, "reason": s.reason}
                           for s in plan.stale_runs],
            "skipped": list(plan.skipped),
        }


# ---------------------------------------------------------------- planning

def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _orphans(db: Db, cache_dir: Path, kept: dict[str, Any]) -> tuple[Orphan, ...]:
    """Walk the cache once; ask the catalog about the hashes a batch at a time.

    The walk yields each kind's files in hash order, so batching within a kind keeps each
    batch's hash range narrow (see `repo.referenced_hashes`).
    """
    found: list[Orphan] = []
    batches = (batch for _, entries in groupby(cachefiles.iter_cache_files(cache_dir), key=itemgetter(0))
               for batch in _batched(entries, repo.BATCH))
    for batch in batches:
        referenced = repo.referenced_hashes(db, {content_hash for _, content_hash, _ in batch}, where=kept)
        for kind, content_hash, path in batch:
            if content_hash not in referenced:
                try:
                    found.append(Orphan(kind, content_hash, path, path.stat().st_size))
                except FileNotFoundError:
                    continue  # removed meanwhile
    return tuple(found)


def _unavailable_roots(libraries: Sequence[Library]) -> list[str]:
    return [f"the root of library {lib.name} ({lib.path}) is missing or unreadable" for lib in libraries
            if not (os.path.isdir(lib.path) and os.access(lib.path, os.R_OK | os.X_OK))]


def _library_plan(db: Db, lib: Library, *, now: datetime, retention: timedelta,
                  queued_timeout: timedelta) -> LibraryPlan:
    cutoff = now - retention
    stuck_before = now - queued_timeout
    return LibraryPlan(
        library=lib.name, cutoff=cutoff,
        files=tuple(doc["path"] for doc in repo.missing_before(db, "files", lib.name, cutoff)),
        collections=tuple(doc["path"] for doc in repo.missing_before(db, "collections", lib.name, cutoff)),
        stuck={kind: repo.count_stuck(db, lib.name, kind, stuck_before) for kind in KINDS},
        stuck_before=stuck_before)


def _event_done(event: dict[str, Any], record: dict[str, Any] | None) -> bool:
    """A change that needed rendering is dealt with when its file is gone, superseded, or built."""
    if record is None or record.get("status") != "present":
        return True
    if record.get("hash") != event.get("hash"):
        return True  # a newer change of the same file carries the rebuild now
    rebuild = record.get("rebuild") or {}
    return all(rebuild.get(kind) in (None, "done") for kind in KINDS)


def _events_done(db: Db, library: str) -> list[Any]:
    """Unprocessed events that are dealt with; the file records are looked up in path-sorted batches."""
    done: list[Any] = []
    to_check: list[dict[str, Any]] = []
    for event in repo.unprocessed_events(db, library):
        if event.get("type") in NO_REBUILD or event.get("path") is None:
            done.append(event["_id"])
        else:
            to_check.append(event)
    to_check.sort(key=itemgetter("path"))
    for batch in _batched(to_check, repo.BATCH):
        records = repo.files_at(db, library, {event["path"] for event in batch})
        done += [event["_id"] for event in batch if _event_done(event, records.get(event["path"]))]
    return done


def _stale_runs(db: Db, library: str | None, *, now: datetime, lease: timedelta,
                this_run: str | None) -> tuple[tuple[StaleRun, ...], tuple[tuple[str, Any], ...]]:
    """Running runs whose lease expired or whose process is gone; expired leases nobody runs under."""
    locks = repo.all_locks(db)
    lock_of = {lock.get("owner"): lock for lock in locks}
    host = socket.gethostname()
    stale: list[StaleRun] = []
    running: set[Any] = set()
    for run in repo.running_runs(db, library):
        if run["_id"] == this_run:
            continue
        lock = lock_of.get(run["_id"])
        if lock is not None and lock["expires_at"] < now:
            reason = f"lease {lock['_id']} expired at {lock['expires_at']:%Y-%m-%d %H:%M:%S}Z"
        elif processes.gone(run.get("host"), run.get("pid")):
            reason = f"process {run['pid']} on {host} is gone"
        elif run.get("job") == "scan" and lock is None and run["started_at"] < now - lease:
            reason = "the scan holds no lease"
        else:
            running.add(run["_id"])
            continue
        stale.append(StaleRun(run["_id"], run.get("job", "?"), run.get("library"), reason,
                              None if lock is None else lock["_id"]))
    stale_ids = {run.run_id for run in stale}
    expired = tuple((lock["_id"], lock.get("owner")) for lock in locks
                    if lock["expires_at"] < now and lock.get("owner") not in running | stale_ids
                    and (library is None or lock["_id"] == f"scan:{library}"))
    return tuple(stale), expired


def plan(db: Db, settings: Settings, library: str | None = None, *, older_than: timedelta | None = None,
         queued_timeout: timedelta = QUEUED_TIMEOUT, now: datetime | None = None,
         this_run: str | None = None) -> Plan:
    """Read what a cleanup of `library` (or of everything) would remove; writes nothing."""
    now = now or datetime.now(UTC)
    every = library_repo.all_libraries(db)
    scope = [library_repo.get(db, library)] if library is not None else every
    blocked = _unavailable_roots(every)
    skipped = tuple({"part": "orphans", "reason": reason} for reason in blocked)
    # `is None`, not `or`: a zero age or a zero retention is a setting (delete at once), not "not given".
    libraries = tuple(_library_plan(
        db, lib, now=now, queued_timeout=queued_timeout,
        retention=older_than if older_than is not None else timedelta(
            days=lib.retention_days if lib.retention_days is not None else settings.retention_days)) for lib in scope)
    events_before = now - (older_than if older_than is not None else EVENTS_RETENTION)
    stale, expired = _stale_runs(db, library, now=now, lease=timedelta(seconds=settings.lease_s), this_run=this_run)
    runs_before = now - (older_than if older_than is not None else RUNS_RETENTION)
    temp_before = (now - queued_timeout).timestamp()
    return Plan(
        library=library, now=now,
        orphans=() if blocked else _orphans(db, settings.cache_dir, _kept(libraries)),
        temp_files=tuple(p for p in cachefiles.iter_temp_files(settings.cache_dir) if _abandoned(p, temp_before)),
        libraries=libraries,
        events_done=tuple(event for lib in scope for event in _events_done(db, lib.name)),
        old_events=repo.count_old_events(db, library, events_before), events_before=events_before,
        old_runs=repo.count_old_runs(db, library, runs_before), runs_before=runs_before,
        stale_runs=stale, expired_locks=expired, skipped=skipped)


def _abandoned(path: Path, before: float) -> bool:
    """A writer's temp file whose writer is gone (its lock is free), else a temp file older than ``before``."""
    if path.name.endswith(cachefiles.TEMP_SUFFIX) and (gone := cachefiles.writer_gone(path)) is not None:
        return gone
    return _mtime(path) < before


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")  # gone already: nothing to remove


# ---------------------------------------------------------------- applying

def _kept(libraries: Iterable[LibraryPlan]) -> dict[str, Any]:
    return repo.kept_records({lib.library: lib.cutoff for lib in libraries})


def remove_unreferenced(db: Db, orphans: Sequence[Orphan], kept: dict[str, Any]) -> tuple[int, int]:
    """Delete the orphans no record (matching `kept`) names; returns (files removed, bytes freed).

    A batch is first set aside (renamed to temp names, so a worker or `rebuild --run`
    looking for a rendering finds none and renders it anew), then the catalog is asked
    again, and only then are the files deleted: a scan may have just recorded a hash that a
    writer then found rendered. Files whose hash is named now are put back.
    """
    removed = freed = 0
    for batch in _batched(sorted(orphans, key=attrgetter("hash")), repo.BATCH):
        aside = [(orphan, moved) for orphan in batch if (moved := cachefiles.set_aside(orphan.path)) is not None]
        referenced = repo.referenced_hashes(db, {orphan.hash for orphan, _ in aside}, where=kept)
        for orphan, moved in aside:
            if orphan.hash in referenced:
                cachefiles.put_back(moved, orphan.path)
                continue
            moved.unlink(missing_ok=True)
            removed, freed = removed + 1, freed + orphan.size
    return removed, freed


def remove_cached(db: Db, cache_dir: Path, hashes: Iterable[str]) -> int:
    """Delete the renderings of ``hashes`` that no file record of this catalog names any more; how many went."""
    return remove_cached_files(db, [(kind, content_hash, path) for content_hash in sorted(hashes)
                                    for kind in KINDS
                                    if (path := cachefiles.existing(cache_dir, kind, content_hash)) is not None])


def remove_cached_files(db: Db, files: Iterable[tuple[str, str, Path]]) -> int:
    """Delete these ``(kind, content hash, path)`` renderings unless a file record names their hash; how many went."""
    orphans = [Orphan(kind, content_hash, path, _size(path)) for kind, content_hash, path in files]
    return remove_unreferenced(db, orphans, {})[0]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _remove_files(paths: Iterable[Path]) -> int:
    removed = 0
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
    return removed


def apply(db: Db, plan: Plan) -> dict[str, int]:
    """Carry a plan out; returns what was actually removed or changed (same keys as `Plan.counts`)."""
    counts = dict.fromkeys(plan.counts(), 0)
    for lib in plan.libraries:
        counts["missing_files"] += repo.delete_missing(db, "files", lib.library, lib.cutoff)
        counts["missing_collections"] += repo.delete_missing(db, "collections", lib.library, lib.cutoff)
        counts["requeued"] += sum(repo.requeue_stuck(db, lib.library, kind, lib.stuck_before)
                                  for kind in KINDS)
    counts["events_processed"] = repo.mark_processed(db, plan.events_done, plan.now)
    for stale in plan.stale_runs:
        counts["stale_runs"] += runs.mark_interrupted(db, stale.run_id, f"cleanup: {stale.reason}")
        if stale.lock is not None:
            counts["locks_released"] += repo.release_lock(db, stale.lock, stale.run_id)
    counts["locks_released"] += sum(repo.release_lock(db, lock, owner) for lock, owner in plan.expired_locks)
    counts["old_runs"] = repo.delete_old_runs(db, plan.library, plan.runs_before)
    counts["old_events"] = repo.delete_old_events(db, plan.library, plan.events_before)
    counts["orphan_files"], counts["orphan_bytes"] = remove_unreferenced(db, plan.orphans, _kept(plan.libraries))
    counts["temp_files"] = _remove_files(plan.temp_files)
    return counts


def _read_marker(cache_dir: Path) -> dict[str, Any] | None:
    """The cache folder's owner marker, None when there is none; ForeignCache when it cannot be read."""
    try:
        fd = os.open(cache_dir / MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ForeignCache(f"cache folder {cache_dir}: cannot read its owner marker {MARKER}: {error.strerror}; "
                           "nothing was removed") from None
    with os.fdopen(fd, "rb") as marker:
        try:
            found = json.loads(marker.read(4096))
        except ValueError:
            found = None
    if not isinstance(found, dict) or not isinstance(found.get("catalog_id"), str):
        raise ForeignCache(f"cache folder {cache_dir}: its owner marker {MARKER} is not libwatch's; "
                           "nothing was removed")
    return found


def _catalog_name(settings: Settings) -> str:
    where = f"embedded store {settings.store_dir}" if settings.mongo_uri is None else mask_url(settings.mongo_uri)
    return f"{where}, database {settings.database}"


def claim_cache(db: Db, settings: Settings, *, write: bool) -> None:
    """Check that the cache folder belongs to this catalog; with `write`, mark an unclaimed one as ours.

    Raises ForeignCache (exit 2) when its marker names another catalog.
    """
    ours = repo.catalog_id(db)
    found = _read_marker(settings.cache_dir)
    if found is not None and found["catalog_id"] != ours:
        raise ForeignCache(f"cache folder {settings.cache_dir} belongs to another catalog ({found.get('catalog')}, "
                           f"id {found['catalog_id']}); cleanup removed nothing: give this catalog its own --cache-dir")
    if found is None and write and settings.cache_dir.is_dir():
        document = {"catalog_id": ours, "catalog": _catalog_name(settings),
                    "claimed_at": datetime.now(UTC).isoformat(timespec="seconds")}
        try:
            fd = os.open(settings.cache_dir / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            return claim_cache(db, settings, write=False)  # another cleanup claimed it just now
        with os.fdopen(fd, "w") as marker:
            json.dump(document, marker)
    return None


def cleanup(db: Db, settings: Settings, library: str | None = None, *, dry_run: bool = False,
            older_than: timedelta | None = None, queued_timeout: timedelta = QUEUED_TIMEOUT,
            trigger: str = "manual") -> CleanupResult:
    """One cleanup: recorded as a `cleanup` run (a dry run records nothing and changes nothing)."""
    if trigger not in runs.TRIGGERS:
        raise UsageError(f"unknown trigger {trigger!r} (one of {', '.join(runs.TRIGGERS)})")
    claim_cache(db, settings, write=not dry_run)
    started = datetime.now(UTC)
    if dry_run:
        planned = plan(db, settings, library, older_than=older_than, queued_timeout=queued_timeout, now=started)
        return CleanupResult(library=library, run_id=None, dry_run=dry_run, started_at=started,
                             finished_at=datetime.now(UTC), counts=planned.counts(), plan=planned,
                             problems=_problems(planned))
    with runs.recorded(db, "cleanup", library, trigger) as run:
        planned = plan(db, settings, library, older_than=older_than, queued_timeout=queued_timeout,
                       now=started, this_run=run.run_id)
        run.counts = apply(db, planned)
        problems = _problems(planned)
        if problems:
            run.end(runs.FAILED, "; ".join(f"{p.item}: {p.reason}" for p in problems))
    return CleanupResult(library=library, run_id=run.run_id, dry_run=dry_run, started_at=started,
                         finished_at=datetime.now(UTC), counts=dict(run.counts), plan=planned, problems=problems)


def _problems(planned: Plan) -> tuple[Problem, ...]:
    """Why orphan removal was skipped (a library root was unavailable)."""
    return tuple(Problem("orphan cache files kept", "root-unavailable", item["reason"]) for item in planned.skipped)
