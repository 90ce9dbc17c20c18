"""The catalog's collections and indexes, created idempotently, with a stored schema version."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from pymongo import ASCENDING, DESCENDING, IndexModel, WriteConcern
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import PyMongoError

from libwatch.errors import CatalogUnavailable, UsageError

SCHEMA_VERSION: Final = 1
# Every write that must survive a crash: measured on SecantusDB, a kill -9 of the server
# lost acknowledged writes under the default write concern and none with j=True.
DURABLE: Final = WriteConcern(w="majority", j=True)
EVENTS_TTL_S: Final = 90 * 24 * 3600  # processed change events are kept this long



def durable(db: Database[dict[str, Any]], name: str) -> Collection[dict[str, Any]]:
    """Collection `name` of `db`, written with the `DURABLE` write concern."""
    return db.get_collection(name, write_concern=DURABLE)


# Only the indexes the design names: on SecantusDB every secondary index adds about a
# millisecond to each write of a file record (measured), and the rebuild-state reads
# go through bounded (library, path) ranges instead.
INDEXES: Final[dict[str, list[IndexModel]]] = {
    "collections": [IndexModel([("library", ASCENDING), ("path", ASCENDING)], unique=True)],
    "files": [
        IndexModel([("library", ASCENDING), ("path", ASCENDING)], unique=True),
        IndexModel([("library", ASCENDING), ("status", ASCENDING)]),
        IndexModel([("hash", ASCENDING)]),
    ],
    "events": [
        IndexModel([("library", ASCENDING), ("processed", ASCENDING), ("detected_at", ASCENDING)]),
        IndexModel([("processed_at", ASCENDING)], expireAfterSeconds=EVENTS_TTL_S),
        IndexModel([("library", ASCENDING), ("detected_at", DESCENDING)]),
    ],
    "runs": [
        IndexModel([("library", ASCENDING), ("started_at", ASCENDING)]),
        IndexModel([("status", ASCENDING)]),
    ],
}


def ensure_schema(db: Database[dict[str, Any]]) -> None:
    """Create the indexes and record the schema version; refuse a catalog from a newer libwatch."""
    try:
        meta = db.get_collection("meta", write_concern=DURABLE)
        found = meta.find_one({"_id": "schema"})
        if found is not None and found.get("version", 0) > SCHEMA_VERSION:
            raise UsageError(f"the catalog {db.name} has schema version {found['version']}; "
                             f"this libwatch understands up to {SCHEMA_VERSION}: upgrade libwatch")
        if found is not None and found.get("version") == SCHEMA_VERSION:
            return
        for name, models in INDEXES.items():
            db[name].create_indexes(models)
        meta.update_one({"_id": "schema"},
                        {"$set": {"version": SCHEMA_VERSION, "updated_at": datetime.now(UTC)}}, upsert=True)
    except PyMongoError as error:
        raise CatalogUnavailable(f"cannot prepare the catalog {db.name}: {error}") from None
