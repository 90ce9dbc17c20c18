"""The `files`, `collections` and `events` collections, as a scan reads and writes them.

Reads go in pages keyed on the sort key (`path > last`), never one cursor over a whole
library (SecantusDB holds a cursor's whole result in memory). Writes are unordered
`bulk_write`s of idempotent operations keyed on (library, path), so a scan killed at
any point and run again converges to the same catalog.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, Final

from pymongo import InsertOne, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from libwatch.catalog.schema import DURABLE, durable
from libwatch.core.diff import (
    ADDED,
    CORRUPTED,
    DELETED,
    MODIFIED,
    RENAMED,
    TOUCHED,
    Change,
    Confirmed,
    Record,
    needs_rebuild,
)
from libwatch.core.paths import b64_of, collection_of, is_exact
from libwatch.messages import KINDS

PAGE: Final = 5000
BATCH: Final = 1000
_RECORD_FIELDS: Final = {"_id": 1, "path": 1, "size": 1, "mtime_ns": 1, "ctime_ns": 1, "inode": 1, "hash": 1, "racy": 1,
                          "exact": 1}
# BSON integers are signed 64-bit. A stat value outside that range (a time after 2262 or
# before 1678 in nanoseconds, an inode number from 2**63 up) is stored clamped to it, so
# that every reader of the field gets an int, and exactly, as a decimal string under
# `exact.<field>`, so that a later change of that value is still seen.
INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1
STAT_FIELDS: Final = ("size", "mtime_ns", "ctime_ns", "inode")
_DECIMAL: Final = re.compile(r"-?[0-9]{1,40}")

Db = Database[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Probe:
    """Image metadata read from a file's header, or why it could not be read.

    ``hopeless``: no render can succeed (``imaging.hopeless``), so the record's renders are
    recorded ``failed`` with ``error`` at once instead of being asked for.
    """

    width: int | None = None
    height: int | None = None
    format: str | None = None
    error: str | None = None
    hopeless: bool = False


def _files(db: Db) -> Collection[dict[str, Any]]:
    return durable(db, "files")


def present_records(db: Db, library: str, collections: Mapping[str, dict[str, Any]], *, under: str = "",
                    page: int = PAGE) -> Iterator[Record]:
    """The library's present files in path order (only those below the folder ``under`` if given),
    read in bounded path ranges.

    Each query has both bounds (`lo <= path < hi`): SecantusDB materialises every match
    of a query before applying `limit`, so `path > last` paging would read the rest of
    the library once per page. The ranges are cut at collection paths, grouped so each
    holds about `page` files by the collections' counters.
    """
    counts = {path: int(doc.get("file_count") or 0) for path, doc in collections.items()}
    # Every path below "a/b" sorts in ["a/b/", "a/b0"): "0" is the character after "/".
    bounds = (under + "/", under + "0") if under else ("", None)
    for low, high in path_ranges(counts, *bounds, page=page):
        query: dict[str, Any] = {"library": library,
                                 "path": {"$gte": low} if high is None else {"$gte": low, "$lt": high}}
        for doc in _files(db).find(query, _RECORD_FIELDS | {"status": 1}).sort("path", 1):
            if doc.get("status") == "present":
                # BSON int64 values come back as bson.Int64, which the local stat index (marshal) refuses.
                exact = doc.get("exact")
                if exact:
                    doc = {**doc, **exact_values(exact)}
                yield Record(doc["path"], int(doc["size"]), int(doc["mtime_ns"]), int(doc.get("ctime_ns", 0)),
                             int(doc.get("inode", 0)), doc.get("hash"), bool(doc.get("racy")), doc["_id"])


def stat_fields(size: int, mtime_ns: int, ctime_ns: int, inode: int) -> dict[str, Any]:
    """The stat fields of a record: each clamped to int64, and ``exact`` (or None) for those that did not fit."""
    values = {"size": size, "mtime_ns": mtime_ns, "ctime_ns": ctime_ns, "inode": inode}
    exact = {key: str(value) for key, value in values.items() if not INT64_MIN <= value <= INT64_MAX}
    for key in exact:
        values[key] = min(max(values[key], INT64_MIN), INT64_MAX)
    return {**values, "exact": exact or None}


def exact_values(exact: Any) -> dict[str, int]:
    """The exact stat values of a record's ``exact`` field.

    Anything else found there is ignored (catalog data is untrusted).
    """
    if not isinstance(exact, Mapping):
        return {}
    values: dict[str, int] = {}
    for key in STAT_FIELDS:
        text = exact.get(key)
        if isinstance(text, str) and _DECIMAL.fullmatch(text):
            values[key] = int(text)
    return values


def path_ranges(folders: Mapping[str, int], low: str = "", high: str | None = None, *,
                page: int = PAGE) -> Iterator[tuple[str, str | None]]:
    """Path ranges covering [low, high), cut at folder paths, each holding about `page` files by the folders' counts."""
    start, filled = low, 0
    for path in sorted(folders):
        if path > start and (high is None or path < high) and filled >= page:
            yield start, path
            start, filled = path, 0
        filled += folders[path]
    yield start, high


