"""`rebuild --run` in a real terminal: a progress line, and Ctrl-C leaves the run interrupted with its counts."""
from __future__ import annotations

import fcntl
import os
import pty
import signal
import subprocess
import sys
import termios
import time

from .conftest import Photos


def _read_until(fd: int, needle: str, timeout: float) -> str:
    seen, deadline = "", time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096).decode(errors="replace")
        except OSError:  # the terminal's other side closed: the process ended
            break
        seen += chunk
    return seen


def _foreground_job() -> None:
    """In the child: the terminal's foreground job, with Ctrl-C's default action, as a shell starts it.

    A suite started in the background by a non-interactive shell inherits SIGINT ignored, and a
    process that starts with SIGINT ignored keeps it so (Python then installs no KeyboardInterrupt).
    """
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_rebuild_run_draws_progress_and_ctrl_c_leaves_it_interrupted(photos: Photos, cli_env: dict[str, str]) -> None:
    for i in range(400):
        photos.add(f"a/{i:04d}.jpg", size=(1600, 1200), color=(i % 256, 40, 40))
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "libwatch", "rebuild", "photos", "--run", "--processes", "1"],
                               env={**cli_env, "TERM": "xterm"}, stdin=follower, stdout=follower, stderr=follower,
                               start_new_session=True, close_fds=True, preexec_fn=_foreground_job)
    os.close(follower)
    try:
        drawn = _read_until(leader, "renderings", timeout=120)
        assert "rendering: " in drawn and "/s" in drawn, drawn
        time.sleep(0.5)
        os.write(leader, b"\x03")  # Ctrl-C, as the terminal sends it: SIGINT to the foreground group
        rest = _read_until(leader, "stays pending", timeout=60)
        code = process.wait(timeout=60)
    finally:
        process.kill()
        os.close(leader)
    assert code == 130, drawn + rest
    assert "done before Ctrl-C; the rest stays pending" in rest, rest
    assert "Traceback" not in rest
    run = photos.db.runs.find_one({"job": "rebuild"})
    assert run["status"] == "interrupted" and run["error"] == "interrupted by the user", run
    assert 0 < run["counts"]["selected"] < 800, run["counts"]
    # what was rendered before Ctrl-C is recorded done (the catalog agrees with the counts); the rest stays pending
    states = [kind_state for both in photos.states().values() for kind_state in both]
    assert states.count("done") == run["counts"]["done"] > 0 and "pending" in states, run["counts"]
