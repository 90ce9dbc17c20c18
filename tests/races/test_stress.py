"""Randomized stress: several commands at once, SIGKILLed at random moments, then one clean round.

Scans, workers, ``rebuild --run``, ``cleanup --older-than 0s``, ``library set`` (an exclusion
switched on and off) and file changes on disk (written, rewritten, deleted, renamed) are
started in a random order, up to ``PARALLEL`` at a time, and a random running command is
SIGKILLed now and then: its main process alone, as the OOM killer would (its render
processes finish the image they are on), or with its render processes, as systemd stops a
unit (a temp file may be left halfway: the next cleanup sees its writer gone). Every
command that ends by itself must end with an exit code of its own (no 70, no traceback).
After ``STRESS_S`` seconds a clean round (scan, worker, ``rebuild --run``, ``cleanup
--older-than 0s``) must leave:

- every image on disk with exactly one record, present, with its content's hash;
- every record's cache image and thumbnail ``done``, in the cache under that hash, a
  picture of the source's colour; no other rendering and no temp file in the cache;
- no run ``running`` and no lease held.

CI runs it with the fixed seed; ``LIBWATCH_STRESS_SEED`` and ``LIBWATCH_STRESS_S`` (at most 60)
run other interleavings or longer.
"""
from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Final

import pytest
from PIL import Image

from libwatch import cachefiles
from libwatch.config import Settings

from .conftest import NAME, age, file_hash, finish, present_in_catalog, present_on_disk, run, start, temp_files
from support import write_image

SEED: Final = int(os.environ.get("LIBWATCH_STRESS_SEED", "18"))
STRESS_S: Final = min(60.0, float(os.environ.get("LIBWATCH_STRESS_S", "40")))
PARALLEL: Final = 3
NAMES: Final = ("a.jpg", "b.jpg", "2024/c.jpg", "2024/d.jpg", "2024/trip/e.jpg", "skip/f.jpg", "skip/g.jpg")
COMMANDS: Final = {
    "scan": ("scan", NAME, "--allow-mass-delete"),
    "worker": ("worker", "--idle-exit", "1", "--processes", "1"),
    "rebuild": ("rebuild", NAME, "--run", "--processes", "1"),
    "cleanup": ("cleanup", "--older-than", "0s"),
}
# Exit codes a command may end with when others run at once: 75 is a scan refused by another's lease.
ENDINGS: Final = {"scan": (0, 75), "worker": (0,), "rebuild": (0,), "cleanup": (0,)}


