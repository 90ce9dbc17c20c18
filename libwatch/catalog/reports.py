"""Queries for the admin's view: status, history, events, failed files (housekeeping.py has cleanup's).

Nothing here walks a whole library through one cursor: long reads go in pages keyed on
an indexed field, and lookups of a batch of keys read that batch's index range (see `_ranged`).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pymongo import DESCENDING
from pymongo.database import Database

from libwatch.catalog.runs import FINISHED
from libwatch.catalog.schema import durable
from libwatch.messages import KINDS as REBUILD_KINDS

REBUILD_STATES: Final = ("pending", "queued", "failed")

Db = Database[dict[str, Any]]


# ---------------------------------------------------------------- status

def library_totals(db: Db, library: str) -> dict[str, int]:
    """Present and missing files, live collections and their bytes (summed per collection, not per file)."""
    files = durable(db, "files")
    bytes_total = next(iter(durable(db, "collections").aggregate([
        {"$match": {"library": library, "missing_since": None}},
        {"$group": {"_id": None, "bytes": {"$sum": "$total_bytes"}}},
    ])), {}).get("bytes", 0)
    return {
        "files": files.count_documents({"library": library, "status": "present"}),
        "missing": files.count_documents({"library": library, "status": "missing"}),
        "collections": durable(db, "collections").count_documents({"library": library, "missing_since": None}),
        "bytes": int(bytes_total or 0),
    }


def rebuild_totals(db: Db, library: str) -> dict[str, int]:
    """How many cache/thumbnail requests are pending, queued or failed (one pass over the open ones)."""
    totals = dict.fromkeys(REBUILD_STATES, 0)
    open_ = [{f"rebuild.{kind}": {"$in": list(REBUILD_STATES)}} for kind in REBUILD_KINDS]
    groups = durable(db, "files").aggregate([
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
    runs = durable(db, "runs")
    return {
        "runs": runs.count_documents(where),
        "failures": runs.count_documents({**where, "status": {"$in": ["failed", "interrupted"]}}),
        "last": runs.find_one(where, sort=[("started_at", DESCENDING)]),
    }


def recent_runs(db: Db, library: str, job: str, limit: int) -> list[dict[str, Any]]:
    """The library's last `limit` finished runs of `job`, newest first."""
    return list(durable(db, "runs").find({"library": library, "job": job, "status": {"$in": list(FINISHED)}})
                .sort("started_at", DESCENDING).limit(limit))


def _failed(library: str | None) -> dict[str, Any]:
    return {**({} if library is None else {"library": library}), "status": "present",
            "$or": [{"probe_error": {"$ne": None}}, *({f"rebuild.{kind}": "failed"} for kind in REBUILD_KINDS)]}


def failed_files(db: Db, library: str | None, limit: int) -> list[dict[str, Any]]:
    """Present files whose header could not be read or whose cache image or thumbnail failed, newest first."""
    return list(durable(db, "files").find(_failed(library)).sort("updated_at", DESCENDING).limit(limit))


def count_failed_files(db: Db, library: str | None) -> int:
    """How many present files have a failed header probe or render."""
    return int(durable(db, "files").count_documents(_failed(library)))


# ---------------------------------------------------------------- history, events

def find_runs(db: Db, where: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
    """Runs matching `where`, newest first."""
    return list(durable(db, "runs").find(dict(where)).sort("started_at", DESCENDING).limit(limit))


def find_events(db: Db, where: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
    """Change events matching `where`, newest first."""
    return list(durable(db, "events").find(dict(where)).sort("detected_at", DESCENDING).limit(limit))


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
