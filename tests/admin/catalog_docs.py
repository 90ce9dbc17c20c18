"""Catalog documents as the scan writes them, and cache files as the worker writes them.

The admin commands read what other parts write; these builders write the same shapes
straight into the test's real SecantusDB database.
"""
from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from libwatch import cachefiles
from libwatch.services import libraries

_counter = itertools.count(1)


def content_hash(seed: int) -> str:
    """A well-formed `xxh3-128:<32 hex>` hash, distinct per seed."""
    return f"xxh3-128:{seed:032x}"


def add_library(db: Any, name: str, root: Path, **options: Any) -> None:
    root.mkdir(parents=True, exist_ok=True)
    libraries.add(db, name, root)
    if options:
        libraries.set_options(db, name, **options)


def file_doc(library: str, path: str, seed: int, *, status: str = "present", missing_since: datetime | None = None,
             cache: str | None = "done", thumbnail: str | None = "done", queued_at: datetime | None = None
             ) -> dict[str, Any]:
    now = datetime.now(UTC)
    collection = path.rpartition("/")[0]
    return {"library": library, "path": path, "collection": collection, "size": 100 + seed, "mtime_ns": 1,
            "ctime_ns": 1, "inode": next(_counter), "hash": content_hash(seed), "racy": False,
            "status": status, "missing_since": missing_since,
            "rebuild": {"cache": cache, "thumbnail": thumbnail, "hash": content_hash(seed),
                        "cache_at": queued_at, "thumbnail_at": queued_at},
            "first_seen": now, "updated_at": now}


def event_doc(library: str, path: str, seed: int, *, kind: str = "added", detected_at: datetime | None = None,
              processed_at: datetime | None = None) -> dict[str, Any]:
    return {"library": library, "collection": path.rpartition("/")[0], "path": path, "old_path": None,
            "type": kind, "detected_at": detected_at or datetime.now(UTC), "size": 100 + seed,
            "hash": content_hash(seed), "run_id": "r1", "processed": processed_at is not None,
            "processed_at": processed_at}


def cache_file(cache_dir: Path, kind: str, seed: int) -> Path:
    path = cachefiles.cache_path(cache_dir, kind, content_hash(seed), "jpg")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"rendered " + str(seed).encode() * 10)
    return path