def missing_paths(db: Db, library: str) -> set[str]:
    """Paths of the library's records marked missing (few: `cleanup` removes them after the retention).

    One equality query on (library, status): SecantusDB answers `$in` with a full
    collection scan, so looking paths up in batches would cost a scan per batch.
    """
    return {doc["path"] for doc in _files(db).find({"library": library, "status": "missing"}, {"path": 1})}

def _state(change: Change) -> dict[str, Any]:
    entry = change.entry
    assert entry is not None
    return {"path": entry.path, "path_b64": None if is_exact(entry.raw) else b64_of(entry.raw),
            "collection": collection_of(entry.path),
            **stat_fields(entry.size, entry.mtime_ns, entry.ctime_ns, entry.inode),
            "hash": change.hash, "racy": change.racy, "status": "present", "missing_since": None}


def _rebuild(kinds: Sequence[str], digest: str | None, now: datetime, priority: int,
             probe: Probe | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"rebuild.hash": digest, "rebuild.priority": priority}
    failed = probe is not None and probe.hopeless
    for kind in KINDS:
        fields[f"rebuild.{kind}"] = None if kind not in kinds else "failed" if failed else "pending"
        fields[f"rebuild.{kind}_at"] = now
        fields[f"rebuild.{kind}_error"] = probe.error if failed and kind in kinds and probe else None
    return fields


def probe_fields(probe: Probe | None) -> dict[str, Any]:
    """A record's header fields (``width``, ``height``, ``format``, ``probe_error``) from its probe."""
    probe = probe or Probe()
    return {"width": probe.width, "height": probe.height, "format": probe.format, "probe_error": probe.error}


def file_operations(library: str, changes: Iterable[tuple[Change, Probe | None]], *, revive: set[str],
                    rebuild_kinds: Sequence[str], now: datetime, priority: int) -> Iterator[Any]:
    """The bulk operations that record `changes`, each with its probe (pure: builds, does not send)."""
    for change, probe in changes:
        key = {"library": library, "path": change.path}
        if change.type == DELETED:
            yield UpdateOne(key, {"$set": {"status": "missing", "missing_since": now, "updated_at": now}})
        elif change.type == RENAMED:
            yield UpdateOne({"library": library, "path": change.old_path},
                            {"$set": {**_state(change), "updated_at": now}})
        elif change.type == TOUCHED:
            yield UpdateOne(key, {"$set": {**_state(change), "updated_at": now}})
        elif needs_rebuild(change) and (change.type != ADDED or change.path in revive):
            yield UpdateOne(key, {"$set": {**_state(change), **probe_fields(probe),
                                           **_rebuild(rebuild_kinds, change.hash, now, priority, probe),
                                           "updated_at": now},
                                  "$setOnInsert": {"first_seen": now}}, upsert=True)
        elif change.type == ADDED:
            doc = {"library": library, **_state(change), **probe_fields(probe),
                   "rebuild": {}, "first_seen": now, "updated_at": now}
            for dotted, value in _rebuild(rebuild_kinds, change.hash, now, priority, probe).items():
                doc["rebuild"][dotted.split(".", 1)[1]] = value
            yield InsertOne(doc)


