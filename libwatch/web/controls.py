"""What the page's buttons do: the same services as `libwatch library set`, `scan` and `rebuild`.

A scan or a rebuild is never run inside the web server: it goes to the library's
`libwatch-scan@NAME.service` when the units are installed (so it runs sandboxed, with the
unit's priority and lock handling), else to a child `libwatch` process. Either way the
run lands in `history` like any other.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from libwatch import systemd
from libwatch.catalog import libraries as library_repo
from libwatch.config import Settings
from libwatch.errors import UsageError
from libwatch.services import libraries as library_service
from libwatch.services import rebuild as rebuild_service
from libwatch.services import units as units_service
from libwatch.web.catalog import Db

log = logging.getLogger("libwatch.web")

REBUILD_FLAGS: Final = {"failed": "--failed", "missing": "--missing"}
# The settings a child process needs, passed in its environment (never on its command line,
# where `ps` would show a URI's password).
_ENVIRONMENT: Final = {"mongo_uri": "LIBWATCH_MONGO_URI", "database": "LIBWATCH_DATABASE",
                       "amqp_url": "LIBWATCH_AMQP_URL", "cache_dir": "LIBWATCH_CACHE_DIR", "home": "LIBWATCH_HOME"}


@dataclass(frozen=True, slots=True)
class Started:
    """A scan or rebuild handed off: to a unit or a child process."""

    library: str
    action: str
    via: str  # "unit" or "process"
    unit: str | None = None
    pid: int | None = None
    problem: str | None = None  # why the unit could not be started (the scan then ran as a child)

    def to_document(self) -> dict[str, Any]:
        return {"library": self.library, "action": self.action, "via": self.via, "unit": self.unit, "pid": self.pid,
                "problem": self.problem}


@dataclass(frozen=True, slots=True)
class Changed:
    """A library after a settings change, and what systemd said when its units were updated."""

    document: dict[str, Any]
    problems: tuple[str, ...] = ()

    def to_document(self) -> dict[str, Any]:
        return {**self.document, "problems": list(self.problems)}


def child_environment(settings: Settings) -> dict[str, str]:
    """This process's environment with the web server's effective settings for a child `libwatch`."""
    env = {key: value for key, value in os.environ.items() if key not in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")}
    for key, variable in _ENVIRONMENT.items():
        value = getattr(settings, key)
        if value is None:
            env.pop(variable, None)
        else:
            env[variable] = str(value)
    return env


def _spawn(settings: Settings, args: Sequence[str]) -> int:
    """Start `libwatch ARGS` detached from the request; a thread reaps it. Returns its pid."""
    child = subprocess.Popen([sys.executable, "-m", "libwatch", *args], env=child_environment(settings),
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    threading.Thread(target=child.wait, name=f"reap-{child.pid}", daemon=True).start()
    return child.pid


def _installed_scope(name: str) -> bool | None:
    """Whether the library's units are installed as user units (True), system units (False), or not (None)."""
    for user in (False, True):
        if name in systemd.installed_libraries(user) and systemd.manager_running(user):
            return user
    return None


def run_now(db: Db, settings: Settings, name: str) -> Started:
    """Start a scan of `name` now: its scan unit when installed, else `libwatch scan NAME --trigger manual`."""
    library = library_repo.get(db, name)
    user = _installed_scope(library.name)
    problem = None
    if user is not None:
        unit = f"libwatch-scan@{library.name}.service"
        problems = systemd.start_unit(unit, user=user)
        if not problems:
            return Started(library.name, "scan", "unit", unit=unit)
        # e.g. no polkit to grant the service user the start: the scan still runs, as this user.
        problem = problems[0]
        log.warning("cannot start %s (%s); scanning in a child process instead", unit, problem)
    pid = _spawn(settings, ["scan", library.name, "--trigger", "manual"])
    return Started(library.name, "scan", "process", pid=pid, problem=problem)


def rebuild_choices() -> tuple[str, ...]:
    """The rebuilds the page offers: those of `REBUILD_FLAGS` that `libwatch rebuild` has."""
    return tuple(selection for selection in REBUILD_FLAGS if selection in rebuild_service.SELECTIONS)


def rebuild(db: Db, settings: Settings, name: str, selection: str) -> Started:
    """Ask again for the library's failed renders, or for the cache files missing on disk, in a child process."""
    if selection not in rebuild_choices():
        raise UsageError(f"cannot rebuild {selection!r} here (one of {', '.join(rebuild_choices())})")
    library = library_repo.get(db, name)
    pid = _spawn(settings, ["rebuild", library.name, REBUILD_FLAGS[selection], "--trigger", "manual"])
    return Started(library.name, f"rebuild {selection}", "process", pid=pid)


def set_options(db: Db, settings: Settings, name: str, **options: Any) -> Changed:
    """Change a library's schedule state or calendar as `library set` does, then update its installed units."""
    if options.get("on_calendar") is not None:
        units_service.validate_schedule(options["on_calendar"])
    library = library_service.set_options(db, name, **options)
    problems = [line for result in units_service.sync_installed(db, settings, library)
                for line in (*result.problems, *((result.notice,) if result.notice else ()))]
    return Changed(library_service.describe(library), tuple(problems))


def watched_folders(name: str) -> int | None:
    """How many folders the library's installed path unit watches (None: no watcher installed)."""
    for user in (False, True):
        dropin = systemd.unit_dir(user) / f"{systemd.path_unit(name)}.d" / systemd.PATHS_DROPIN
        try:
            return dropin.read_text(encoding="utf-8").count("\nPathChanged=")
        except OSError:
            continue
    return None
