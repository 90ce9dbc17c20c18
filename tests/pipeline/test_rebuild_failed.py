"""`libwatch rebuild NAME --failed`: what `libwatch failed` lists is tried again (issue 15).

Real files, real renders, the real catalog: a header that could not be read is read again
(one a former Pillow could not identify now reads, and its renders are made), a file that
is still no image stays failed with a new time and asks for no render, failed renders are
rendered again (`--run`) or published (with a broker), and the listing is left with what
still fails.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from libwatch.bus import Topology
from libwatch.config import Settings
from libwatch.services.rebuild import RebuildOptions, rebuild

from .conftest import Photos, drain

FAILED = {"cache": "failed", "thumbnail": "failed"}


def _unreadable_header(photos: Photos, path: str, reason: str = "cannot identify image file") -> None:
    """Record ``path`` as a scan does when its header cannot be read (an older Pillow, a missing plugin)."""
    photos.db.files.update_one({"library": photos.name, "path": path}, {"$set": {
        "probe_error": reason, "width": None, "height": None, "format": None,
        **{f"rebuild.{kind}_error": reason for kind in FAILED}}})


def _failed(libwatch: Callable[..., Any]) -> set[tuple[str, str]]:
    done = libwatch("failed", "photos", "--json")
    assert done.code == 0, done.stderr
    return {(f["path"], f["kind"]) for f in json.loads(done.stdout)["failures"]}


def test_rebuild_failed_run_reads_headers_again_and_renders_what_failed(
        photos: Photos, libwatch: Callable[..., Any]) -> None:
    photos.add("fixed-by-upgrade.jpg", size=(120, 90), states=FAILED)  # a real JPEG whose probe once failed
    _unreadable_header(photos, "fixed-by-upgrade.jpg")
    photos.add("still-text.jpg", b"still not an image\n" * 10, states=FAILED)
    _unreadable_header(photos, "still-text.jpg")
    photos.add("render-failed.jpg", color=(0, 90, 0), states=FAILED)  # e.g. the cache folder was full
    photos.add("fine.jpg", color=(9, 9, 9), states={"cache": "done", "thumbnail": "done"})
    before = photos.record("still-text.jpg")["rebuild"]["cache_at"]
    assert _failed(libwatch) == {("fixed-by-upgrade.jpg", "probe"), ("fixed-by-upgrade.jpg", "cache"),
                                 ("fixed-by-upgrade.jpg", "thumbnail"), ("still-text.jpg", "probe"),
                                 ("still-text.jpg", "cache"), ("still-text.jpg", "thumbnail"),
                                 ("render-failed.jpg", "cache"), ("render-failed.jpg", "thumbnail")}

    done = libwatch("--json", "rebuild", "photos", "--failed", "--run", "--processes", "1")

    assert done.code == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["selection"] == "failed"
    assert doc["counts"] == {"selected": 4, "done": 4, "failed": 0, "skipped": 0, "changed": 0, "retry": 0,
                             "headers_read": 1, "headers_unreadable": 1, "requeued_stale": 0}
    states = photos.states()
    assert states["fixed-by-upgrade.jpg"] == states["render-failed.jpg"] == ("done", "done")
    assert states["still-text.jpg"] == ("failed", "failed") and states["fine.jpg"] == ("done", "done")
    fixed = photos.record("fixed-by-upgrade.jpg")
    assert (fixed["probe_error"], fixed["width"], fixed["height"], fixed["format"]) == (None, 120, 90, "JPEG")
    still = photos.record("still-text.jpg")
    assert still["probe_error"].startswith("cannot identify image")
    assert still["rebuild"]["cache_at"] > before  # tried again: the listing's time says when
    assert _failed(libwatch) == {("still-text.jpg", "probe"), ("still-text.jpg", "cache"),
                                 ("still-text.jpg", "thumbnail")}
    run = photos.db.runs.find_one({"_id": doc["run_id"]})
    assert run["selection"] == "failed" and run["status"] == "succeeded" and run["counts"]["headers_read"] == 1

    text = libwatch("rebuild", "photos", "--failed", "--run")
    assert text.code == 0, text.stderr
    assert "headers read again: 0 readable, 1 still unreadable" in text.stdout
    assert "still-text.jpg" not in text.stdout  # no render was asked for the hopeless file


def test_rebuild_failed_renders_that_fail_again_stay_listed(photos: Photos, libwatch: Callable[..., Any]) -> None:
    photos.add("half.jpg", size=(300, 200), states=FAILED)
    data = (photos.root / "half.jpg").read_bytes()
    (photos.root / "half.jpg").write_bytes(data[:200])  # the catalog's hash is not these bytes any more
    photos.add("broken.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 300, states=FAILED)

    done = libwatch("--json", "rebuild", "photos", "--failed", "--run", "--processes", "1")

    assert done.code == 0, done.stderr
    counts = json.loads(done.stdout)["counts"]
    assert counts["selected"] == 4 and counts["done"] == 0
    assert photos.states()["broken.jpg"] == ("failed", "failed")
    assert {path for path, _ in _failed(libwatch)} >= {"broken.jpg"}


def test_rebuild_failed_publishes_with_a_broker(photos: Photos, broker_settings: Settings, topology: Topology,
                                                amqp_url: str) -> None:
    photos.add("render-failed.jpg", states=FAILED)
    photos.add("other.jpg", color=(1, 2, 3), states={"cache": "failed", "thumbnail": "done"})
    photos.add("done.jpg", color=(3, 2, 1), states={"cache": "done", "thumbnail": "done"})

    report = rebuild(photos.db, broker_settings, "photos", RebuildOptions(selection="failed"), topology=topology)

    assert report.document["counts"] == {"selected": 3, "published": 3, "pending": 0, "headers_read": 0,
                                         "headers_unreadable": 0, "requeued_stale": 0}
    assert photos.states() == {"render-failed.jpg": ("queued", "queued"), "other.jpg": ("queued", "done"),
                               "done.jpg": ("done", "done")}
    assert len(drain(amqp_url, topology.queues["cache"])) == 2
    assert len(drain(amqp_url, topology.queues["thumbnail"])) == 1


def test_rebuild_failed_is_one_selection_among_the_others(photos: Photos, libwatch: Callable[..., Any]) -> None:
    both = libwatch("rebuild", "photos", "--failed", "--missing")
    assert both.code == 2 and "choose one of --pending, --missing, --failed and --all" in both.stderr
    assert "--failed" in libwatch("rebuild", "--help").stdout