def refresh_operations(library: str, confirmed: Iterable[Confirmed], now: datetime) -> Iterator[Any]:
    """Operations for records hashed again and found unchanged: store the hash and the racy flag."""
    for item in confirmed:
        yield UpdateOne({"library": library, "path": item.record.path},
                        {"$set": {"hash": item.fingerprint.hash, "racy": item.racy, "updated_at": now}})


def clear_missing_targets(db: Db, library: str, paths: Iterable[str]) -> None:
    """Drop missing records that sit where a renamed file now is (they would clash on the unique key)."""
    for path in paths:
        _files(db).delete_one({"library": library, "path": path, "status": "missing"})

def _nothing(count: int) -> None:
    """No progress to report."""


def write_batches(db: Db, collection: str, operations: Iterable[Any], *, before_batch: Callable[[], None],
                  sent: Callable[[int], None] = _nothing) -> int:
    """Send operations in unordered batches; `before_batch` runs before each (the lease check),
    `sent` after each with its number of operations (progress)."""
    target = db.get_collection(collection, write_concern=DURABLE)
    total, batch = 0, []
    for operation in operations:
        batch.append(operation)
        if len(batch) == BATCH:
            total += _send(target, batch, before_batch)
            sent(len(batch))
            batch = []
    if batch:
        total += _send(target, batch, before_batch)
        sent(len(batch))
    return total


def _send(target: Any, batch: list[Any], before_batch: Callable[[], None]) -> int:
    before_batch()
    try:
        target.bulk_write(batch, ordered=False)
    except BulkWriteError as error:
        # An insert that meets an existing record (a scan killed after inserting it and
        # run again) is retried as an upsert; anything else is a real failure.
        retry = [_as_upsert(batch[e["index"]]) for e in error.details.get("writeErrors", []) if e.get("code") == 11000]
        if len(retry) != len(error.details.get("writeErrors", [])) or error.details.get("writeConcernErrors"):
            raise
        target.bulk_write(retry, ordered=False)
    return len(batch)


def _as_upsert(operation: Any) -> UpdateOne:
    doc = dict(operation._doc)
    doc.pop("_id", None)
    first_seen = doc.pop("first_seen")
    return UpdateOne({"library": doc["library"], "path": doc["path"]},
                     {"$set": doc, "$setOnInsert": {"first_seen": first_seen}}, upsert=True)


def event_operations(library: str, changes: Iterable[Change], run_id: str, now: datetime) -> Iterator[InsertOne]:
    """One `events` document per change."""
    for change in changes:
        entry = change.entry
        size = entry.size if entry is not None else change.record.size if change.record else None
        size = None if size is None else min(size, INT64_MAX)
        yield InsertOne({"library": library, "collection": collection_of(change.path), "path": change.path,
                         "old_path": change.old_path, "type": change.type, "detected_at": now, "size": size,
                         "hash": change.hash, "old_hash": change.record.hash if change.record else None,
                         "run_id": run_id, "processed": False, "processed_at": None})


def collection_event_operations(library: str, added: Iterable[str], removed: Iterable[str], run_id: str,
                                now: datetime) -> Iterator[InsertOne]:
    for kind, paths in (("collection_added", added), ("collection_removed", removed)):
        for path in paths:
            yield InsertOne({"library": library, "collection": path, "path": path, "old_path": None, "type": kind,
                             "detected_at": now, "size": None, "hash": None, "run_id": run_id,
                             "processed": True, "processed_at": now})


def collection_documents(db: Db, library: str) -> dict[str, dict[str, Any]]:
    """The library's collection records by path (one per folder: far fewer than files)."""
    return {doc["path"]: doc for doc in db.collections.find({"library": library})}


