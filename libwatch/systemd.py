"""systemd integration: render, install and inspect libwatch's units.

The rendering half is pure (templates in ``libwatch/units`` in, file texts out).
The other half is the only place in libwatch that runs ``systemctl`` or
``systemd-analyze`` or reads the kernel's inotify limits.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Final

from libwatch.errors import CalendarError, SystemdError, UnitError
from libwatch.library import NAME_PATTERN

SYSTEM_UNIT_DIR: Final = Path("/etc/systemd/system")
SYSTEM_CONFIG_FILE: Final = "/etc/libwatch/config.toml"
SYSTEM_STATE_DIR: Final = "/var/lib/libwatch"
SYSTEM_CACHE_DIR: Final = "/var/cache/libwatch"
SERVICE_USER: Final = "libwatch"
SYSUSERS_FILE: Final = Path("/etc/sysusers.d/libwatch.conf")
SYSUSERS_TEXT: Final = f'u {SERVICE_USER} - "libwatch services" {SYSTEM_STATE_DIR}\n'
STORE_PORT: Final = 27017
DEFAULT_WATCH_CAP: Final = 200
DEFAULT_SETTLE: Final = 10.0
# Each PathChanged= line costs the manager one inotify instance (measured on systemd 252: a
# 200-line path unit fails with "Too many open files" under the default max_user_instances=128,
# a 100-line one holds 104). Leave this many to the manager and the user's other processes.
INOTIFY_RESERVE: Final = 40
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
# Path units cannot watch these (no inotify events for changes made by other hosts).
NETWORK_FS_TYPES: Final = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "9p", "afs", "ceph", "glusterfs",
    "lustre", "gpfs", "davfs", "sshfs", "fuse.sshfs", "fuse.glusterfs", "fuse.s3fs",
    "fuse.rclone", "fuse.davfs2", "fuse.cephfs", "fuse.gcsfuse", "virtiofs",
})
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_NEEDS_QUOTES: Final = re.compile(r"[\s\"'\\;]")
_HEADER: Final = "# Written by libwatch from the library's settings; `libwatch units install` rewrites it.\n"
_NOT_RUNNING: Final = ("systemd is not running here (not PID 1, e.g. a container): "
                       "wrote the unit files but could not reload or enable them")








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


@dataclass(frozen=True, slots=True)
class Rendered:
    """Unit files by path relative to the unit directory, and what the user should know."""

    files: Mapping[str, str]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InstallResult:
    """What install/uninstall/refresh did; ``notice`` is the one-line reason systemd was not told."""

    unit_dir: Path
    written: tuple[Path, ...] = ()
    removed: tuple[Path, ...] = ()
    enabled: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    notice: str | None = None


@dataclass(frozen=True, slots=True)
class NextRun:
    """A library's timer and watcher as systemd reports them."""

    library: str
    state: str  # "scheduled", "not scheduled" or "systemd not running"
    next_run: datetime | None = None
    last_run: datetime | None = None
    watch: str = "not watched"  # "watching", "not watched", "failed" or "systemd not running"


# ---------------------------------------------------------------- rendering (pure)

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


def render_templates(ctx: UnitContext) -> dict[str, str]:
    """The shared unit files (templates and the worker/cleanup/store units), file name -> text."""
    fields = _template_fields(ctx)
    pattern = re.compile(r"@([A-Z_]+)@")
    texts = {}
    for name in TEMPLATE_NAMES:
        template = (resources.files("libwatch") / "units" / name).read_text(encoding="utf-8")
        texts[name] = pattern.sub(lambda m: fields[m.group(1)], template)
    return texts


