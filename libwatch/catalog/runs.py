"""The `runs` collection: one document per execution of scan, rebuild, cleanup or worker."""
from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from pymongo.database import Database

from libwatch.catalog.schema import DURABLE

JOBS: Final = ("scan", "rebuild", "cleanup", "worker")
TRIGGERS: Final = ("manual", "timer", "path", "cron")
RUNNING, SUCCEEDED, FAILED, INTERRUPTED, SKIPPED = "running", "succeeded", "failed", "interrupted", "skipped"


def _coll(db: Database[dict[str, Any]]):  # type: ignore[no-untyped-def]
    return db.get_collection("runs", write_concern=DURABLE)


def start(db: Database[dict[str, Any]], job: str, library: str | None, trigger: str,
          *, status: str = RUNNING, **extra: Any) -> str:
    """Record that a run began; returns its id."""
    run_id = uuid.uuid4().hex
    _coll(db).insert_one({
        "_id": run_id, "job": job, "library": library, "trigger": trigger, "host": socket.gethostname(),
        "pid": os.getpid(), "started_at": datetime.now(UTC), "finished_at": None, "status": status,
        "error": None, "counts": {}, **extra,
    })
    return run_id


def finish(db: Database[dict[str, Any]], run_id: str, status: str, *, counts: Mapping[str, int] | None = None,
           error: str | None = None, **extra: Any) -> None:
    """Record how a run ended (only a run still `running` changes: an interrupted one stays so)."""
    fields: dict[str, Any] = {"status": status, "finished_at": datetime.now(UTC), "error": error, **extra}
    if counts is not None:
        fields["counts"] = dict(counts)
    _coll(db).update_one({"_id": run_id, "status": RUNNING}, {"$set": fields})


def mark_interrupted(db: Database[dict[str, Any]], run_id: str, reason: str) -> bool:
    """Mark a run that died without finishing as interrupted; True if it was still running."""
    result = _coll(db).update_one({"_id": run_id, "status": RUNNING}, {"$set": {
        "status": INTERRUPTED, "finished_at": datetime.now(UTC), "error": reason}})
    return result.modified_count == 1


def get(db: Database[dict[str, Any]], run_id: str) -> dict[str, Any] | None:
    return _coll(db).find_one({"_id": run_id})


def record_skipped(db: Database[dict[str, Any]], job: str, library: str | None, trigger: str, why: str) -> str:
    """Record a run that did nothing on purpose (e.g. a paused library)."""
    run_id = start(db, job, library, trigger, status=SKIPPED, reason=why)
    _coll(db).update_one({"_id": run_id}, {"$set": {"finished_at": datetime.now(UTC)}})
    return run_id
