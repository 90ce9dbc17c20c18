"""Queries for the admin's view and for housekeeping: status, history, events, cleanup.

Nothing here walks a whole library through one cursor: lookups go in `$in` batches of
`BATCH` keys and long reads in pages keyed on `_id` or `path`.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from pymongo import DESCENDING
from pymongo.database import Database

from libwatch.catalog.schema import DURABLE

BATCH: Final = 1000
REBUILD_KINDS: Final = ("cache", "thumbnail")
REBUILD_STATES: Final = ("pending", "queued", "failed")
FINISHED: Final = ("succeeded", "failed", "interrupted", "skipped")

Db = Database[dict[str, Any]]


def _coll(db: Db, name: str):  # type: ignore[no-untyped-def]
    return db.get_collection(name, write_concern=DURABLE)


def _scope(library: str | None) -> dict[str, Any]:
    return {} if library is None else {"library": library}


# ---------------------------------------------------------------- status

def library_totals(db: Db, library: str) -> dict[str, int]:
    """Present and missing files, live collections and their bytes (summed per collection, not per file)."""
    files = _coll(db, "files")
    bytes_total = next(iter(_coll(db, "collections").aggregate([
        {"$match": {"library": library, "missing_since": None}},
        {"$group": {"_id": None, "bytes": {"$sum": "$total_bytes"}}},
    ])), {}).get("bytes", 0)
    return {
        "files": files.count_documents({"library": library, "status": "present"}),
        "missing": files.count_documents({"library": library, "status": "missing"}),
        "collections": _coll(db, "collections").count_documents({"library": library, "missing_since": None}),
        "bytes": int(bytes_total or 0),
    }


def rebuild_totals(db: Db, library: str) -> dict[str, int]:
    """How many cache/thumbnail requests are pending, queued or failed (one pass over the open ones)."""
    totals = dict.fromkeys(REBUILD_STATES, 0)
    open_ = [{f"rebuild.{kind}": {"$in": list(REBUILD_STATES)}} for kind in REBUILD_KINDS]
    groups = _coll(db, "files").aggregate([
        {"$match": {"library": library, "status": "present", "$or": open_}},
        {"$group": {"_id": {kind: f"$rebuild.{kind}" for kind in REBUILD_KINDS}, "n": {"$sum": 1}}},
    ])
    for group in groups:
        for state in group["_id"].values():
            if state in totals:
                totals[state] += group["n"]
    return totals


def job_runs(db: Db, job: str, libraries: Sequence[str | None]) -> dict[str, Any]:
    """A job's run count, failure count (failed or interrupted) and last run, over some libraries."""
    where = {"job": job, "library": {"$in": list(libraries)}}
    runs = _coll(db, "runs")
    return {
        "runs": runs.count_documents(where),
        "failures": runs.count_documents({**where, "status": {"$in": ["failed", "interrupted"]}}),
        "last": runs.find_one(where, sort=[("started_at", DESCENDING)]),
    }


def recent_runs(db: Db, library: str, job: str, limit: int) -> list[dict[str, Any]]:
    """The library's last `limit` finished runs of `job`, newest first."""
    return list(_coll(db, "runs").find({"library": library, "job": job, "status": {"$in": list(FINISHED)}})
                .sort("started_at", DESCENDING).limit(limit))


# ---------------------------------------------------------------- history, events