def render_library_dropins(lib: LibraryUnits, *, watch_cap: int = DEFAULT_WATCH_CAP, user: bool = False) -> Rendered:
    """The per-library drop-ins: the timer's schedule, the watched folders, the services' read-only root."""
    check_library_name(lib.name)
    if _CONTROL.search(lib.on_calendar) or not lib.on_calendar.strip():
        raise CalendarError(lib.on_calendar, "empty or contains control characters")
    files = {f"{timer_unit(lib.name)}.d/{SCHEDULE_DROPIN}":
             f"{_HEADER}[Timer]\nOnCalendar=\nOnCalendar={_specifier_escape(lib.on_calendar.strip())}\n"}
    if not user:
        service = f"{_HEADER}[Service]\n{_read_only([lib.root])}"
        files.update({f"{unit}.d/{LIBRARY_DROPIN}": service
                      for unit in (f"libwatch-scan@{lib.name}.service", f"libwatch-watch@{lib.name}.service")})
    if not lib.watch:
        return Rendered(files)
    paths, warnings = _watch_paths(lib, watch_cap)
    lines = "".join(f"PathChanged={_specifier_escape(p)}\n" for p in paths)
    files[f"{path_unit(lib.name)}.d/{PATHS_DROPIN}"] = f"{_HEADER}[Path]\n{lines}"
    return Rendered(files, tuple(warnings))


def render_worker_dropin(roots: Sequence[str]) -> dict[str, str]:
    """The worker's drop-in: every library root, read-only (it renders from all of them)."""
    if not roots:
        return {}
    return {f"libwatch-worker.service.d/{LIBRARY_DROPIN}": f"{_HEADER}[Service]\n{_read_only(roots)}"}


def _read_only(roots: Sequence[str]) -> str:
    """ReadOnlyPaths= for library roots ('-': a missing root is the scan's to report, exit 74), and
    ProtectHome=read-only instead of yes when a root lies in a home folder."""
    paths = sorted({_absolute(root) for root in roots})
    lines = "ReadOnlyPaths=" + " ".join(_quote(f"-{path}") for path in paths) + "\n"
    if any(_under_home(path) for path in paths):
        lines += "ProtectHome=read-only\n"
    return lines


def render_metrics_dropins(ctx: UnitContext, folder: str) -> dict[str, str]:
    """Drop-ins that write the metrics for node_exporter into ``folder`` after every scan, failed or not.

    Both the step (``-``) and the folder (``-``) are optional: a missing or full folder never fails a scan.
    """
    directory = _absolute(folder)
    command = f"{_quote(_absolute(ctx.executable), exec_line=True)} metrics --textfile {_quote(directory, exec_line=True)}"
    step = f"{_HEADER}[Service]\nExecStopPost=-{command}\n" + ("" if ctx.user else f"ReadWritePaths=-{_quote(directory)}\n")
    return {f"{unit}.d/{METRICS_DROPIN}": step for unit in ("libwatch-scan@.service", "libwatch-watch@.service")}


def render_all(ctx: UnitContext, libraries: Iterable[LibraryUnits], *,
               watch_cap: int = DEFAULT_WATCH_CAP, roots: Sequence[str] | None = None) -> Rendered:
    """Everything ``libwatch units render`` writes: the templates plus each library's drop-ins.

    ``roots``: every library's root, for the worker's drop-in (default: those of ``libraries``).
    """
    libraries = list(libraries)
    files: dict[str, str] = render_templates(ctx)
    warnings: list[str] = []
    for lib in libraries:
        dropins = render_library_dropins(lib, watch_cap=watch_cap, user=ctx.user)
        files.update(dropins.files)
        warnings.extend(dropins.warnings)
    if not ctx.user:
        files.update(render_worker_dropin([lib.root for lib in libraries] if roots is None else roots))
    return Rendered(files, tuple(warnings))


def sandbox_warnings(ctx: UnitContext, libraries: Iterable[LibraryUnits]) -> list[str]:
    """What the system services' sandbox would hide or deny: ExecStart=, folders and library roots."""
    if ctx.user:
        return []
    warnings = []
    named = [("ExecStart=", ctx.executable), ("the state folder", ctx.state_dir), ("the cache folder", ctx.cache_dir),
             *((f"library {lib.name}'s root", lib.root) for lib in libraries)]
    for what, path in named:
        directive = hidden_by_sandbox(os.path.abspath(path))
        if directive is None or (what.startswith("library") and directive == "ProtectHome=yes"):
            continue  # a root in a home folder gets ProtectHome=read-only
        warnings.append(f"{what} {path} is hidden from the services by {directive}: "
                        "move it (install libwatch under /opt or /usr/local, keep libraries out of /tmp)")
    for lib in libraries:
        closed = _closed_ancestor(lib.root)
        if closed:
            warnings.append(f"library {lib.name}'s root {lib.root} may not be readable by the {SERVICE_USER} user: "
                            f"{closed}")
    return warnings


