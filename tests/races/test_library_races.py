"""``library remove --purge`` and ``library set --exclude`` while a worker, ``rebuild --run`` or a scan runs.

Once everything settles, a purged library leaves no record and no cache file behind,
and a changed exclusion is what the next scan applies.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from libwatch.config import Settings

from .conftest import (
    NAME,
    RECORDING,
    SCAN_RECORDING,
    TEMP_WRITTEN,
    Pause,
    age,
    cache_files,
    finish,
    present_in_catalog,
    present_on_disk,
    run,
    start,
    temp_files,
)
from support import write_image

WRITERS = {"worker": (("scan", NAME), ("worker", "--idle-exit", "1", "--processes", "1")),
           "rebuild --run": (("scan", NAME, "--no-publish"), ("rebuild", NAME, "--run", "--processes", "1"))}


def _library(root: Path) -> None:
    for index, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)]):
        write_image(root / "2024" / f"{index}.jpg", (64, 48), colour, fmt="JPEG")
    age(root)


def _nothing_left(db: Any, cache_dir: Path) -> None:
    for collection in ("libraries", "files", "collections", "events"):
        assert list(db[collection].find({"library": NAME} if collection != "libraries" else {"_id": NAME})) == []
    assert cache_files(cache_dir) == {}
    assert temp_files(cache_dir) == []


@pytest.mark.parametrize("point", [TEMP_WRITTEN, RECORDING], ids=["rendering", "recording"])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_library_purged_while_its_images_render_leaves_no_record_and_no_cache_file(
        writer: str, point: str, db: Any, root: Path, register: Any, settings: Settings, env: dict[str, str],
        pause: Pause) -> None:
    _library(root)
    register()
    scan, render = WRITERS[writer]
    run(env, *scan)
    rendering = start(env, *render, extra=pause.env(point))
    pause.reached(point, rendering)
    run(env, "library", "remove", NAME, "--purge")
    pause.release(point)
    finish(rendering)
    _nothing_left(db, settings.cache_dir)


def test_a_library_purged_during_its_scan_waits_for_it_or_says_try_later(
        db: Any, root: Path, register: Any, settings: Settings, env: dict[str, str], pause: Pause) -> None:
    _library(root)
    register()
    scanning = start(env, "scan", NAME, extra=pause.env(SCAN_RECORDING))
    pause.reached(SCAN_RECORDING, scanning)
    refused = run(env, "library", "remove", NAME, "--purge", codes=(75,))
    assert f"scan:{NAME} is held by run" in refused.stderr
    pause.release(SCAN_RECORDING)
    finish(scanning)
    assert present_in_catalog(db) == present_on_disk(root)
    run(env, "library", "remove", NAME, "--purge")
    _nothing_left(db, settings.cache_dir)


def test_an_exclusion_added_during_a_scan_is_applied_by_the_next_scan(
        db: Any, root: Path, register: Any, env: dict[str, str], pause: Pause) -> None:
    _library(root)
    write_image(root / "drafts" / "d.jpg", (64, 48), fmt="JPEG")
    age(root)
    register()
    scanning = start(env, "scan", NAME, extra=pause.env(SCAN_RECORDING))
    pause.reached(SCAN_RECORDING, scanning)
    run(env, "library", "set", NAME, "--add-exclude", "drafts")
    pause.release(SCAN_RECORDING)
    finish(scanning)
    assert present_in_catalog(db) == present_on_disk(root)  # the scan applies what it walked with

    run(env, "scan", NAME, "--allow-mass-delete")
    assert set(present_in_catalog(db)) == set(present_on_disk(root)) - {"drafts/d.jpg"}
