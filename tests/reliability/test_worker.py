"""The worker against the nastiest images, empty and fake `.jpg` files, and a full cache disk."""
from __future__ import annotations

import errno
import json
import shutil
import time
from pathlib import Path
from typing import Any, Final

from support import CORPUS, write_image

from libwatch.bus import Topology

from .conftest import NAME, broker_env

# A sample of the corpus that exercises every way a decoder can fail or surprise (the
# whole corpus goes through the render pool in tests/imaging): bombs, truncations, fuzzer
# crashes, an OOM case, EXIF rotation, 16-bit TIFF, palette and alpha PNG, animations, AVIF/HEIF.
NASTY: Final = ("decompression_bomb.gif", "decompression_bomb_extents.gif", "png_decompression_dos.png",
                "truncated_jpeg.jpg", "truncated_image.png", "broken.png", "broken_data_stream.png",
                "crash-0c7e0e8e11ce787078f00b5b0ca409a167f070e0.tif", "crash-2020-10-test.tif",
                "oom-225817ca0f8c663be7ab4b9e717b02c661e66834.tif", "hopper_orientation_2.jpg", "16bit.deflate.tif",
                "1_trns.png", "iss634.webp", "iss634.gif", "avif/hopper.avif", "avif/hopper.heif", "hopper.jpg")
# The worker's whole run, for ~40 requests with the render pool's own per-image limit (60 s, 1 GiB) behind it.
RUN_LIMIT_S: Final = 240


def _records(db: Any) -> dict[str, dict[str, Any]]:
    return {d["path"]: d for d in db.files.find({"library": NAME})}


def test_the_nastiest_files_end_done_or_failed_with_a_reason_and_the_worker_survives(
        db: Any, root: Path, register: Any, libwatch: Any, amqp_url: str, topology: Topology) -> None:
    for name in NASTY:
        shutil.copyfile(CORPUS / name, root / name.replace("/", "-"))
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("this is not a JPEG\n")
    register()
    env = broker_env(amqp_url, topology)
    scan = libwatch("--json", "scan", NAME, env=env)
    assert scan.code == 0, scan.stderr
    assert json.loads(scan.stdout)["rebuild"]["published"] == 2 * (len(NASTY) + 2)
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
    assert {"empty.jpg", "text.jpg", "decompression_bomb.gif", "truncated_jpeg.jpg"} <= failed
    assert {"hopper.jpg", "hopper_orientation_2.jpg", "16bit.deflate.tif", "1_trns.png", "iss634.gif"}.isdisjoint(failed)
    counts = json.loads(worker.stdout)["counts"]
    assert counts["done"] + counts["failed"] == 2 * len(records) and "requeued" not in counts


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
