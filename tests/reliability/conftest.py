"""Fixtures for the reliability suite: faults, kills, outages and bad input across the parts.

The scan fixtures (``root``, ``register``, ``cli``) and the pipeline's isolated broker
``topology`` are reused from their folders; what is added here is what only faults
need: a small tmpfs that a test can fill or unmount, the broker settings as CLI
environment, and the "one clear line, no traceback" check.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import pytest
from pipeline.conftest import broker_settings, drain  # noqa: F401  (fixtures and helpers reused)
from scan.conftest import (  # noqa: F401  (fixtures and helpers reused)
    NAME,
    age,
    cli,
    file_hash,
    files_by_path,
    present_in_catalog,
    present_on_disk,
    register,
    root,
)

from libwatch.bus import Topology

BAD_AMQP_URL: Final = "amqp://guest:guest@127.0.0.1:1/%2F"


def one_clear_line(stderr: str, *expected: str) -> str:
    """The single line of a failure's stderr, checked to be one line, without a traceback, naming `expected`."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr
    for word in expected:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def broker_env(amqp_url: str, topo: Topology) -> dict[str, str]:
    """The environment that points the CLI at the broker and at the test's own topology."""
    return {"LIBWATCH_AMQP_URL": amqp_url, "LIBWATCH_AMQP_PREFIX": topo.exchange.removesuffix("libwatch")}


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], Path]]:
    """Mount a small tmpfs at a folder: ``tmpfs(path, "256k")``; unmounted afterwards.

    Skips with the reason when this machine refuses to mount (not root, no CAP_SYS_ADMIN).
    """
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        unmount(path)


def unmount(path: Path) -> None:
    """Unmount a tmpfs mounted by the fixture (a no-op when it is not mounted any more)."""
    if os.path.ismount(path):
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)