def _closed_ancestor(root: str) -> str | None:
    """Why another user cannot reach ``root`` (a folder on the way without o+x, the root without o+rx)."""
    path = Path(os.path.abspath(root))
    for folder in (*reversed(path.parents), path):
        try:
            mode = folder.stat().st_mode
        except OSError:
            return None  # a missing root is reported by the scan (exit 74)
        needed = 0o005 if folder == path else 0o001
        if mode & needed != needed:
            return f"{folder} is mode {mode & 0o777:o} (give the {SERVICE_USER} group access, or o+rx)"
    return None


def check_library_name(name: str) -> str:
    """``name`` if it is a library slug (safe as a systemd instance name), else UnitError."""
    if not LIBRARY_NAME.fullmatch(name):
        raise UnitError(f"library name {name!r} is not a slug [a-z0-9][a-z0-9_-]{{0,62}}")
    return name


# The sandbox of every system service. Scored by `systemd-analyze security` (systemd 252): 1.5 for
# the scans, worker, cleanup and store, 1.6 where a library lies in a home folder (ProtectHome=read-only);
# tests/systemd/test_security.py holds every unit to 2.5.
# What is left open is what they need: the network (MongoDB, RabbitMQ, the store on the loopback)
# and the host's root directory (the libraries, read-only). Pillow, pymongo, pika and SecantusDB
# run under MemoryDenyWriteExecute= and @system-service (checked by the end-to-end test).
SANDBOX: Final = """\
UMask=0027
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
ProtectHostname=yes
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
KeyringMode=private
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM"""
# Folders a sandboxed service cannot see: (prefix, the directive that hides it).
HIDDEN: Final = (("/tmp", "PrivateTmp=yes"), ("/var/tmp", "PrivateTmp=yes"), ("/home", "ProtectHome=yes"),
                 ("/root", "ProtectHome=yes"), ("/run/user", "ProtectHome=yes"), ("/dev", "PrivateDevices=yes"))
HOME_PREFIXES: Final = ("/home", "/root", "/run/user")


def _template_fields(ctx: UnitContext) -> dict[str, str]:
    state, cache, config = _absolute(ctx.state_dir), _absolute(ctx.cache_dir), _absolute(ctx.config_file)
    store = " libwatch-store.service" if ctx.store else ""
    fields = {
        "LIBWATCH": _quote(_absolute(ctx.executable), exec_line=True),
        "SETTLE": f"{ctx.settle:g}",
        "CONFIG": _quote(f"LIBWATCH_CONFIG={config}"),
        "DEFAULT_TARGET": "default.target" if ctx.user else "multi-user.target",
        "STORE_PORT": str(STORE_PORT),
    }
    if ctx.user:
        # File system namespacing is unavailable to user services (systemd.exec(5)); they run as the user.
        return {**fields, "IDENTITY": "", "STATE_RW": "", "CACHE_RW": "", "REFRESH": "",
                "SANDBOX": "# ProtectSystem= and friends need a mount namespace, which user services lack.",
                "DEPENDENCIES": f"Wants={store.strip()}\nAfter=libwatch-store.service" if store else
                "After=libwatch-store.service"}
    return {
        **fields,
        # ConfigurationDirectory= stays root's (systemd.exec(5)): the services read the settings, never write them.
        "IDENTITY": f"User={SERVICE_USER}\nGroup={SERVICE_USER}" + (
            "\nConfigurationDirectory=libwatch" if config == SYSTEM_CONFIG_FILE else ""),
        "SANDBOX": SANDBOX,
        # StateDirectory=/CacheDirectory= create the folders owned by the service user (and chown an
        # existing root-owned one); a folder elsewhere is made writable with ReadWritePaths=.
        "STATE_RW": _writable("StateDirectory", state, SYSTEM_STATE_DIR),
        "CACHE_RW": _writable("CacheDirectory", cache, SYSTEM_CACHE_DIR),
        # The scan runs as the service user, which may not rewrite units: new collection folders
        # reach the watch list through this step, run with full privileges ('+') after the scan.
        "REFRESH": f"ExecStartPost=+{_quote(_absolute(ctx.executable), exec_line=True)} units refresh %i",
        "DEPENDENCIES": f"Wants=network-online.target{store}\nAfter=network-online.target libwatch-store.service",
    }


