"""`libwatch scan` in a real terminal (pty): its phases on stderr, with a byte total while hashing;
nothing of them when stderr is piped (issue 15, "Progress and heartbeats")."""
from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

from libwatch.bus import Topology

from .conftest import NAME, age, sample


def _library(root: Path, files: int) -> None:
    png = sample("tiny.png")
    for i in range(files):
        folder = root / f"{i // 100:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"{i:05d}.png").write_bytes(png + i.to_bytes(4, "big") + bytes(4096))
    age(root)


def _read_all(fd: int) -> str:
    seen = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the terminal's other side closed: the process ended
            return seen.decode(errors="replace")
        if not chunk:
            return seen.decode(errors="replace")
        seen += chunk


def test_scan_in_a_terminal_draws_its_phases(root: Path, register: Any, cli_env: dict[str, str], amqp_url: str,
                                             topology: Topology) -> None:
    _library(root, 2_000)
    register()
    env = {**cli_env, "TERM": "xterm", "LIBWATCH_AMQP_URL": amqp_url,
           "LIBWATCH_AMQP_PREFIX": topology.exchange.removesuffix("libwatch")}
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "libwatch", "scan", NAME], env=env, stdin=follower,
                               stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    try:
        drawn = _read_all(leader)
        code = process.wait(timeout=120)
    finally:
        process.kill()
        os.close(leader)
    assert code == 0, drawn
    assert "walking: " in drawn and " files" in drawn, drawn
    hashing = [line for line in drawn.split("\r") if line.startswith("hashing: ")]
    assert hashing and all("B/8.1 MiB  " in line and "B/s" in line for line in hashing), drawn
    assert "writing the catalog: 0/4,000 records" in drawn, drawn  # 2,000 file records and their 2,000 events
    assert "publishing: " in drawn and " requests" in drawn, drawn
    assert "Traceback" not in drawn


def test_scan_piped_draws_no_progress(root: Path, register: Any, cli_env: dict[str, str]) -> None:
    _library(root, 300)
    register()
    done = subprocess.run([sys.executable, "-m", "libwatch", "scan", NAME], env=cli_env, capture_output=True,
                          text=True, check=True)
    assert "\r" not in done.stderr and "hashing" not in done.stderr and "walking" not in done.stderr, done.stderr
    assert "added" in done.stdout
