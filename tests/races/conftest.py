"""Fixtures of the race tests: commands paused at a dangerous point while another one runs.

A command started with ``pause.env(point)`` stops at ``point`` (see ``hook/sitecustomize.py``,
which is loaded only into these tests' processes); ``pause.reached(point, process)`` waits
until it is there, ``pause.release(point)`` lets it go on. The scan and pipeline fixtures
(``root``, ``register``, ``topology``, the broker) are reused from their folders.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from pipeline.conftest import broker_settings  # noqa: F401  (fixture reused)
from reliability.conftest import broker_env
from scan.conftest import NAME, age, file_hash, files_by_path, present_in_catalog, present_on_disk, register, root  # noqa: F401

from libwatch import cachefiles
from libwatch.bus import Topology

HOOK: Final = Path(__file__).parent / "hook"
_spec = importlib.util.spec_from_file_location("races_pause_hook", HOOK / "sitecustomize.py")
assert _spec is not None and _spec.loader is not None
hook = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hook)  # inert here: LIBWATCH_TEST_PAUSE is not set in the test process

# Where the commands pause.
TEMP_WRITTEN: Final = "libwatch.cachefiles:os.replace"  # a rendering in its temp file, not renamed yet
RENAMED: Final = "libwatch.cachefiles:os.replace:after"  # a rendering in place, its record not done yet
RECORDING: Final = "libwatch.catalog.rebuilds:record_results"  # renderings written, outcomes not recorded
SOURCE_READ: Final = "libwatch.renderpool:_read_source:after"  # the source read, not yet hashed or rendered
SCAN_RECORDING: Final = "libwatch.services.scan:record"  # the walk done, nothing of it recorded yet
WAIT_S: Final = 120.0


@dataclass
class Pause:
    """Pause points for commands started by a test, and the folder of their markers."""

    folder: Path

    def env(self, *points: str) -> dict[str, str]:
        """The environment that makes a command pause at ``points`` (the first arrival at each)."""
        path = os.pathsep.join([str(HOOK), *filter(None, [os.environ.get("PYTHONPATH")])])
        return {"PYTHONPATH": path, "LIBWATCH_TEST_PAUSE": ",".join(points),
                "LIBWATCH_TEST_PAUSE_DIR": str(self.folder)}

    def reached(self, point: str, process: subprocess.Popen[str] | None = None) -> int:
        """Wait until a process pauses at ``point``; returns its pid. Fails if ``process`` ends first."""
        marker = Path(hook.marker(str(self.folder), point, "reached"))
        deadline = time.monotonic() + WAIT_S
        while not marker.exists() or not marker.read_text():
            if process is not None and process.poll() is not None:
                out, err = process.communicate()
                pytest.fail(f"the command ended ({process.returncode}) before {point}:\n{out}\n{err}")
            if time.monotonic() > deadline:
                pytest.fail(f"nothing reached {point} within {WAIT_S:.0f} s")
            time.sleep(0.02)
        return int(marker.read_text())

    def release(self, point: str) -> None:
        Path(hook.marker(str(self.folder), point, "release")).touch()


@pytest.fixture
def pause(tmp_path: Path) -> Pause:
    folder = tmp_path / "pauses"
    folder.mkdir()
    return Pause(folder)


@pytest.fixture
def env(cli_env: dict[str, str], amqp_url: str, topology: Topology) -> dict[str, str]:
    """The CLI's environment with the broker and the test's own topology."""
    return {**cli_env, **broker_env(amqp_url, topology)}


def start(env: Mapping[str, str], *args: str, extra: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``libwatch ARGS`` in the background, in a process group of its own (with its render processes)."""
    return subprocess.Popen([sys.executable, "-m", "libwatch", *args], env={**env, **(extra or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def run(env: Mapping[str, str], *args: str, extra: Mapping[str, str] | None = None,
        codes: Sequence[int] = (0,)) -> subprocess.CompletedProcess[str]:
    """Run ``libwatch ARGS`` to its end and check its exit code."""
    done = subprocess.run([sys.executable, "-m", "libwatch", *args], env={**env, **(extra or {})},
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode in codes, f"libwatch {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def finish(process: subprocess.Popen[str], codes: Sequence[int] = (0,)) -> str:
    """Wait for a background command; check its exit code and that it printed no traceback. Returns stderr."""
    _out, err = process.communicate(timeout=300)
    assert process.returncode in codes, f"exited {process.returncode}:\n{err}"
    assert "Traceback" not in err, err
    return err


def temp_files(cache_dir: Path) -> list[Path]:
    return [p for p in cache_dir.rglob("*") if p.name.endswith((cachefiles.TEMP_SUFFIX, cachefiles.ASIDE_SUFFIX))]


def cache_files(cache_dir: Path) -> dict[tuple[str, str], Path]:
    """Every rendering in the cache as (kind, hash) -> path."""
    return {(kind, digest): path for kind, digest, path in cachefiles.iter_cache_files(cache_dir)}


def settled(db: Any, cache_dir: Path, library: str = NAME) -> None:
    """Every present record's renderings done, for its current hash, and in the cache."""
    for doc in db.files.find({"library": library, "status": "present"}):
        assert doc["rebuild"]["hash"] == doc["hash"], doc
        for kind in ("cache", "thumbnail"):
            assert doc["rebuild"][kind] == "done", (doc["path"], kind, doc["rebuild"])
            assert cachefiles.existing(cache_dir, kind, doc["hash"]) is not None, (doc["path"], kind)