def collection_operations(library: str, tallies: Mapping[str, tuple[int, int]], before: Mapping[str, dict[str, Any]],
                          activity: Mapping[str, Mapping[str, int]], now: datetime) -> Iterator[UpdateOne]:
    """Upsert each collection whose counters or sync state changed; mark vanished ones missing."""
    for path, (count, total) in tallies.items():
        seen = activity.get(path, {})
        previous = before.get(path)
        unchanged = (previous is not None and previous.get("missing_since") is None
                     and previous.get("file_count") == count and previous.get("total_bytes") == total and not seen)
        if unchanged:
            continue
        pending = seen.get("pending", 0)
        yield UpdateOne({"library": library, "path": path}, {
            "$set": {"file_count": count, "total_bytes": total, "updated_at": now, "missing_since": None,
                     "sync": {"last_scan": now, "added": seen.get(ADDED, 0), "modified": seen.get(MODIFIED, 0)
                              + seen.get(CORRUPTED, 0), "deleted": seen.get(DELETED, 0), "pending_rebuilds": pending,
                              "status": "rebuild_required" if pending else "in_sync"}},
            "$setOnInsert": {"first_seen": now}}, upsert=True)
    for path, previous in before.items():
        if path not in tallies and previous.get("missing_since") is None:
            seen = activity.get(path, {})
            yield UpdateOne({"library": library, "path": path}, {"$set": {
                "file_count": 0, "total_bytes": 0, "missing_since": now, "updated_at": now,
                "sync": {"last_scan": now, "added": 0, "modified": 0, "deleted": seen.get(DELETED, 0),
                         "pending_rebuilds": 0, "status": "missing"}}})


def record_changes(db: Db, library: str, changes: Iterable[tuple[Change, Probe | None]], *,
                   rebuild_kinds: Sequence[str], now: datetime, priority: int,
                   before_batch: Callable[[], None], sent: Callable[[int], None] = _nothing) -> None:
    """Record file changes (each with its probe), a batch at a time: a file added where a missing record
    lies revives it, a rename onto one replaces it (the missing record is removed before the batch is sent)."""
    missing: set[str] | None = None

    def operations() -> Iterator[Any]:
        nonlocal missing
        pending = iter(changes)
        while batch := list(islice(pending, BATCH)):
            if missing is None:
                missing = missing_paths(db, library)
            clear_missing_targets(db, library, [c.path for c, _ in batch if c.type == RENAMED and c.path in missing])
            revive = {c.path for c, _ in batch if c.type == ADDED and c.path in missing}
            yield from file_operations(library, batch, revive=revive, rebuild_kinds=rebuild_kinds, now=now,
                                       priority=priority)

    write_batches(db, "files", operations(), before_batch=before_batch, sent=sent)


def record_hashes(db: Db, library: str, confirmed: Iterable[Confirmed], *, now: datetime,
                  before_batch: Callable[[], None], sent: Callable[[int], None] = _nothing) -> None:
    """Store the hashes of records hashed again and found unchanged (and whether they are still racy)."""
    write_batches(db, "files", refresh_operations(library, confirmed, now), before_batch=before_batch, sent=sent)


def record_events(db: Db, library: str, changes: Iterable[Change], *, added: Iterable[str], removed: Iterable[str],
                  run_id: str, now: datetime, before_batch: Callable[[], None],
                  sent: Callable[[int], None] = _nothing) -> None:
    """One event per file change and per collection added or removed."""
    write_batches(db, "events", event_operations(library, changes, run_id, now), before_batch=before_batch,
                  sent=sent)
    write_batches(db, "events", collection_event_operations(library, added, removed, run_id, now),
                  before_batch=before_batch)


def record_collections(db: Db, library: str, *, tallies: Mapping[str, tuple[int, int]],
                       before: Mapping[str, dict[str, Any]], changes: Iterable[Change], rebuild_kinds: Sequence[str],
                       now: datetime, before_batch: Callable[[], None]) -> None:
    """Update the collections' counters and sync state from the scan's tallies (path → files, bytes)."""
    write_batches(db, "collections", collection_operations(library, tallies, before,
                                                           _activity(changes, rebuild_kinds), now),
                  before_batch=before_batch)


def _activity(changes: Iterable[Change], rebuild_kinds: Sequence[str]) -> dict[str, Counter[str]]:
    """Per collection: the changes by type, and the rebuild requests they make pending."""
    per_collection: dict[str, Counter[str]] = defaultdict(Counter)
    for change in changes:
        seen = per_collection[collection_of(change.path)]
        seen[change.type] += 1
        if needs_rebuild(change):
            seen["pending"] += len(rebuild_kinds)
    return per_collection