def _colour_of(path: Path) -> tuple[int, int, int]:
    with Image.open(path) as image:
        return image.convert("RGB").getpixel((image.width // 2, image.height // 2))  # type: ignore[return-value]


def _near(one: tuple[int, int, int], other: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 40 for a, b in zip(one, other, strict=True))


class Stress:
    """The commands under way and what was done to the library."""

    def __init__(self, root: Path, env: dict[str, str], rng: random.Random) -> None:
        self.root, self.env, self.rng = root, env, rng
        self.running: list[tuple[str, subprocess.Popen[str]]] = []
        self.excluded = False
        self.done: list[str] = []

    def step(self) -> None:
        self._reap()
        action = self.rng.choice(["command"] * 4 + ["mutate"] * 3 + ["kill", "exclude"])
        if action == "command" and len(self.running) < PARALLEL:
            job = self.rng.choice(list(COMMANDS))
            self.running.append((job, start(self.env, *COMMANDS[job])))
            action = job
        elif action == "mutate":
            self._mutate()
        elif action == "kill" and self.running:
            job, process = self.rng.choice(self.running)
            if self.rng.random() < 0.5:
                process.send_signal(signal.SIGKILL)
                action = f"killed {job}"
            else:  # as systemd stops a unit: its render processes too, maybe halfway through a temp file
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                action = f"killed {job} and its children"
        elif action == "exclude":
            self.excluded = not self.excluded
            run(self.env, "library", "set", NAME, "--add-exclude" if self.excluded else "--remove-exclude", "skip")
        if action not in ("command", "kill"):  # not the ones that found no room or nothing to kill
            self.done.append(action)
        time.sleep(self.rng.uniform(0.05, 0.6))

    def _mutate(self) -> None:
        name = self.rng.choice(NAMES)
        target = self.root / name
        how = self.rng.choice(["write", "write", "delete", "rename"])
        if how == "write":
            colour = (self.rng.randint(0, 255), self.rng.randint(0, 255), 90)
            write_image(target, (self.rng.randint(40, 90), 48), colour, fmt="JPEG")
        elif how == "delete":
            target.unlink(missing_ok=True)
        elif target.exists():
            other = self.root / self.rng.choice(NAMES)
            other.parent.mkdir(parents=True, exist_ok=True)
            os.replace(target, other)

    def _reap(self) -> None:
        for job, process in list(self.running):
            if process.poll() is None:
                continue
            self.running.remove((job, process))
            if process.returncode != -signal.SIGKILL:
                finish(process, ENDINGS[job])

    def settle(self) -> None:
        """Let what runs end by itself (a worker idles out within seconds)."""
        for job, process in self.running:
            if process.poll() is None or process.returncode != -signal.SIGKILL:
                finish(process, (*ENDINGS[job], -signal.SIGKILL))
        self.running = []


@pytest.mark.slow
def test_commands_at_once_killed_at_random_then_one_clean_round_agree_with_disk_and_cache(
        db: Any, root: Path, register: Any, settings: Settings, env: dict[str, str]) -> None:
    rng = random.Random(SEED)
    write_image(root / "keep.jpg", (64, 48), (10, 200, 10), fmt="JPEG")  # an empty root is refused (exit 74)
    for name in NAMES:
        write_image(root / name, (64, 48), (rng.randint(0, 255), rng.randint(0, 255), 90), fmt="JPEG")
    age(root)
    register()
    stress = Stress(root, env, rng)
    deadline = time.monotonic() + STRESS_S
    while time.monotonic() < deadline:
        stress.step()
    stress.settle()

    if stress.excluded:
        run(env, "library", "set", NAME, "--remove-exclude", "skip")
    run(env, "scan", NAME, "--allow-mass-delete")
    run(env, "worker", "--idle-exit", "2", "--processes", "1")
    run(env, "rebuild", NAME, "--run", "--queued-timeout", "0")  # requests whose message a killed worker used up
    run(env, "cleanup", "--older-than", "0s")

    print(f"seed {SEED}: {len(stress.done)} steps: {', '.join(stress.done)}")
    assert present_in_catalog(db) == present_on_disk(root), stress.done
    on_disk = set(present_on_disk(root))
    records = list(db.files.find({"library": NAME}))
    assert sorted(doc["path"] for doc in records) == sorted(on_disk)  # one record each, none left over
    expected: set[tuple[str, str]] = set()
    for doc in records:
        assert doc["status"] == "present" and doc["hash"] == file_hash(root / doc["path"])
        assert doc["rebuild"]["hash"] == doc["hash"], doc
        source = _colour_of(root / doc["path"])
        for kind in ("cache", "thumbnail"):
            assert doc["rebuild"][kind] == "done", (doc["path"], kind, doc["rebuild"], stress.done)
            rendering = cachefiles.existing(settings.cache_dir, kind, doc["hash"])
            assert rendering is not None and _near(_colour_of(rendering), source), (doc["path"], kind)
            expected.add((kind, doc["hash"]))
    assert {(kind, digest) for kind, digest, _ in cachefiles.iter_cache_files(settings.cache_dir)} == expected
    assert temp_files(settings.cache_dir) == []
    assert db.runs.count_documents({"status": "running"}) == 0, list(db.runs.find({"status": "running"}))
    assert db.locks.count_documents({}) == 0, list(db.locks.find())
