"""The worker against the nastiest images, empty and fake `.jpg` files, and a full cache disk."""
from __future__ import annotations

import errno
import json
import time
from pathlib import Path
from typing import Any, Final

from libwatch.bus import Topology

from .conftest import NAME, broker_env
from support import HOSTILE, sample, write_image

# Every hostile sample of the image factory (every way a decoder can fail: bombs, truncations,
# corrupt streams, empty and fake files) and a few that surprise (EXIF rotation, 16-bit TIFF, a
# bilevel tRNS PNG, animations, AVIF/HEIF); every sample goes through the render pool in tests/imaging.
NASTY: Final = (*HOSTILE, "orientation_2.jpg", "grey16.tif", "bilevel_trns.png", "animated.webp", "animated.gif",
                "photo.avif", "photo.heif", "photo.jpg")
# The worker's whole run, for ~40 requests with the render pool's own per-image limit (60 s, 1 GiB) behind it.
RUN_LIMIT_S: Final = 240


def _records(db: Any) -> dict[str, dict[str, Any]]:
    return {d["path"]: d for d in db.files.find({"library": NAME})}


def test_the_nastiest_files_end_done_or_failed_with_a_reason_and_the_worker_survives(
        db: Any, root: Path, register: Any, libwatch: Any, amqp_url: str, topology: Topology) -> None:
    for name in NASTY:
        (root / name).write_bytes(sample(name))
    register()
    env = broker_env(amqp_url, topology)
    scan = libwatch("--json", "scan", NAME, env=env)
    assert scan.code == 0, scan.stderr
    # A file whose header no probe can identify is recorded failed by the scan itself (no render asked).
    hopeless = {path for path, doc in _records(db).items() if doc["rebuild"]["thumbnail"] == "failed"}
    assert {"empty.jpg", "text.jpg"} <= hopeless <= set(HOSTILE)
    published = json.loads(scan.stdout)["rebuild"]["published"]
    assert published == 2 * (len(NASTY) - len(hopeless))
    started = time.monotonic()
    worker = libwatch("--json", "worker", "--idle-exit", "2", "--processes", "2", env=env, timeout=RUN_LIMIT_S + 60)
    assert worker.code == 0, worker.stderr
    assert time.monotonic() - started < RUN_LIMIT_S
    assert "Traceback" not in worker.stderr
    records = _records(db)
    for path, doc in records.items():
        for kind in ("cache", "thumbnail"):
            state = doc["rebuild"][kind]
            assert state in ("done", "failed"), (path, kind, state)
            assert (state == "failed") == bool(doc["rebuild"][f"{kind}_error"]), (path, kind, doc["rebuild"])
    failed = {path for path, doc in records.items() if doc["rebuild"]["thumbnail"] == "failed"}
    assert failed == set(HOSTILE)
    counts = json.loads(worker.stdout)["counts"]
    assert counts["done"] + counts["failed"] == published and "requeued" not in counts


def _fill(folder: Path) -> Path:
    """Fill the filesystem of `folder` to the last byte; returns the filler file."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as stream:
        try:
            while True:
                stream.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def test_a_full_cache_disk_leaves_no_temp_file_and_the_request_is_retried_later(
        db: Any, root: Path, register: Any, libwatch: Any, amqp_url: str, topology: Topology,
        tmpfs: Any, tmp_path: Path) -> None:
    cache = tmpfs(tmp_path / "small-cache", "512k")
    write_image(root / "a.jpg", (640, 480), fmt="JPEG")
    register()
    env = {**broker_env(amqp_url, topology), "LIBWATCH_CACHE_DIR": str(cache)}
    assert libwatch("scan", NAME, env=env).code == 0
    filler = _fill(cache)

    full = libwatch("--json", "worker", "--max-messages", "4", "--processes", "1", env=env, timeout=120)
    assert full.code == 0, full.stderr
    counts = json.loads(full.stdout)["counts"]
    assert counts.get("requeued") == 4 and "failed" not in counts and "done" not in counts
    assert "No space left on device" in full.stderr and "Traceback" not in full.stderr
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == ["filler"]  # no temp file left behind
    assert {(d["rebuild"]["cache"], d["rebuild"]["thumbnail"]) for d in _records(db).values()} == {("queued", "queued")}

    filler.unlink()  # space freed: the requests that went back to the queue now succeed
    freed = libwatch("--json", "worker", "--idle-exit", "1", "--processes", "1", env=env, timeout=120)
    assert freed.code == 0, freed.stderr
    assert json.loads(freed.stdout)["counts"]["done"] == 2
    assert {(d["rebuild"]["cache"], d["rebuild"]["thumbnail"]) for d in _records(db).values()} == {("done", "done")}
    assert len([p for p in cache.rglob("*") if p.is_file()]) == 2