def _writable(directive: str, path: str, default: str) -> str:
    name = default.rsplit("/", 1)[1]
    if path == default:
        return f"{directive}={name}\n{directive}Mode=0750"
    return f"ReadWritePaths={_quote(path)}"


def hidden_by_sandbox(path: str) -> str | None:
    """The directive that hides ``path`` from the system services, or None when they see it."""
    for prefix, directive in HIDDEN:
        if path == prefix or path.startswith(prefix + "/"):
            return directive
    return None


def _under_home(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in HOME_PREFIXES)


def _watch_paths(lib: LibraryUnits, cap: int) -> tuple[list[str], list[str]]:
    """The root first, then shallow folders before deep ones: a watched parent sees new subfolders."""
    root = _absolute(lib.root)
    warnings: list[str] = []
    candidates: set[str] = {root}
    for rel in lib.watch_dirs:
        path = os.path.normpath(os.path.join(root, rel)) if rel else root
        if _CONTROL.search(path) or path != path.strip() or not Path(path).is_relative_to(root):
            warnings.append(f"library {lib.name}: cannot watch folder {rel!r} (name not expressible in a unit)")
        else:
            # Every folder on the way down too: a new album beside an existing one appears in a parent.
            candidates.update(str(folder) for folder in (Path(path), *Path(path).parents)
                              if folder.is_relative_to(root))
    ordered = sorted(candidates, key=lambda p: (p != root, p.count("/"), p))
    if len(ordered) > cap:
        warnings.append(
            f"library {lib.name}: watching {cap} of {len(ordered)} folders (the watch cap is {cap}); "
            f"changes in the other {len(ordered) - cap} are found by the scheduled scan ({lib.on_calendar})")
    return ordered[:cap], warnings


def _absolute(path: str) -> str:
    if _CONTROL.search(path) or not os.path.isabs(path):
        raise UnitError(f"{path!r} must be an absolute path without control characters")
    return os.path.normpath(path)


def _specifier_escape(text: str) -> str:
    return text.replace("%", "%%")


