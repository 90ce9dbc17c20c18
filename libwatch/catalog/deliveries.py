"""The `deliveries` collection: redelivered messages a worker began to handle alone.

A message the broker delivers again (``redelivered``) may be the one that killed
its previous worker. The worker handles such a message alone, after counting the
attempt here; the record is deleted once the message is answered (acked,
rejected or requeued). A record that is still there when the message comes back
means a worker died while handling that message alone: it is then rejected
unread instead of killing another worker. Key: ``key_of(kind, body)``, so that a
message without (or with a forged) ``message_id`` is still recognised.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database

from libwatch.catalog.failures import catalog_errors
from libwatch.catalog.schema import durable

Db = Database[dict[str, Any]]


def _coll(db: Db) -> Collection[dict[str, Any]]:
    return durable(db, "deliveries")


def key_of(kind: str, body: bytes) -> str:
    """The record key of a message: its queue's kind and the SHA-256 of its body."""
    return f"{kind}:{hashlib.sha256(body).hexdigest()}"


@catalog_errors
def attempt(db: Db, key: str, *, now: datetime) -> int:
    """Count one more attempt at handling the message alone; returns the attempts so far, this one included."""
    doc = _coll(db).find_one_and_update({"_id": key}, {"$inc": {"attempts": 1}, "$set": {"at": now}},
                                        upsert=True, return_document=ReturnDocument.AFTER)
    return int(doc["attempts"])


@catalog_errors
def forget(db: Db, keys: Iterable[str]) -> None:
    """Drop the records of answered messages."""
    wanted = list(keys)
    if wanted:
        _coll(db).delete_many({"_id": {"$in": wanted}})


@catalog_errors
def forget_older(db: Db, before: datetime) -> int:
    """Drop records last touched before ``before`` (messages that never came back); returns how many."""
    return int(_coll(db).delete_many({"at": {"$lt": before}}).deleted_count)
