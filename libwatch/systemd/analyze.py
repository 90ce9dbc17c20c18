"""``systemd-analyze``: calendar expressions, unit verification, the security exposure score."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from libwatch.errors import CalendarError, SystemdError
from libwatch.systemd.layout import CONTROL
from libwatch.systemd.systemctl import run


def validate_calendar(expr: str) -> str:
    """The normalised form of an OnCalendar= expression, from ``systemd-analyze calendar``."""
    if CONTROL.search(expr) or not expr.strip():
        raise CalendarError(expr, "empty or contains control characters")
    proc = run(["systemd-analyze", "calendar", "--iterations=1", expr.strip()])
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["rejected by systemd-analyze"])[-1]
        raise CalendarError(expr, reason)
    for line in proc.stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "Normalized form":
            return value
    raise CalendarError(expr, f"unexpected systemd-analyze output: {proc.stdout.strip()!r}")


def verify(directory: Path, units: Sequence[str], *, user: bool = False) -> list[str]:
    """``systemd-analyze verify`` of ``units`` found in ``directory``; every output line is a problem.

    verify prints warnings yet exits 0, so any output counts. As root it runs in a private
    mount namespace with a tmpfs /run: its test-mode manager otherwise touches the host's /run/systemd.
    """
    command = ["systemd-analyze", *(["--user"] if user else []), "verify", *units]
    if os.geteuid() == 0 and shutil.which("unshare"):
        command = ["unshare", "--mount", "--propagation", "private", "--",
                   "sh", "-c", 'mount -t tmpfs tmpfs /run && exec "$@"', "sh", *command]
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{directory}:", "SYSTEMD_LOG_COLOR": "0"}
    with tempfile.TemporaryDirectory(prefix="libwatch-verify-") as runtime:
        # A user manager, even verify's test-mode one, needs a runtime directory.
        env.setdefault("XDG_RUNTIME_DIR", runtime)
        proc = run(command, env=env)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    if proc.returncode != 0 and not problems:
        problems.append(f"systemd-analyze verify exited {proc.returncode}")
    return problems


def security_exposure(directory: Path, unit: str) -> float:
    """The overall exposure (0 safe .. 10 unsafe) of ``unit`` found in ``directory`` (with its drop-ins),
    from ``systemd-analyze security --offline=true`` (systemd 252 and later)."""
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{directory}:", "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_COLORS": "0"}
    proc = run(["systemd-analyze", "security", "--offline=true", "--no-pager", unit], env=env)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout + proc.stderr)
    if not found:
        raise SystemdError(f"systemd-analyze security {unit}: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return float(found.group(1))