def _quote(word: str, *, exec_line: bool = False, specifiers: bool = True) -> str:
    """One word of a unit setting, escaped for specifiers ('%') and, on Exec lines, variables ('$')."""
    if specifiers:
        word = _specifier_escape(word)
    if exec_line:
        word = word.replace("$", "$$")
    if not _NEEDS_QUOTES.search(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------- systemd-analyze

def validate_calendar(expr: str) -> str:
    """The normalised form of an OnCalendar= expression, from ``systemd-analyze calendar``."""
    if _CONTROL.search(expr) or not expr.strip():
        raise CalendarError(expr, "empty or contains control characters")
    proc = _run(["systemd-analyze", "calendar", "--iterations=1", expr.strip()])
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
        proc = _run(command, env=env)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    if proc.returncode != 0 and not problems:
        problems.append(f"systemd-analyze verify exited {proc.returncode}")
    return problems


def security_exposure(directory: Path, unit: str) -> float:
    """The overall exposure (0 safe .. 10 unsafe) of ``unit`` found in ``directory`` (with its drop-ins),
    from ``systemd-analyze security --offline=true`` (systemd 252 and later)."""
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{directory}:", "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_COLORS": "0"}
    proc = _run(["systemd-analyze", "security", "--offline=true", "--no-pager", unit], env=env)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout + proc.stderr)
    if not found:
        raise SystemdError(f"systemd-analyze security {unit}: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return float(found.group(1))


# ---------------------------------------------------------------- install / uninstall

def manager_running(user: bool) -> bool:
    """Whether a systemd manager (system, or this user's) is there to be told about units."""
    if not Path("/run/systemd/system").is_dir():  # sd_booted(3)
        return False
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return not user or bool(runtime and Path(runtime, "systemd", "private").exists())


def install(ctx: UnitContext, libraries: Sequence[LibraryUnits], *, enable: bool = True,
            worker: bool = False, web: bool = False, metrics_textfile: str | None = None,
            watch_cap: int = DEFAULT_WATCH_CAP, directory: Path | None = None,
            roots: Sequence[str] | None = None) -> InstallResult:
    """Write the units and drop-ins, reload systemd and enable --now each library's timer and watcher.

    Calendars are validated first. Without a running systemd the files are still written and
    ``notice`` says that systemd was not told. ``roots``: every library's root (the worker's drop-in).
    ``web``: also enable the management page's socket (and, system-wide, the polkit rule for "run now").
    ``metrics_textfile``: after every scan, write the metrics into that folder (`libwatch metrics --textfile`).
    """
    for lib in libraries:
        validate_calendar(lib.on_calendar)
    target = directory or unit_dir(ctx.user)
    watched = [lib.name for lib in libraries if lib.watch]
    share = watch_budget(target, exclude=[lib.name for lib in libraries]) // max(1, len(watched))
    rendered = render_all(ctx, libraries, watch_cap=min(watch_cap, share), roots=roots)
    if metrics_textfile is not None:
        rendered = replace(rendered, files={**rendered.files, **render_metrics_dropins(ctx, metrics_textfile)})
    warnings = [*rendered.warnings, *sandbox_warnings(ctx, libraries)]
    if any(_cut_by_budget(lib, share, watch_cap) for lib in libraries):
        warnings.append(_budget_warning(share))
    written = write_units(target, rendered.files)
    if web and not ctx.user and directory is None:
        written += write_units(POLKIT_RULE.parent, {POLKIT_RULE.name: POLKIT_TEXT})
    removed = tuple(p for lib in libraries if not lib.watch
                    for p in _remove_dropin(target, path_unit(lib.name), PATHS_DROPIN))
    base = InstallResult(target, written, removed, warnings=tuple(warnings))
    if not manager_running(ctx.user):
        return replace(base, notice=_NOT_RUNNING)
    wanted = [u for lib in libraries for u, on in ((timer_unit(lib.name), lib.enabled),
                                                    (path_unit(lib.name), lib.watch)) if on]
    wanted += ["libwatch-cleanup.timer"] + ["libwatch-worker.service"] * worker + ["libwatch-store.service"] * ctx.store
    wanted += ["libwatch-web.socket"] * web
    unwanted = [u for lib in libraries for u, on in ((timer_unit(lib.name), lib.enabled),
                                                      (path_unit(lib.name), lib.watch)) if not on]
    problems = [*_systemctl_step(ctx.user, "daemon-reload")]
    if enable:
        problems += _systemctl_step(ctx.user, "enable", "--now", *wanted)
    if unwanted:
        problems += _systemctl_step(ctx.user, "disable", "--now", *unwanted)
    return replace(base, enabled=tuple(wanted) if enable else (), disabled=tuple(unwanted), problems=tuple(problems))


def create_service_user() -> InstallResult:
    """The ``libwatch`` system user, from a sysusers.d file (systemd-sysusers creates it).

    A fixed user rather than DynamicUser=: the admin's shell and the services share the settings
    file (group-readable) and the state, which keep one owner across restarts.
    """
    written = write_units(SYSUSERS_FILE.parent, {SYSUSERS_FILE.name: SYSUSERS_TEXT})
    sysusers = _run(["systemd-sysusers", str(SYSUSERS_FILE)])
    problems = [] if sysusers.returncode == 0 else [f"systemd-sysusers: {' '.join(sysusers.stderr.split())}"]
    return InstallResult(SYSUSERS_FILE.parent, written, problems=tuple(problems))


def prepare_host(ctx: UnitContext, *, directory: Path | None = None) -> InstallResult:
    """Before the libraries are read: the shared units, the folders and, if used, the running store."""
    target = directory or unit_dir(ctx.user)
    written = write_units(target, render_templates(ctx))
    problems: list[str] = []
    if not ctx.user and directory is None:
        for folder, default in ((ctx.state_dir, SYSTEM_STATE_DIR), (ctx.cache_dir, SYSTEM_CACHE_DIR)):
            if folder != default:  # StateDirectory=/CacheDirectory= make the default ones
                _service_folder(Path(folder))
    base = InstallResult(target, written, problems=tuple(problems))
    if not manager_running(ctx.user):
        return replace(base, notice=_NOT_RUNNING)
    steps = _systemctl_step(ctx.user, "daemon-reload")
    if ctx.store:
        steps += _systemctl_step(ctx.user, "enable", "--now", "libwatch-store.service")
    return replace(base, enabled=("libwatch-store.service",) * ctx.store, problems=(*problems, *steps))


def _service_folder(folder: Path) -> None:
    """A state or cache folder outside /var/lib and /var/cache, owned by the service user."""
    import pwd

    folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    try:
        account = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return
    os.chown(folder, account.pw_uid, account.pw_gid)


def uninstall(name: str | None, *, user: bool = False, directory: Path | None = None) -> InstallResult:
    """Stop and remove library ``name``'s timer and watcher; ``None`` removes every libwatch unit."""
    target = directory or unit_dir(user)
    names = [check_library_name(name)] if name is not None else installed_libraries(user, directory=target)
    units = [u for n in names for u in (timer_unit(n), path_unit(n))]
    if name is None:
        units += ["libwatch-cleanup.timer", "libwatch-worker.service", "libwatch-store.service", *WEB_UNITS]
    running = manager_running(user)
    problems = _systemctl_step(user, "disable", "--now", *units) if running and units else []
    dropins = [(unit, dropin) for n in names for unit, dropin in (
        (timer_unit(n), SCHEDULE_DROPIN), (path_unit(n), PATHS_DROPIN),
        (f"libwatch-scan@{n}.service", LIBRARY_DROPIN), (f"libwatch-watch@{n}.service", LIBRARY_DROPIN))]
    if name is None:
        dropins += [("libwatch-worker.service", LIBRARY_DROPIN), ("libwatch-scan@.service", METRICS_DROPIN),
                    ("libwatch-watch@.service", METRICS_DROPIN)]
    removed = [p for unit, dropin in dropins for p in _remove_dropin(target, unit, dropin)]
    if name is None:
        for template in TEMPLATE_NAMES:
            if (target / template).exists():
                (target / template).unlink()
                removed.append(target / template)
    if not running:
        return InstallResult(target, removed=tuple(removed), notice=_NOT_RUNNING)
    problems += _systemctl_step(user, "daemon-reload")
    return InstallResult(target, removed=tuple(removed), disabled=tuple(units), problems=tuple(problems))


def refresh_watch(lib: LibraryUnits, *, user: bool | None = None, watch_cap: int = DEFAULT_WATCH_CAP,
                  directory: Path | None = None) -> InstallResult:
    """Rewrite a watched library's folder list after a scan found new collection folders.

    Does nothing unless the library's watcher is installed; reloads systemd only when the list
    changed, so calling it after every scan is cheap. ``user=None``: user units unless running as root.
    """
    scope = os.geteuid() != 0 if user is None else user
    target = directory or unit_dir(scope)
    if not lib.watch or not (target / f"{path_unit(lib.name)}.d").is_dir():
        return InstallResult(target)
    share = watch_budget(target, exclude=[lib.name])
    rendered = render_library_dropins(lib, watch_cap=min(watch_cap, share))
    if _cut_by_budget(lib, share, watch_cap):
        rendered = replace(rendered, warnings=(*rendered.warnings, _budget_warning(share)))
    paths_file = f"{path_unit(lib.name)}.d/{PATHS_DROPIN}"
    written = write_units(target, {paths_file: rendered.files[paths_file]})
    if not written:
        return InstallResult(target, warnings=rendered.warnings)
    if not manager_running(scope):
        return InstallResult(target, written, warnings=rendered.warnings, notice=_NOT_RUNNING)
    problems = _systemctl_step(scope, "daemon-reload")
    return InstallResult(target, written, warnings=rendered.warnings, problems=tuple(problems))


def watch_budget(directory: Path, *, exclude: Iterable[str] = ()) -> int:
    """PathChanged= lines the kernel's inotify limit leaves for libraries other than ``exclude``."""
    skip = {f"{path_unit(name)}.d" for name in exclude}
    used = sum(f.read_text(encoding="utf-8").count("\nPathChanged=")
               for f in directory.glob(f"libwatch-watch@*.path.d/{PATHS_DROPIN}") if f.parent.name not in skip)
    return max(1, inotify_limits()["max_user_instances"] - INOTIFY_RESERVE - used)


def _cut_by_budget(lib: LibraryUnits, share: int, watch_cap: int) -> bool:
    """Whether the kernel's inotify budget, not the watch cap, leaves some of the library's folders unwatched."""
    return lib.watch and share < watch_cap and len(_watch_paths(lib, watch_cap)[0]) > share


def _budget_warning(share: int) -> str:
    limit = inotify_limits()["max_user_instances"]
    return (f"watching at most {share} folders per library: each watched folder costs systemd one inotify "
            f"instance and fs.inotify.max_user_instances is {limit} (raise it with sysctl to watch more)")


def installed_libraries(user: bool, *, directory: Path | None = None) -> list[str]:
    """Libraries that have a schedule or watch drop-in in the unit directory."""
    target = directory or unit_dir(user)
    found = re.compile(r"libwatch-(?:scan|watch)@([a-z0-9][a-z0-9_-]{0,62})\.(?:timer|path)\.d")
    return sorted({m.group(1) for p in (target.iterdir() if target.is_dir() else ())
                   if (m := found.fullmatch(p.name))})


def write_units(directory: Path, files: Mapping[str, str]) -> tuple[Path, ...]:
    """Write each file (relative path -> text) atomically; returns those whose content changed."""
    written = []
    for rel, text in sorted(files.items()):
        path = directory / rel
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".libwatch-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        written.append(path)
    return tuple(written)


def _remove_dropin(directory: Path, unit: str, dropin: str) -> list[Path]:
    folder = directory / f"{unit}.d"
    path = folder / dropin
    if not path.exists():
        return []
    path.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()
    return [path]


def start_unit(unit: str, *, user: bool) -> list[str]:
    """`systemctl start --no-block UNIT` (e.g. a scan the web page asked for); the problems, if any."""
    return _systemctl_step(user, "start", "--no-block", "--", unit)


def _systemctl_step(user: bool, *args: str) -> list[str]:
    proc = _run(["systemctl", *(["--user"] if user else []), *args])
    if proc.returncode == 0:
        return []
    detail = " ".join(proc.stderr.split()) or f"exit {proc.returncode}"
    return [f"systemctl {' '.join(args)}: {detail}"]


# ---------------------------------------------------------------- status, doctor

def timers_status(names: Iterable[str], *, user: bool = False) -> dict[str, NextRun]:
    """Next and last scheduled run and watcher state of each library, from ``systemctl show``."""
    names = [check_library_name(n) for n in names]
    if not manager_running(user):
        return {n: NextRun(n, "systemd not running", watch="systemd not running") for n in names}
    systemctl = ["systemctl", *(["--user"] if user else [])]
    units = [u for n in names for u in (timer_unit(n), path_unit(n))]
    if not units:
        return {}
    shown = _parse_show(_run([*systemctl, "show", "-p", "Id,LoadState,ActiveState", "--", *units]).stdout)
    # `show --timestamp=unix` still prints local dates in systemd 252; list-timers' JSON has microseconds.
    listed = _run([*systemctl, "list-timers", "--all", "--output=json", "--", *units[::2]])
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


def inotify_limits() -> dict[str, int]:
    """The kernel's inotify limits (max_user_watches, max_user_instances, max_queued_events)."""
    base = Path("/proc/sys/fs/inotify")
    return {p.name: int(p.read_text()) for p in sorted(base.iterdir()) if p.name.startswith("max_")}


def filesystem_type(path: str | os.PathLike[str], *, mountinfo: str | None = None) -> str:
    """The type of the file system holding ``path`` (longest mount point prefix in mountinfo)."""
    real = os.path.realpath(path)
    text = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    best, fstype = "", ""
    for line in text.splitlines():
        fields, _, rest = line.partition(" - ")
        mount = _unescape_mount(fields.split()[4])
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, fstype = mount, rest.split()[0]
    return fstype


def is_network_fs(path: str | os.PathLike[str], *, mountinfo: str | None = None) -> bool:
    """Whether ``path`` is on a network file system, where path units see no changes."""
    return filesystem_type(path, mountinfo=mountinfo) in NETWORK_FS_TYPES


def _unescape_mount(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _run(command: Sequence[str], *, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(command), capture_output=True, text=True, env=env, timeout=120, check=False)
    except FileNotFoundError as exc:
        raise SystemdError(f"{command[0]} not found: is systemd installed?") from exc


def notify_ready(status: str) -> bool:
    """Tell systemd a Type=notify service is ready (sd_notify(3) READY=1); False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(f"READY=1\nSTATUS={status}".encode())
    return True
