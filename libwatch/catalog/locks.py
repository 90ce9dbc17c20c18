"""Leases in the `locks` collection: one holder per library, renewed while the run lives.

A lease whose holder died expires and is taken over (its run is marked interrupted); a
holder that finds its lease taken over must stop before committing more (`check`).
`find_one_and_update` is fine here: `locks` holds one small document per library.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from libwatch import processes
from libwatch.catalog import runs
from libwatch.catalog.schema import durable
from libwatch.errors import LeaseLost, Locked

log = logging.getLogger("libwatch.locks")


def _coll(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    return durable(db, "locks")


def describe_holder(doc: dict[str, Any]) -> str:
    return f"run {doc.get('owner')} (pid {doc.get('pid')} on {doc.get('host')}, lease until {doc.get('expires_at')})"


class Lease:
    """A held lease on `key` (e.g. "scan:photos"), renewed by a background thread."""

    def __init__(self, db: Database[dict[str, Any]], key: str, owner: str, duration_s: float) -> None:
        self.db, self.key, self.owner, self.duration_s = db, key, owner, duration_s
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{key}", daemon=True)

    def _fields(self) -> dict[str, Any]:
        return {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                "expires_at": datetime.now(UTC) + timedelta(seconds=self.duration_s)}

    def acquire(self, *, wait_s: float = 0.0) -> Lease:
        """Take the lease, taking over an expired one; raise Locked naming the holder."""
        deadline = time.monotonic() + wait_s
        while True:
            now = datetime.now(UTC)
            try:
                before = _coll(self.db).find_one_and_update(
                    {"_id": self.key, "$or": [{"expires_at": {"$lt": now}}, {"owner": self.owner}]},
                    {"$set": self._fields()}, upsert=True, return_document=ReturnDocument.BEFORE)
                break
            except DuplicateKeyError:
                holder = _coll(self.db).find_one({"_id": self.key}) or {}
                if processes.gone(holder.get("host"), holder.get("pid")):
                    # Same host, process gone (kill -9, OOM): no need to wait for the lease to run out.
                    _coll(self.db).update_one({"_id": self.key, "owner": holder.get("owner")},
                                              {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}})
                    continue
                if time.monotonic() >= deadline:
                    raise Locked(f"{self.key} is held by {describe_holder(holder)}") from None
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        if before is not None and before.get("owner") not in (None, self.owner):
            log.warning("took over the expired lease %s from %s", self.key, describe_holder(before))
            runs.mark_interrupted(self.db, before["owner"], "lease expired: the run died or hung")
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.duration_s / 3):
            try:
                result = _coll(self.db).update_one({"_id": self.key, "owner": self.owner}, {"$set": self._fields()})
            except PyMongoError as error:
                log.warning("could not renew lease %s: %s", self.key, error)
                continue
            if result.matched_count == 0:
                self._lost.set()
                return

    def check(self) -> None:
        """Raise LeaseLost if another run took the lease over: call before committing."""
        if self._lost.is_set() or _coll(self.db).count_documents({"_id": self.key, "owner": self.owner}) == 0:
            self._lost.set()
            raise LeaseLost(f"the lease {self.key} was taken over by another run; stopped before committing more")

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        _coll(self.db).delete_one({"_id": self.key, "owner": self.owner})
