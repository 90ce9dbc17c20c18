"""A file whose header the probe cannot identify is recorded failed by the scan at once (issue 12.8).

A real scan of real files: unreadable ``.jpg`` files (text, empty, random bytes) and a
header declaring a decompression bomb get ``rebuild.<kind> = failed`` with the reason and
a time, and no rendering is asked for (nothing pending, nothing published); a good image
beside them is pending as before, and one rewritten into a good image is pending again.
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from libwatch.bus import Topology
from libwatch.catalog import libraries as catalog_libraries
from libwatch.config import Settings
from libwatch.services import outbox
from libwatch.services import scan as scan_service
from libwatch.services.scan import ScanOptions

from .conftest import Photos, drain
from support import write_image


def _scan(photos: Photos, settings: Settings) -> dict[str, Any]:
    library = catalog_libraries.get(photos.db, photos.name)
    return scan_service.scan(photos.db, settings, library, ScanOptions()).document


def _bomb(path: Path) -> None:
    """A tiny PNG whose header declares 40,000 x 40,000 pixels (1.6 gigapixels, over Pillow's bomb limit)."""
    Image.new("1", (40_000, 40_000)).save(path)


def test_unidentifiable_files_are_failed_at_once_and_ask_for_no_render(
        photos: Photos, broker_settings: Settings, topology: Topology, amqp_url: str) -> None:
    (photos.root / "text.jpg").write_text("this is a text file, not a JPEG\n" * 20)
    (photos.root / "empty.jpg").write_bytes(b"")
    (photos.root / "noise.jpg").write_bytes(os.urandom(4096))
    _bomb(photos.root / "bomb.png")
    write_image(photos.root / "good.jpg", (64, 48), (10, 200, 10), fmt="JPEG")

    document = _scan(photos, broker_settings)

    records = {d["path"]: d for d in photos.db.files.find({"library": photos.name})}
    for name in ("text.jpg", "empty.jpg", "noise.jpg", "bomb.png"):
        rebuild = records[name]["rebuild"]
        reason = "cannot identify image" if name != "bomb.png" else "decompression bomb"
        for kind in ("cache", "thumbnail"):
            assert rebuild[kind] == "failed", (name, rebuild)
            assert rebuild[f"{kind}_error"].startswith(reason), (name, rebuild)
            assert isinstance(rebuild[f"{kind}_at"], datetime)
    assert photos.states()["good.jpg"] == ("pending", "pending")
    assert document["rebuild"]["requested"] == 2  # the good image's two kinds, not ten
    assert outbox.publish_pending(photos.db, broker_settings, library="photos", topology=topology)["published"] == 2
    published = drain(amqp_url, topology.queues["cache"]) + drain(amqp_url, topology.queues["thumbnail"])
    assert len(published) == 2 and all(b"good.jpg" in body for _, body in published)


def test_a_failed_file_rewritten_into_an_image_is_asked_for_again(photos: Photos, settings: Settings) -> None:
    (photos.root / "later.jpg").write_text("not yet an image")
    _scan(photos, settings)
    assert photos.states()["later.jpg"] == ("failed", "failed")
    write_image(photos.root / "later.jpg", (64, 48), (200, 10, 10), fmt="JPEG")
    os.utime(photos.root / "later.jpg", ns=(1, 10**18))
    _scan(photos, settings)
    assert photos.states()["later.jpg"] == ("pending", "pending")
    assert photos.db.files.find_one({"path": "later.jpg"})["rebuild"]["cache_error"] is None
