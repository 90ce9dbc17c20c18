"""Fixtures of the systemd tests: a real systemd booted in namespaces by harness.sh."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import unavailable
from systemd_box import HARNESS, Container, missing_requirement

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    """A freshly booted systemd (harness.sh), powered off and removed afterwards."""
    reason = missing_requirement()
    if reason:
        unavailable(f"cannot boot systemd: {reason}", "LIBWATCH_REQUIRE_SYSTEMD")
    log = tmp_path / "harness.log"
    with open(log, "w") as stderr:
        # The checkout (and its .venv) is bound in read-only at the same path: the container's /tmp
        # is a fresh tmpfs and only the root file system is overlaid, so a checkout under /tmp or on
        # another mount (as CI's may be) would otherwise be invisible inside.
        proc = subprocess.Popen(["bash", str(HARNESS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, text=True, env={**os.environ, "PROJECT_DIR": str(PROJECT)})
    try:
        assert proc.stdout is not None and proc.stdin is not None
        ready = proc.stdout.readline().split()
        if ready[:1] != ["READY"]:
            pytest.fail(f"harness.sh did not boot systemd:\n{log.read_text()}")
        yield Container(int(ready[1]), Path(ready[2]))
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=60)
