"""Where libwatch's units and state live on a host, and what names they have.

Pure: constants of the layout, the context the templates are rendered with, unit names.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from libwatch.errors import SystemdError, UnitError
from libwatch.library import NAME_PATTERN

SYSTEM_UNIT_DIR: Final = Path("/etc/systemd/system")
SYSTEM_CONFIG_FILE: Final = "/etc/libwatch/config.toml"
SYSTEM_STATE_DIR: Final = "/var/lib/libwatch"
SYSTEM_CACHE_DIR: Final = "/var/cache/libwatch"
SERVICE_USER: Final = "libwatch"
SYSUSERS_FILE: Final = Path("/etc/sysusers.d/libwatch.conf")
SYSUSERS_TEXT: Final = f'u {SERVICE_USER} - "libwatch services" {SYSTEM_STATE_DIR}\n'
STORE_PORT: Final = 27017
DEFAULT_SETTLE: Final = 10.0
TEMPLATE_NAMES: Final = (
    "libwatch-scan@.service",
    "libwatch-scan@.timer",
    "libwatch-watch@.path",
    "libwatch-watch@.service",
    "libwatch-worker.service",
    "libwatch-cleanup.service",
    "libwatch-cleanup.timer",
    "libwatch-store.service",
    "libwatch-web.socket",
    "libwatch-web.service",
)
WEB_UNITS: Final = ("libwatch-web.socket", "libwatch-web.service")
# Lets the web service's user start a library's scan unit ("run now"), and nothing else.
POLKIT_RULE: Final = Path("/etc/polkit-1/rules.d/50-libwatch-web.rules")
POLKIT_TEXT: Final = f"""\
// Written by `libwatch units install --web`: the management page may start a library's scan now.
polkit.addRule(function(action, subject) {{
    if (action.id == "org.freedesktop.systemd1.manage-units" && subject.user == "{SERVICE_USER}" &&
        action.lookup("verb") == "start" &&
        /^libwatch-scan@[a-z0-9][a-z0-9_-]{{0,62}}\\.service$/.test(action.lookup("unit"))) {{
        return polkit.Result.YES;
    }}
}});
"""
METRICS_DROPIN: Final = "metrics.conf"
SCHEDULE_DROPIN: Final = "schedule.conf"
PATHS_DROPIN: Final = "paths.conf"
LIBRARY_DROPIN: Final = "library.conf"
LIBRARY_NAME: Final = NAME_PATTERN  # the one library-name rule (libwatch.library)
CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class UnitContext:
    """What the templates need from the host: the executable, the settings file, state and cache folders.

    ``store``: the units use ``libwatch-store.service`` (a host without MongoDB), so they want it
    and start after it. System units run as the ``libwatch`` user, sandboxed; user units as the user.
    """

    executable: str
    state_dir: str
    cache_dir: str
    user: bool = False
    config_file: str = SYSTEM_CONFIG_FILE
    settle: float = DEFAULT_SETTLE
    store: bool = False

    @classmethod
    def for_host(cls, *, user: bool = False, executable: str | None = None,
                 state_dir: str | None = None, cache_dir: str | None = None,
                 settle: float = DEFAULT_SETTLE, store: bool = False) -> UnitContext:
        """The defaults of DESIGN.md for system units (/var/lib, /var/cache, /etc) or user units (XDG)."""
        if user:
            data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local/share")
            cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
            config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
            defaults = (f"{data}/libwatch", f"{cache}/libwatch", f"{config}/libwatch/config.toml")
        else:
            defaults = (SYSTEM_STATE_DIR, SYSTEM_CACHE_DIR, SYSTEM_CONFIG_FILE)
        return cls(executable=executable or find_executable(), state_dir=state_dir or defaults[0],
                   cache_dir=cache_dir or defaults[1], user=user, config_file=defaults[2], settle=settle,
                   store=store)


@dataclass(frozen=True, slots=True)
class LibraryUnits:
    """One library as its units see it; ``watch_dirs`` are collection paths relative to ``root``."""

    name: str
    root: str
    on_calendar: str = "*:0/30"
    watch: bool = True
    watch_dirs: tuple[str, ...] = ()
    enabled: bool = True


def find_executable() -> str:
    """The absolute path of the ``libwatch`` script next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "libwatch"
    found = str(beside) if beside.exists() else shutil.which("libwatch")
    if not found:
        raise SystemdError("cannot find the libwatch executable (next to the interpreter or on PATH)")
    return os.path.abspath(found)


def unit_dir(user: bool) -> Path:
    """Where units are installed: /etc/systemd/system, or ~/.config/systemd/user for --user."""
    if not user:
        return SYSTEM_UNIT_DIR
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def timer_unit(name: str) -> str:
    """The timer unit of library ``name``."""
    return f"libwatch-scan@{name}.timer"


def path_unit(name: str) -> str:
    """The path (watch) unit of library ``name``."""
    return f"libwatch-watch@{name}.path"


def library_units(name: str) -> tuple[str, ...]:
    """Every unit instance of library ``name``, in the order ``systemd-analyze verify`` takes them."""
    return (f"libwatch-scan@{name}.service", timer_unit(name), path_unit(name), f"libwatch-watch@{name}.service")


def check_library_name(name: str) -> str:
    """``name`` if it is a library slug (safe as a systemd instance name), else UnitError."""
    if not LIBRARY_NAME.fullmatch(name):
        raise UnitError(f"library name {name!r} is not a slug [a-z0-9][a-z0-9_-]{{0,62}}")
    return name
