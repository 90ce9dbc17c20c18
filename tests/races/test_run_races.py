"""A source changing while it renders, a scan during ``rebuild --run``, a scan SIGKILLed holding its lease."""
from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from PIL import Image

from libwatch import cachefiles
from libwatch.config import Settings

from .conftest import (
    NAME,
    SCAN_RECORDING,
    SOURCE_READ,
    TEMP_WRITTEN,
    Pause,
    age,
    file_hash,
    finish,
    present_in_catalog,
    present_on_disk,
    run,
    settled,
    start,
    temp_files,
)
from support import write_image

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _colour(path: Path) -> tuple[int, int, int]:
    with Image.open(path) as image:
        return image.convert("RGB").getpixel((image.width // 2, image.height // 2))  # type: ignore[return-value]


def _near(colour: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 40 for a, b in zip(colour, expected, strict=True))


def test_a_source_rewritten_while_it_renders_is_stored_under_the_hash_of_what_was_read(
        db: Any, root: Path, register: Any, settings: Settings, env: dict[str, str], pause: Pause) -> None:
    write_image(root / "a.jpg", (64, 48), RED, fmt="JPEG")
    age(root)
    register()
    red = file_hash(root / "a.jpg")
    run(env, "scan", NAME)
    worker = start(env, "worker", "--idle-exit", "1", "--processes", "1", extra=pause.env(SOURCE_READ))
    pause.reached(SOURCE_READ, worker)
    write_image(root / "a.jpg", (64, 48), BLUE, fmt="JPEG")  # rewritten between the read and the rendering
    pause.release(SOURCE_READ)
    finish(worker)

    doc = db.files.find_one({"library": NAME, "path": "a.jpg"})
    assert doc["hash"] == red and doc["rebuild"]["hash"] == red
    for kind in ("cache", "thumbnail"):
        rendering = cachefiles.existing(settings.cache_dir, kind, red)
        if doc["rebuild"][kind] == "done":
            assert rendering is not None and _near(_colour(rendering), RED), kind
    run(env, "scan", NAME)  # records the new content and asks for it
    run(env, "worker", "--idle-exit", "1", "--processes", "1")
    settled(db, settings.cache_dir)
    blue = db.files.find_one({"library": NAME, "path": "a.jpg"})["hash"]
    assert blue == file_hash(root / "a.jpg") != red
    assert _near(_colour(cachefiles.existing(settings.cache_dir, "cache", blue)), BLUE)


def test_a_scan_during_rebuild_run_records_the_changes_and_the_next_rebuild_renders_them(
        db: Any, root: Path, register: Any, settings: Settings, env: dict[str, str], pause: Pause) -> None:
    for index in range(3):
        write_image(root / f"{index}.jpg", (64, 48), (60 * index, 40, 40), fmt="JPEG")
    age(root)
    register()
    run(env, "scan", NAME, "--no-publish")
    rebuilding = start(env, "rebuild", NAME, "--run", "--processes", "1", extra=pause.env(TEMP_WRITTEN))
    pause.reached(TEMP_WRITTEN, rebuilding)
    write_image(root / "0.jpg", (64, 48), BLUE, fmt="JPEG")
    write_image(root / "new.jpg", (64, 48), RED, fmt="JPEG")
    (root / "2.jpg").unlink()
    scanned = json.loads(run(env, "--json", "scan", NAME, "--no-publish").stdout)
    assert {(c["type"], c["path"]) for c in scanned["changes"]} >= {("modified", "0.jpg"), ("added", "new.jpg"),
                                                                     ("deleted", "2.jpg")}
    pause.release(TEMP_WRITTEN)
    finish(rebuilding)
    run(env, "rebuild", NAME, "--run")
    assert present_in_catalog(db) == present_on_disk(root)
    settled(db, settings.cache_dir)
    assert temp_files(settings.cache_dir) == []


def test_a_scan_killed_holding_its_lease_shows_interrupted_and_the_next_scan_takes_over(
        db: Any, root: Path, register: Any, env: dict[str, str], pause: Pause) -> None:
    write_image(root / "a.jpg", (64, 48), RED, fmt="JPEG")
    age(root)
    register()
    scanning = start(env, "scan", NAME, extra=pause.env(SCAN_RECORDING))
    pause.reached(SCAN_RECORDING, scanning)
    assert db.locks.count_documents({"_id": f"scan:{NAME}"}) == 1
    scanning.send_signal(signal.SIGKILL)
    scanning.wait()

    [killed] = json.loads(run(env, "--json", "history").stdout)["runs"]
    assert killed["status"] == "interrupted", killed  # not `running`: its process is gone
    assert f"process {scanning.pid}" in killed["error"]

    run(env, "scan", NAME)  # the lease of a dead holder is taken over at once, not after its expiry
    assert present_in_catalog(db) == present_on_disk(root)
    statuses = {doc["_id"]: doc["status"] for doc in db.runs.find({"job": "scan"})}
    assert sorted(statuses.values()) == ["interrupted", "succeeded"]
    assert statuses[killed["run_id"]] == "interrupted"
    assert db.locks.count_documents({}) == 0
