"""Renders match their hash (issues 12.3, 18): a file replaced after the scan is never rendered under the old hash.

The worker and ``rebuild --run`` against the real broker and store, rendering real
files: a picture overwritten without a scan, a file swapped for a symbolic link to a
root-only image outside the library, a folder swapped for a link, and links in a
library that follows them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from libwatch import cachefiles
from libwatch.bus import Topology
from libwatch.config import Settings
from libwatch.services import outbox
from libwatch.services.rebuild import RebuildOptions, rebuild
from libwatch.services.worker import Worker, WorkerOptions

from .conftest import Photos, content_hash, drain
from support import write_image

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _work(photos: Photos, settings: Settings, topology: Topology) -> dict[str, int]:
    outbox.publish_pending(photos.db, settings, library="photos", topology=topology)
    return Worker(photos.db, settings, WorkerOptions(idle_exit_s=1.0), topology=topology, processes=1).run().counts


def _rebuild_here(photos: Photos, settings: Settings) -> dict[str, Any]:
    return rebuild(photos.db, settings, "photos", RebuildOptions(selection="pending", run_here=True),
                   processes=1).document


def _stored(settings: Settings, digest: str) -> list[Path]:
    return [path for kind in ("cache", "thumbnail")
            if (path := cachefiles.existing(settings.cache_dir, kind, digest)) is not None]


def _colour(path: Path) -> tuple[int, int, int]:
    with Image.open(path) as im:
        return im.convert("RGB").getpixel((im.width // 2, im.height // 2))  # type: ignore[return-value]


def _secret(tmp_path: Path) -> Path:
    """A root-only image outside the library (0600), as another user's private picture."""
    secret = tmp_path / "private" / "secret.jpg"
    write_image(secret, (64, 48), (0, 255, 0), fmt="JPEG")
    secret.chmod(0o600)
    return secret


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_a_picture_overwritten_without_a_scan_is_not_stored_under_the_old_hash(
        attempt: int, photos: Photos, broker_settings: Settings, topology: Topology, amqp_url: str) -> None:
    photos.add("a.jpg", color=RED)
    red = photos.record("a.jpg")["hash"]
    red_bytes = (photos.root / "a.jpg").read_bytes()
    write_image(photos.root / "a.jpg", (64, 48), BLUE, fmt="JPEG")  # no scan

    counts = _work(photos, broker_settings, topology)

    assert counts == {"received": 2, "changed": 2}
    assert _stored(broker_settings, red) == []
    assert photos.states()["a.jpg"] == ("pending", "pending")  # the next scan records the change
    assert drain(amqp_url, topology.dead_letter_queue) == []
    # Restored, the red picture is rendered red under its own hash.
    (photos.root / "a.jpg").write_bytes(red_bytes)
    assert _work(photos, broker_settings, topology)["done"] == 2
    assert [_colour(path)[0] > 150 for path in _stored(broker_settings, red)] == [True, True]


def test_rebuild_run_renders_only_what_hashes_to_the_record(photos: Photos, settings: Settings) -> None:
    photos.add("a.jpg", color=RED)
    red = photos.record("a.jpg")["hash"]
    write_image(photos.root / "a.jpg", (64, 48), BLUE, fmt="JPEG")

    document = _rebuild_here(photos, settings)

    assert document["counts"]["changed"] == 2 and document["counts"]["done"] == 0
    assert {f["error"] for f in document["failures"]} == {"changed since the scan (other content)"}
    assert _stored(settings, red) == []
    assert photos.states()["a.jpg"] == ("pending", "pending")


def test_a_file_swapped_for_a_link_to_a_root_only_image_is_not_rendered(
        photos: Photos, broker_settings: Settings, topology: Topology, tmp_path: Path) -> None:
    photos.add("mine.jpg", color=RED)
    mine = photos.record("mine.jpg")["hash"]
    secret = _secret(tmp_path)
    (photos.root / "mine.jpg").unlink()
    (photos.root / "mine.jpg").symlink_to(secret)

    counts = _work(photos, broker_settings, topology)

    assert counts == {"received": 2, "changed": 2}
    assert _stored(broker_settings, mine) == []
    assert _stored(broker_settings, content_hash(secret.read_bytes())) == []


def test_a_folder_swapped_for_a_link_is_not_entered(photos: Photos, settings: Settings, tmp_path: Path) -> None:
    photos.add("album/a.jpg", color=RED)
    digest = photos.record("album/a.jpg")["hash"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (photos.root / "album" / "a.jpg").rename(elsewhere / "a.jpg")  # the same content, outside the root
    (photos.root / "album").rmdir()
    (photos.root / "album").symlink_to(elsewhere)

    document = _rebuild_here(photos, settings)

    assert document["counts"]["changed"] == 2
    assert _stored(settings, digest) == []


def test_a_library_that_follows_links_follows_them_within_its_root_only(
        photos: Photos, settings: Settings, tmp_path: Path) -> None:
    photos.db.libraries.update_one({"_id": "photos"}, {"$set": {"follow_symlinks": True}})
    photos.add("real/a.jpg", color=RED)
    for name, colour in (("real/b.jpg", BLUE), ("real/c.jpg", (20, 220, 20))):  # no records of their own
        write_image(photos.root / name, (64, 48), colour, fmt="JPEG")
    photos.insert(b"alias/b.jpg", (photos.root / "real" / "b.jpg").read_bytes())
    (photos.root / "alias").symlink_to("real")
    photos.insert(b"absolute.jpg", (photos.root / "real" / "c.jpg").read_bytes())
    (photos.root / "absolute.jpg").symlink_to(photos.root / "real" / "c.jpg")
    secret = _secret(tmp_path)
    photos.insert(b"out.jpg", secret.read_bytes())
    (photos.root / "out.jpg").symlink_to(secret)
    photos.insert(b"dotdot.jpg", secret.read_bytes())
    (photos.root / "dotdot.jpg").symlink_to(os.path.relpath(secret, photos.root))

    document = _rebuild_here(photos, settings)

    states = photos.states()
    assert states["real/a.jpg"] == states["alias/b.jpg"] == states["absolute.jpg"] == ("done", "done")
    for name in ("out.jpg", "dotdot.jpg"):
        assert states[name] == ("failed", "failed")
        assert photos.record(name)["rebuild"]["cache_error"] == \
            "cannot read the image: symbolic link leads outside the library root"
    assert _stored(settings, content_hash(secret.read_bytes())) == []
    assert document["counts"]["failed"] == 4
