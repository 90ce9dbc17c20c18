"""Fixtures for the rebuild pipeline: an isolated broker topology, a library of real images with records.

Records are inserted in the shape the scan writes (``libwatch.catalog.files``), so
these tests do not depend on the scan; the end-to-end tests run ``libwatch scan``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pytest
import xxhash
from bson import ObjectId

from libwatch.catalog import libraries as catalog_libraries
from libwatch.config import Settings
from libwatch.core.paths import b64_of, collection_of, is_exact, key_of
from libwatch.library import Library

from support import sample, write_image


@pytest.fixture
def broker_settings(settings: Settings, amqp_url: str) -> Settings:
    """The test's settings with the broker configured."""
    return Settings(**{**{f: getattr(settings, f) for f in settings.__dataclass_fields__}, "amqp_url": amqp_url})


def content_hash(data: bytes) -> str:
    return "xxh3-128:" + xxhash.xxh3_128_hexdigest(data)


@dataclass
class Photos:
    """A library on disk and in the catalog; ``ids`` maps relative paths (as keys) to record ids."""

    db: Any
    name: str
    root: Path
    ids: dict[str, str]

    def add(self, relative: str | bytes, data: bytes | None = None, *, size: tuple[int, int] = (64, 48),
            color: tuple[int, int, int] = (200, 40, 40), states: Mapping[str, str | None] | None = None) -> str:
        """Write an image (or ``data``) and insert its record as a scan would; returns the record id."""
        raw = relative if isinstance(relative, bytes) else relative.encode()
        target = Path(os.fsdecode(os.fsencode(self.root) + b"/" + raw))
        if data is None:
            write_image(target, size, color, fmt="JPEG")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return self.insert(raw, target.read_bytes(), states=states)

    def insert(self, raw: bytes, data: bytes, *, states: Mapping[str, str | None] | None = None) -> str:
        """Insert the record of a file whose content is ``data``."""
        now = datetime.now(UTC)
        path, digest = key_of(raw), content_hash(data)
        states = {"cache": "pending", "thumbnail": "pending", **(states or {})}
        folder = collection_of(path)
        self.db.collections.update_one({"library": self.name, "path": folder},
                                       {"$setOnInsert": {"first_seen": now}}, upsert=True)
        doc = {"_id": ObjectId(), "library": self.name, "path": path,
               "path_b64": None if is_exact(raw) else b64_of(raw), "collection": folder, "size": len(data),
               "mtime_ns": 1, "hash": digest, "status": "present",
               "rebuild": {"hash": digest, "priority": 5, **states,
                           **{f"{k}_at": now for k in states}, **{f"{k}_error": None for k in states}}}
        self.db.files.insert_one(doc)
        self.ids[path] = str(doc["_id"])
        return str(doc["_id"])

    def record(self, path: str) -> dict[str, Any]:
        doc = self.db.files.find_one({"library": self.name, "path": path})
        assert doc is not None
        return doc

    def states(self) -> dict[str, tuple[str | None, str | None]]:
        """(cache, thumbnail) state of every record by path."""
        return {d["path"]: (d["rebuild"].get("cache"), d["rebuild"].get("thumbnail"))
                for d in self.db.files.find({"library": self.name})}


@pytest.fixture
def photos(db: Any, tmp_path: Path) -> Photos:
    """An empty library ``photos`` registered in the test's catalog."""
    root = tmp_path / "photos"
    root.mkdir()
    catalog_libraries.insert(db, Library(name="photos", path=str(root)))
    return Photos(db, "photos", root, {})


def drain(amqp_url: str, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
    """Take every ready message of a queue with plain pika (independent of libwatch.bus)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        got = []
        while True:
            method, props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return got
            got.append((props, body))
    finally:
        connection.close()


def add_samples(names: list[str], photos: Photos) -> dict[str, str]:
    """Write the image factory's samples into the library with records; returns name → record id."""
    ids = {}
    for name in names:
        data = sample(name)
        (photos.root / name).write_bytes(data)
        ids[name] = photos.insert(name.encode(), data)
    return ids
