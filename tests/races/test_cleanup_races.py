"""cleanup (also ``--older-than 0s``) while a worker or ``rebuild --run`` writes a rendering.

The writer is paused with its rendering in the temp file, then again with the file
renamed into place but its record not yet ``done``; a cleanup runs meanwhile. It must
delete nothing a record needs (the temp file included), and once the writer is let go
everything is ``done``, in the cache, with no temp file left.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from libwatch import processes
from libwatch.config import Settings

from .conftest import NAME, RENAMED, TEMP_WRITTEN, Pause, age, cache_files, finish, run, settled, start, temp_files
from support import write_image

WRITERS = {"worker": ("worker", "--idle-exit", "1", "--processes", "1"),
           "rebuild --run": ("rebuild", NAME, "--run", "--processes", "1")}
# The worker renders what a scan published; `rebuild --run` what a scan left pending.
SCANS = {"worker": ("scan", NAME), "rebuild --run": ("scan", NAME, "--no-publish")}


@pytest.mark.parametrize("point", [TEMP_WRITTEN, RENAMED], ids=["temp-file", "renamed"])
@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("older_than", [(), ("--older-than", "0s")], ids=["default", "0s"])
def test_cleanup_while_a_rendering_is_written_deletes_nothing_needed_and_leaves_no_temp_file(
        writer: str, point: str, older_than: tuple[str, ...], db: Any, root: Path, register: Any, settings: Settings,
        env: dict[str, str], pause: Pause) -> None:
    write_image(root / "old.jpg", (64, 48), (200, 40, 40), fmt="JPEG")
    age(root)
    register()
    run(env, *SCANS[writer])
    run(env, *WRITERS[writer])  # old.jpg rendered and done
    before = cache_files(settings.cache_dir)
    assert len(before) == 2
    write_image(root / "new.jpg", (64, 48), (40, 40, 200), fmt="JPEG")
    age(root)
    run(env, *SCANS[writer])

    writing = start(env, *WRITERS[writer], extra=pause.env(point))
    pause.reached(point, writing)
    in_flight = temp_files(settings.cache_dir) if point == TEMP_WRITTEN else []
    renamed = set(cache_files(settings.cache_dir)) - set(before)
    assert len(in_flight) == 1 or len(renamed) == 1

    cleaned = run(env, "cleanup", *older_than)
    assert all(path.exists() for path in in_flight), cleaned.stderr  # a temp file being written is not abandoned
    assert set(cache_files(settings.cache_dir)) == set(before) | renamed  # nothing a record names was removed

    pause.release(point)
    finish(writing)
    settled(db, settings.cache_dir)
    assert temp_files(settings.cache_dir) == []
    assert len(cache_files(settings.cache_dir)) == 4


# Cleanup asks the catalog about the cache's hashes once per kind while planning (2 calls here),
# then once more, for the orphans of both kinds together, just before removing them.
ORPHANS_CHECKED = "libwatch.catalog.housekeeping:referenced_hashes:after@3"


def test_a_file_restored_while_cleanup_removes_its_orphaned_rendering_ends_rendered(
        db: Any, root: Path, register: Any, settings: Settings, env: dict[str, str], pause: Pause,
        tmp_path: Path) -> None:
    """The cleanup has judged a rendering an orphan; then a scan records that content again and
    ``rebuild --run`` finds the rendering still there. The cleanup must not delete it under the new record."""
    write_image(root / "keep.jpg", (64, 48), (200, 40, 40), fmt="JPEG")
    write_image(root / "a.jpg", (64, 48), (40, 200, 40), fmt="JPEG")
    age(root)
    register()
    run(env, "scan", NAME, "--no-publish")
    run(env, "rebuild", NAME, "--run")
    (root / "a.jpg").rename(tmp_path / "a.jpg")  # moved away: its record goes missing, then past retention
    run(env, "scan", NAME, "--no-publish")

    cleaning = start(env, "cleanup", "--older-than", "0s", extra=pause.env(ORPHANS_CHECKED))
    pause.reached(ORPHANS_CHECKED, cleaning)
    (tmp_path / "a.jpg").rename(root / "a.jpg")  # restored from the backup
    run(env, "scan", NAME, "--no-publish")  # a scan during the cleanup
    run(env, "rebuild", NAME, "--run")
    pause.release(ORPHANS_CHECKED)
    finish(cleaning)

    settled(db, settings.cache_dir)
    run(env, "rebuild", NAME, "--missing", "--run")
    assert temp_files(settings.cache_dir) == []


def test_the_temp_file_of_a_writer_killed_halfway_goes_with_the_next_cleanup(
        db: Any, root: Path, register: Any, settings: Settings, env: dict[str, str], pause: Pause) -> None:
    """systemd stops a worker with its render processes (SIGKILL after the timeout) halfway through a rendering."""
    write_image(root / "a.jpg", (64, 48), (200, 40, 40), fmt="JPEG")
    age(root)
    register()
    run(env, "scan", NAME)
    worker = start(env, *WRITERS["worker"], extra=pause.env(TEMP_WRITTEN))
    render_process = pause.reached(TEMP_WRITTEN, worker)
    [left] = temp_files(settings.cache_dir)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    deadline = time.monotonic() + 60
    while not processes.gone(socket.gethostname(), render_process) and time.monotonic() < deadline:
        time.sleep(0.01)  # killed with its group; gone once init reaps it

    cleaned = json.loads(run(env, "--json", "cleanup").stdout)
    assert cleaned["counts"]["temp_files"] == 1 and not left.exists()
    run(env, "worker", "--idle-exit", "1", "--processes", "1")  # the message comes back
    settled(db, settings.cache_dir)
    assert temp_files(settings.cache_dir) == []
