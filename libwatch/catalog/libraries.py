"""The `libraries` collection."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from libwatch.catalog.schema import DURABLE, durable
from libwatch.errors import NotFound, UsageError
from libwatch.library import Library


def _coll(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    return durable(db, "libraries")


def insert(db: Database[dict[str, Any]], library: Library) -> Library:
    """Store a new library; a duplicate name is refused."""
    doc = library.to_document()
    doc["created_at"] = datetime.now(UTC)
    doc["state"] = {"status": "new", "generation": 0}
    try:
        _coll(db).insert_one(doc)
    except DuplicateKeyError:
        raise UsageError(f"a library named {library.name!r} already exists") from None
    return Library.from_document(doc)


def get(db: Database[dict[str, Any]], name: str) -> Library:
    """The library called `name`, or NotFound."""
    doc = _coll(db).find_one({"_id": name})
    if doc is None:
        raise NotFound(f"no library named {name!r} (see `libwatch library list`)")
    return Library.from_document(doc)


def find_by_path(db: Database[dict[str, Any]], path: str) -> Library | None:
    doc = _coll(db).find_one({"path": path})
    return None if doc is None else Library.from_document(doc)


def all_libraries(db: Database[dict[str, Any]]) -> list[Library]:
    return [Library.from_document(doc) for doc in _coll(db).find().sort("_id", 1)]


def update(db: Database[dict[str, Any]], name: str, fields: Mapping[str, Any]) -> Library:
    """Set document fields (dotted paths allowed) and return the updated library."""
    result = _coll(db).update_one({"_id": name}, {"$set": dict(fields)})
    if result.matched_count == 0:
        raise NotFound(f"no library named {name!r}")
    return get(db, name)


def delete(db: Database[dict[str, Any]], name: str, *, purge: bool) -> dict[str, int]:
    """Remove a library; with `purge` also its files, collections and events (runs are history)."""
    removed = {"libraries": _coll(db).delete_one({"_id": name}).deleted_count}
    if removed["libraries"] == 0:
        raise NotFound(f"no library named {name!r}")
    if purge:
        for collection in ("files", "collections", "events"):
            removed[collection] = db.get_collection(collection, write_concern=DURABLE).delete_many(
                {"library": name}).deleted_count
    return removed


def content_hashes(db: Database[dict[str, Any]], name: str) -> set[str]:
    """The content hashes of a library's file records (present and missing): one `distinct`, no cursor."""
    return {value for value in db.files.distinct("hash", {"library": name}) if isinstance(value, str)}


def begin_writing(db: Database[dict[str, Any]], name: str, generation: int) -> None:
    """Set the catalog generation a scan is about to write, before its first write.

    A scan killed among its writes then leaves no local stat index (of any host) that
    still matches the catalog.
    """
    _state_update(db, name, {"$set": {"state.generation": generation}})


def record_scan(db: Database[dict[str, Any]], name: str, *, run_id: str, generation: int, counts: Mapping[str, int],
                file_changes: Mapping[str, int], full: bool, changed: bool) -> None:
    """Record a finished scan in the library's state: its run, counts and generation.

    ``file_changes`` (change type → count) are added to the library's running totals;
    ``full`` (every file hashed) and ``changed`` set the last full scan and last change times.
    """
    now = datetime.now(UTC)
    fields: dict[str, Any] = {"state.status": "ok", "state.last_scan": now, "state.generation": generation,
                              "state.last_run_id": run_id, "state.last_counts": dict(counts)}
    if full:
        fields["state.last_full_scan"] = now
    if changed:
        fields["state.last_change_detected"] = now
    update: dict[str, Any] = {"$set": fields}
    if increments := {f"state.totals.{kind}": count for kind, count in file_changes.items() if count}:
        update["$inc"] = increments
    _state_update(db, name, update)


def _state_update(db: Database[dict[str, Any]], name: str, update: Mapping[str, Any]) -> None:
    if _coll(db).update_one({"_id": name}, dict(update)).matched_count == 0:
        raise NotFound(f"no library named {name!r}")
