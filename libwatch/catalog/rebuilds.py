"""Rebuild state of file records (``files.rebuild``): the outbox's reads and the worker's updates.

A record's ``rebuild`` sub-document holds, per kind (``cache``, ``thumbnail``), a
state (``pending`` → ``queued`` → ``done``/``failed``; None when the library does
not want that kind), ``<kind>_at`` and ``<kind>_error``, and for both kinds the
``hash`` the request is for, the message ``priority`` and ``force`` (render even
when the cache already holds that content: set by ``rebuild --all``).

Reads go in path ranges on the unique (library, path) index, bounded on both
sides and cut at collection paths, never one cursor over a library. Updates are
bulk operations over a page's ids. A PyMongo failure
surfaces as ``CatalogUnavailable``, so services need not import pymongo.

The bulk state flips (``mark_queued``, ``mark_done``) match a batch as
``_id in ids and rebuild.hash in hashes`` instead of one exact (id, hash) pair per
record: on SecantusDB one ``update_many`` over a short ``$in`` list costs about
as much as a single ``update_one``, while ``$or`` of pairs is two orders of
magnitude slower. The looser match is sound for ``done`` because the cache is
content-addressed: a record whose current hash is any hash just rendered does
have its rendering. For ``queued`` the only imprecision is a record rewritten,
during the publish, to exactly the content of another record of the same batch:
it shows ``queued`` without a message of its own, and ``rebuild --pending``
re-publishes it after the queued timeout.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database

from libwatch.catalog.failures import catalog_errors
from libwatch.catalog.files import Probe, collection_documents, path_ranges, probe_fields
from libwatch.catalog.schema import durable
from libwatch.messages import KINDS

PENDING: Final = "pending"
QUEUED: Final = "queued"
DONE: Final = "done"
FAILED: Final = "failed"
PAGE: Final = 1000
# SecantusDB's cost of an `$in` grows with the square of the list: 50 ids take about 7 ms
# at 20,000 records, 1,000 ids about 2 s. Short lists keep each read and update cheap.
IN_CHUNK: Final = 50
MAX_ERROR: Final = 500
_FIELDS: Final = {"_id": 1, "library": 1, "path": 1, "path_b64": 1, "collection": 1, "hash": 1, "status": 1,
                  "rebuild": 1, "probe_error": 1}

Db = Database[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Scope:
    """Which records of a library: all, one collection (exactly), or a path (a file or a folder's subtree)."""

    library: str
    collection: str | None = None
    path: str | None = None

    def query(self) -> dict[str, Any]:
        """The filter of the present records in scope."""
        query: dict[str, Any] = {"library": self.library, "status": "present"}
        if self.collection is not None:
            query["collection"] = self.collection
        if self.path:
            # "0" is the character after "/": the range is exactly the folder's subtree.
            query["$or"] = [{"path": self.path}, {"path": {"$gt": self.path + "/", "$lt": self.path + "0"}}]
        return query

    def bounds(self) -> tuple[str, str | None]:
        """A path range holding every record in scope (the query narrows it down)."""
        prefix = self.path or self.collection
        if not prefix:
            return "", None
        return (self.path if self.path else prefix + "/"), prefix + "0"


@dataclass(frozen=True, slots=True)
class FileState:
    """What the rebuild services need of a file record."""

    id: str
    library: str
    path: str
    path_b64: str | None
    collection: str
    hash: str | None
    present: bool
    states: Mapping[str, str | None] = field(default_factory=dict)
    rebuild_hash: str | None = None
    priority: int | None = None
    force: bool = False
    probe_error: str | None = None  # why its header could not be read

    def wants(self, kind: str, state: str) -> bool:
        """Whether the record's ``kind`` rendering is in ``state`` for its current content."""
        return self.states.get(kind) == state and self.rebuild_hash == self.hash


@dataclass(frozen=True, slots=True)
class RenderResult:
    """A finished rendering to record: ``error`` empty for done."""

    id: str
    kind: str
    hash: str
    error: str = ""


def _files(db: Db) -> Collection[dict[str, Any]]:
    return durable(db, "files")


def _state(doc: Mapping[str, Any]) -> FileState:
    rebuild = doc.get("rebuild") or {}
    return FileState(
        id=str(doc["_id"]), library=doc["library"], path=doc["path"], path_b64=doc.get("path_b64"),
        collection=doc.get("collection", ""), hash=doc.get("hash"), present=doc.get("status") == "present",
        states={kind: rebuild.get(kind) for kind in KINDS}, rebuild_hash=rebuild.get("hash"),
        priority=rebuild.get("priority"), force=bool(rebuild.get("force")), probe_error=doc.get("probe_error"))


def _object_ids(ids: Iterable[str]) -> list[ObjectId]:
    found = []
    for value in ids:
        try:
            found.append(ObjectId(value))
        except (InvalidId, TypeError):
            continue  # not a catalog id: no such record
    return found


def _chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _in_state(kinds: Sequence[str], state: str) -> dict[str, Any]:
    return {"$or": [{f"rebuild.{kind}": state} for kind in kinds]}



@catalog_errors
def _folders(db: Db, library: str) -> dict[str, int]:
    return {doc["path"]: int(doc.get("file_count") or 0)
            for doc in db.collections.find({"library": library}, {"path": 1, "file_count": 1})}


@catalog_errors
def _range(db: Db, query: Mapping[str, Any], low: str, high: str | None) -> list[dict[str, Any]]:
    bounds = {"$gte": low} if high is None else {"$gte": low, "$lt": high}
    return list(_files(db).find({"$and": [dict(query), {"path": bounds}]}, _FIELDS).sort("path", 1))


def _pages(db: Db, scope: Scope, query: Mapping[str, Any], page: int) -> Iterator[list[FileState]]:
    """The matching records in path order, in lists of at most ``page``.

    Every query is bounded on both sides (``low <= path < high``, ranges cut at
    collection paths), not paged with ``path > last`` and a limit: SecantusDB
    materialises every match of a query before applying the limit, so that would
    read the rest of the library once per page.
    """
    low, high = scope.bounds()
    for start, stop in path_ranges(_folders(db, scope.library), low, high, page=page):
        docs = _range(db, query, start, stop)
        for first in range(0, len(docs), page):
            yield [_state(doc) for doc in docs[first:first + page]]


def pending_pages(db: Db, scope: Scope, kinds: Sequence[str], *, page: int = PAGE) -> Iterator[list[FileState]]:
    """Pages of present records in scope with at least one of ``kinds`` pending."""
    yield from _pages(db, scope, {**scope.query(), "$and": [_in_state(kinds, PENDING)]}, page)


def failed_pages(db: Db, scope: Scope, kinds: Sequence[str], *, page: int = PAGE) -> Iterator[list[FileState]]:
    """Pages of present records in scope whose header could not be read or with one of ``kinds`` failed
    (what `libwatch failed` lists)."""
    failed = [{"probe_error": {"$ne": None}}, *_in_state(kinds, FAILED)["$or"]]
    yield from _pages(db, scope, {**scope.query(), "$and": [{"$or": failed}]}, page)


def record_pages(db: Db, scope: Scope, *, page: int = PAGE) -> Iterator[list[FileState]]:
    """Pages of every present record in scope."""
    yield from _pages(db, scope, scope.query(), page)


@catalog_errors
def count_pending(db: Db, scope: Scope, kinds: Sequence[str]) -> int:
    """How many present records in scope still have one of ``kinds`` pending."""
    return int(_files(db).count_documents({**scope.query(), "$and": [_in_state(kinds, PENDING)]}))


@catalog_errors
def requeue_stale(db: Db, scope: Scope, kinds: Sequence[str], *, queued_before: datetime) -> int:
    """Set back to pending what was queued before ``queued_before`` (a lost or purged message)."""
    changed = 0
    for kind in kinds:
        result = _files(db).update_many(
            {**scope.query(), f"rebuild.{kind}": QUEUED, f"rebuild.{kind}_at": {"$lt": queued_before}},
            {"$set": {f"rebuild.{kind}": PENDING}})
        changed += result.modified_count
    return changed


@catalog_errors
def mark_pending(db: Db, records: Sequence[FileState], kinds: Sequence[str], *, priority: int, force: bool,
                 now: datetime) -> int:
    """Ask for ``kinds`` of ``records`` to be rebuilt (the outbox then publishes them)."""
    fields: dict[str, Any] = {"rebuild.priority": priority, "rebuild.force": force}
    for kind in kinds:
        fields.update({f"rebuild.{kind}": PENDING, f"rebuild.{kind}_at": now, f"rebuild.{kind}_error": None})
    current = [r.id for r in records if r.hash is not None and r.rebuild_hash == r.hash]
    changed = 0
    for chunk in _chunks(_object_ids(current)):
        changed += _files(db).update_many({"_id": {"$in": list(chunk)}}, {"$set": fields}).modified_count
    # Records without a rebuild hash for their content (older than the rebuild fields) get one.
    stale = [UpdateOne({"_id": ObjectId(r.id), "hash": r.hash}, {"$set": {**fields, "rebuild.hash": r.hash}})
             for r in records if r.hash is not None and r.rebuild_hash != r.hash]
    if stale:
        changed += _files(db).bulk_write(stale, ordered=False).modified_count
    return changed


@catalog_errors
def mark_queued(db: Db, kind: str, published: Sequence[tuple[str, str]], *, now: datetime) -> int:
    """Flip confirmed ``(id, hash)`` requests from pending to queued, only where the hash is still current."""
    changed = 0
    for chunk in _chunks(published):
        result = _files(db).update_many(
            {"_id": {"$in": _object_ids(i for i, _ in chunk)}, "rebuild.hash": {"$in": [h for _, h in chunk]},
             f"rebuild.{kind}": PENDING},
            {"$set": {f"rebuild.{kind}": QUEUED, f"rebuild.{kind}_at": now}})
        changed += result.modified_count
    return changed


@catalog_errors
def unqueue(db: Db, requests: Sequence[tuple[str, str, str]], *, now: datetime) -> int:
    """Set queued ``(id, kind, hash)`` requests back to pending: their message was used up unserved.

    The worker found no file at the record's path (moved or deleted since the scan). A
    move keeps the record and its rebuild state and asks for no new rendering, so a
    request left queued would never be served; pending, the scan that records the move
    publishes it again (and one that records a deletion leaves nothing to publish).
    """
    updates = [UpdateOne({"_id": ObjectId(i), "rebuild.hash": h, f"rebuild.{kind}": QUEUED},
                         {"$set": {f"rebuild.{kind}": PENDING, f"rebuild.{kind}_at": now}})
               for i, kind, h in requests]
    return _files(db).bulk_write(updates, ordered=False).modified_count if updates else 0


@catalog_errors
def records_by_id(db: Db, ids: Iterable[str]) -> dict[str, FileState]:
    """The records with these ids (unknown or malformed ids are simply absent)."""
    found: dict[str, FileState] = {}
    for chunk in _chunks(_object_ids(dict.fromkeys(ids))):
        for doc in _files(db).find({"_id": {"$in": list(chunk)}}, _FIELDS):
            state = _state(doc)
            found[state.id] = state
    return found


@catalog_errors
def record_results(db: Db, results: Sequence[RenderResult], *, now: datetime) -> int:
    """Set each rendering's kind done (or failed with its error) where the record's hash is still the one rendered.

    A record's cache image and thumbnail done in the same batch are set by one write:
    on SecantusDB each document updated costs about a millisecond.
    """
    kinds_done: dict[str, set[str]] = {}
    hashes: dict[str, str] = {}
    for result in results:
        if not result.error:
            kinds_done.setdefault(result.id, set()).add(result.kind)
            hashes[result.id] = result.hash
    by_kinds: dict[tuple[str, ...], list[str]] = {}
    for record_id, kinds in kinds_done.items():
        by_kinds.setdefault(tuple(sorted(kinds)), []).append(record_id)
    changed = 0
    for kinds, ids in by_kinds.items():
        fields: dict[str, Any] = {"rebuild.force": False}
        for kind in kinds:
            fields.update({f"rebuild.{kind}": DONE, f"rebuild.{kind}_at": now, f"rebuild.{kind}_error": None})
        for chunk in _chunks(ids):
            result = _files(db).update_many(
                {"_id": {"$in": _object_ids(chunk)}, "rebuild.hash": {"$in": [hashes[i] for i in chunk]}},
                {"$set": fields})
            changed += result.modified_count
    failed = [UpdateOne({"_id": ObjectId(r.id), "rebuild.hash": r.hash},
                        {"$set": {f"rebuild.{r.kind}": FAILED, f"rebuild.{r.kind}_at": now,
                                  f"rebuild.{r.kind}_error": r.error[:MAX_ERROR]}})
              for r in results if r.error]
    if failed:
        changed += _files(db).bulk_write(failed, ordered=False).modified_count
    return changed


@catalog_errors
def record_probes(db: Db, probed: Sequence[tuple[FileState, Probe]], *, now: datetime) -> int:
    """Record each record's header read again (size and format, or the reason it still fails), where
    its content is still the one probed; ``updated_at`` becomes ``now`` (the failed listing's "when")."""
    updates = [UpdateOne({"_id": ObjectId(record.id), "hash": record.hash},
                         {"$set": {**probe_fields(probe), "updated_at": now}}) for record, probe in probed]
    return _files(db).bulk_write(updates, ordered=False).modified_count if updates else 0


@catalog_errors
def collection_ids(db: Db, library: str) -> dict[str, str]:
    """``collections._id`` (as text) of every folder of a library, by path.

    One read of the library's collections (one document per folder), not ``$in`` batches:
    SecantusDB answers ``$in`` with a full collection scan.
    """
    return {path: str(doc["_id"]) for path, doc in collection_documents(db, library).items()}


@catalog_errors
def library_roots(db: Db) -> dict[str, str]:
    """Every library's root folder by name (the worker checks message paths against them)."""
    return {doc["_id"]: doc["path"] for doc in db.libraries.find({}, {"_id": 1, "path": 1})}


@catalog_errors
def following_symlinks(db: Db) -> frozenset[str]:
    """The names of the libraries that follow symbolic links (the worker follows them within the root only)."""
    return frozenset(doc["_id"] for doc in db.libraries.find({"follow_symlinks": True}, {"_id": 1}))
