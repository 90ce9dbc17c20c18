"""The one place that runs systemd's commands, and what ``systemctl`` says of the units."""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from libwatch.errors import SystemdError
from libwatch.systemd.layout import check_library_name, path_unit, timer_unit

NOT_RUNNING: Final = ("systemd is not running here (not PID 1, e.g. a container): "
                       "wrote the unit files but could not reload or enable them")


@dataclass(frozen=True, slots=True)
class NextRun:
    """A library's timer and watcher as systemd reports them."""

    library: str
    state: str  # "scheduled", "not scheduled" or "systemd not running"
    next_run: datetime | None = None
    last_run: datetime | None = None
    watch: str = "not watched"  # "watching", "not watched", "failed" or "systemd not running"


def run(command: Sequence[str], *, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(command), capture_output=True, text=True, env=env, timeout=120, check=False)
    except FileNotFoundError as exc:
        raise SystemdError(f"{command[0]} not found: is systemd installed?") from exc


def manager_running(user: bool) -> bool:
    """Whether a systemd manager (system, or this user's) is there to be told about units."""
    if not Path("/run/systemd/system").is_dir():  # sd_booted(3)
        return False
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return not user or bool(runtime and Path(runtime, "systemd", "private").exists())


def start_unit(unit: str, *, user: bool) -> list[str]:
    """`systemctl start --no-block UNIT` (e.g. a scan the web page asked for); the problems, if any."""
    return systemctl_step(user, "start", "--no-block", "--", unit)


def systemctl_step(user: bool, *args: str) -> list[str]:
    proc = run(["systemctl", *(["--user"] if user else []), *args])
    if proc.returncode == 0:
        return []
    detail = " ".join(proc.stderr.split()) or f"exit {proc.returncode}"
    return [f"systemctl {' '.join(args)}: {detail}"]


def timers_status(names: Iterable[str], *, user: bool = False) -> dict[str, NextRun]:
    """Next and last scheduled run and watcher state of each library, from ``systemctl show``."""
    names = [check_library_name(n) for n in names]
    if not manager_running(user):
        return {n: NextRun(n, "systemd not running", watch="systemd not running") for n in names}
    systemctl = ["systemctl", *(["--user"] if user else [])]
    units = [u for n in names for u in (timer_unit(n), path_unit(n))]
    if not units:
        return {}
    shown = _parse_show(run([*systemctl, "show", "-p", "Id,LoadState,ActiveState", "--", *units]).stdout)
    # `show --timestamp=unix` still prints local dates in systemd 252; list-timers' JSON has microseconds.
    listed = run([*systemctl, "list-timers", "--all", "--output=json", "--", *units[::2]])
    times = {t["unit"]: t for t in json.loads(listed.stdout or "[]")}
    return {n: _next_run(n, shown.get(timer_unit(n), {}), times.get(timer_unit(n), {}), shown.get(path_unit(n), {}))
            for n in names}


def _parse_show(text: str) -> dict[str, dict[str, str]]:
    units: dict[str, dict[str, str]] = {}
    for block in text.strip().split("\n\n"):
        props = dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
        if "Id" in props:
            units[props["Id"]] = props
    return units


def _next_run(name: str, timer: Mapping[str, str], times: Mapping[str, object],
              path: Mapping[str, str]) -> NextRun:
    watch = {"active": "watching", "failed": "failed"}.get(path.get("ActiveState", ""), "not watched")
    if timer.get("LoadState") != "loaded" or timer.get("ActiveState") != "active":
        return NextRun(name, "not scheduled", watch=watch)
    return NextRun(name, "scheduled", _timestamp(times.get("next")), _timestamp(times.get("last")), watch)


def _timestamp(usec: object) -> datetime | None:
    """Microseconds since the epoch (0 or null: never) as an aware datetime."""
    if not isinstance(usec, int) or usec <= 0:
        return None
    return datetime.fromtimestamp(usec / 1_000_000, tz=UTC)