def find_runs(db: Db, where: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
    """Runs matching `where`, newest first."""
    return list(_coll(db, "runs").find(dict(where)).sort("started_at", DESCENDING).limit(limit))


def find_events(db: Db, where: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
    """Change events matching `where`, newest first."""
    return list(_coll(db, "events").find(dict(where)).sort("detected_at", DESCENDING).limit(limit))


def path_pattern(glob: str) -> re.Pattern[str]:
    """A shell glob as an anchored regex: `*` spans folders (like `find -path`), `?` one character."""
    parts = []
    for piece in re.split(r"(\*|\?|\[[^]]*\])", glob):
        if piece == "*":
            parts.append(".*")
        elif piece == "?":
            parts.append(".")
        elif piece.startswith("[") and piece.endswith("]") and len(piece) > 2:
            inner = piece[1:-1].replace("\\", "\\\\")
            parts.append("[^" + inner[1:] + "]" if inner.startswith("!") else "[" + inner + "]")
        else:
            parts.append(re.escape(piece))
    return re.compile("^" + "".join(parts) + "$")


# ---------------------------------------------------------------- cleanup: cache orphans

def present_hashes(db: Db, hashes: Collection[str]) -> set[str]:
    """Which of `hashes` (at most a batch) some present file record has, in any library."""
    return set(_coll(db, "files").distinct("hash", {"hash": {"$in": list(hashes)}, "status": "present"}))


# ---------------------------------------------------------------- cleanup: missing records

def _paged(db: Db, collection: str, where: Mapping[str, Any], fields: Mapping[str, int]) -> Iterator[dict[str, Any]]:
    last: Any = None
    while True:
        query = dict(where) if last is None else {**where, "_id": {"$gt": last}}
        docs = list(_coll(db, collection).find(query, dict(fields)).sort("_id", 1).limit(BATCH))
        yield from docs
        if len(docs) < BATCH:
            return
        last = docs[-1]["_id"]


def _missing(collection: str, cutoff: datetime) -> dict[str, Any]:
    where: dict[str, Any] = {"missing_since": {"$lt": cutoff}}
    if collection == "files":
        where["status"] = "missing"
    return where


def missing_before(db: Db, collection: str, library: str, cutoff: datetime) -> Iterator[dict[str, Any]]:
    """`files` or `collections` records of `library` missing since before `cutoff` (`_id`, `path`)."""
    return _paged(db, collection, {"library": library, **_missing(collection, cutoff)}, {"_id": 1, "path": 1})


def delete_missing(db: Db, collection: str, ids: Sequence[Any], cutoff: datetime) -> int:
    """Delete records by `_id`, only those still missing past `cutoff` (one revived meanwhile stays)."""
    deleted = 0
    for start in range(0, len(ids), BATCH):
        deleted += _coll(db, collection).delete_many(
            {"_id": {"$in": list(ids[start:start + BATCH])}, **_missing(collection, cutoff)}).deleted_count
    return deleted


# ---------------------------------------------------------------- cleanup: events

def unprocessed_events(db: Db, library: str) -> Iterator[dict[str, Any]]:
    """The library's unprocessed change events, page by page."""
    return _paged(db, "events", {"library": library, "processed": False},
                  {"_id": 1, "path": 1, "type": 1, "hash": 1})


def rebuild_of(db: Db, library: str, paths: Collection[str]) -> dict[str, dict[str, Any]]:
    """The file records at `paths` (status, hash, rebuild), by path."""
    return {doc["path"]: doc for doc in _coll(db, "files").find(
        {"library": library, "path": {"$in": list(paths)}}, {"path": 1, "status": 1, "hash": 1, "rebuild": 1})}


def mark_processed(db: Db, ids: Sequence[Any], now: datetime) -> int:
    """Mark events processed (the TTL index on `processed_at` then ages them out)."""
    marked = 0
    for start in range(0, len(ids), BATCH):
        marked += _coll(db, "events").update_many(
            {"_id": {"$in": list(ids[start:start + BATCH])}, "processed": False},
            {"$set": {"processed": True, "processed_at": now}}).modified_count
    return marked


def _old_events(library: str | None, cutoff: datetime) -> dict[str, Any]:
    return {**_scope(library), "processed": True, "processed_at": {"$lt": cutoff}}


def count_old_events(db: Db, library: str | None, cutoff: datetime) -> int:
    """Processed events older than `cutoff` (the TTL index may remove them first)."""
    return _coll(db, "events").count_documents(_old_events(library, cutoff))


def delete_old_events(db: Db, library: str | None, cutoff: datetime) -> int:
    return _coll(db, "events").delete_many(_old_events(library, cutoff)).deleted_count


# ---------------------------------------------------------------- cleanup: runs and locks

def old_runs(db: Db, library: str | None, cutoff: datetime) -> list[Any]:
    """Ids of finished runs that ended before `cutoff`."""
    where = {**_scope(library), "status": {"$in": list(FINISHED)}, "finished_at": {"$lt": cutoff}}
    return [doc["_id"] for doc in _coll(db, "runs").find(where, {"_id": 1})]


def delete_runs(db: Db, ids: Sequence[Any]) -> int:
    deleted = 0
    for start in range(0, len(ids), BATCH):
        deleted += _coll(db, "runs").delete_many(
            {"_id": {"$in": list(ids[start:start + BATCH])}, "status": {"$in": list(FINISHED)}}).deleted_count
    return deleted


def running_runs(db: Db, library: str | None) -> list[dict[str, Any]]:
    return list(_coll(db, "runs").find({**_scope(library), "status": "running"}))


def all_locks(db: Db) -> list[dict[str, Any]]:
    return list(_coll(db, "locks").find())


def release_lock(db: Db, lock_id: str, owner: Any) -> int:
    """Delete a lease if `owner` still holds it (a lease taken over meanwhile stays)."""
    return _coll(db, "locks").delete_one({"_id": lock_id, "owner": owner}).deleted_count


# ---------------------------------------------------------------- cleanup: stuck rebuild requests

def _stuck(library: str, kind: str, cutoff: datetime) -> dict[str, Any]:
    # A request queued without a timestamp is as stuck as an old one: nothing says it was delivered.
    return {"library": library, f"rebuild.{kind}": "queued",
            "$or": [{f"rebuild.{kind}_at": {"$lt": cutoff}}, {f"rebuild.{kind}_at": None}]}


def count_stuck(db: Db, library: str, kind: str, cutoff: datetime) -> int:
    """Rebuild requests of `kind` queued before `cutoff` and never finished."""
    return _coll(db, "files").count_documents(_stuck(library, kind, cutoff))


def requeue_stuck(db: Db, library: str, kind: str, cutoff: datetime) -> int:
    """Put stuck queued requests back to `pending`, so the next publish retries them."""
    return _coll(db, "files").update_many(_stuck(library, kind, cutoff),
                                          {"$set": {f"rebuild.{kind}": "pending"}}).modified_count
