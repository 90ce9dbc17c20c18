"""`libwatch doctor`: is everything libwatch needs here and working?

Each check reports rather than raises: an unreachable MongoDB is a failed check, not
exit 69. The report is fine (exit 0) only when every required check passed; warnings
(a library on NFS, units not installed) do not fail it.
"""
from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from pymongo.errors import PyMongoError

from libwatch import systemd
from libwatch.catalog import libraries as library_repo
from libwatch.catalog import store
from libwatch.config import Settings, has_password, mask_url
from libwatch.errors import EXIT_CHECK_FAILED, EXIT_OK, LibwatchError
from libwatch.library import Library
from libwatch.quantity import count
from libwatch.result import Problem, Result
from libwatch.services import libraries as library_service

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
STORE_WAIT_S: Final = 5.0  # doctor should answer promptly even when a scan holds the embedded store
BROKER_TIMEOUT_S: Final = 5.0
WATCH_SHARE: Final = 0.5  # warn when the path units would use more than this share of the inotify watches


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    name: str
    status: str
    detail: str
    required: bool = False
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_document(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "required": self.required, "detail": self.detail,
                "data": dict(self.data)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Report(Result):
    """Every check; `ok` when no required check failed (those are its problems, kind ``check``)."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_CHECK_FAILED

    def data(self) -> dict[str, Any]:
        """The `doctor --json` document's own fields."""
        return {"ok": self.ok, "checks": [check.to_document() for check in self.checks]}


def report(checks: Sequence[Check]) -> Report:
    """The report of ``checks``: a required check that failed is a problem."""
    return Report(checks=tuple(checks), problems=tuple(Problem(check.name, "check", check.detail) for check in checks
                                                       if check.required and check.status == FAIL))


def _catalog(settings: Settings) -> tuple[Check, list[Library] | None]:
    try:
        with store.connect(replace(settings, store_wait_s=min(settings.store_wait_s, STORE_WAIT_S))) as connection:
            info = connection.client.server_info()
            libraries = library_repo.all_libraries(connection.db)
    except (LibwatchError, PyMongoError) as error:
        return Check("mongodb", FAIL, str(error).splitlines()[0], True), None
    product, version = _product(info)
    return Check("mongodb", OK, f"{product} {version} ({connection.description})", True,
                 {"product": product, "version": version, "mongodb_version": info.get("version"),
                  "embedded": connection.embedded, "libraries": len(libraries)}), libraries


def _product(info: Mapping[str, Any]) -> tuple[str, str]:
    """What answers as the catalog: SecantusDB (the embedded store, also behind libwatch-store.service)
    reports the MongoDB version whose wire protocol it speaks, and its own in ``secantusVersion``."""
    if "secantusVersion" in info:
        return "SecantusDB", f"{info['secantusVersion']} (speaks MongoDB {info.get('version', '?')})"
    return "MongoDB", str(info.get("version", "?"))


def _broker(settings: Settings) -> Check:
    if not settings.amqp_url:
        return Check("rabbitmq", SKIP, "not configured: rebuilds stay pending in MongoDB "
                                       "(`libwatch rebuild --run` renders them here)")
    from libwatch import bus  # pika, only when a broker is configured
    from libwatch.services import outbox

    topology = outbox.default_topology()  # the deployment's names ($LIBWATCH_AMQP_PREFIX)
    names = topology.all_queues()
    shown = mask_url(settings.amqp_url)
    try:
        version = bus.check(settings.amqp_url, BROKER_TIMEOUT_S)
        depths = bus.queue_depths(settings.amqp_url, topology, timeout_s=BROKER_TIMEOUT_S)
    except bus.BusError as error:
        return Check("rabbitmq", FAIL, f"{shown}: {error}", True)
    waiting = ", ".join(f"{names[kind]} {count}" for kind, count in depths.items())
    status = WARN if depths.get("dead") else OK
    return Check("rabbitmq", status, f"{version} at {shown}; messages waiting in {waiting}", True,
                 {"version": version, "queues": depths, "queue_names": names, "exchange": topology.exchange})


def _cache_dir(settings: Settings) -> Check:
    folder = settings.cache_dir
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    try:
        if existing != folder:
            if not os.access(existing, os.W_OK | os.X_OK):
                raise PermissionError(f"cannot create it: {existing} is not writable")
            return Check("cache_dir", OK, f"{folder} will be created on first use", True, {"path": str(folder)})
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as error:
        return Check("cache_dir", FAIL, f"{folder} is not writable: {error.strerror or error}", True,
                     {"path": str(folder)})
    return Check("cache_dir", OK, f"{folder} is writable", True, {"path": str(folder)})


def _watches_in_use(unit_dir: Path) -> int:
    """PathChanged= lines of the installed watchers: one inotify watch each."""
    dropins = unit_dir.glob(f"libwatch-watch@*.path.d/{systemd.PATHS_DROPIN}")
    return sum(line.startswith("PathChanged=") for conf in dropins for line in conf.read_text().splitlines())


def _inotify(unit_dir: Path) -> Check:
    try:
        limits = systemd.inotify_limits()
    except OSError as error:
        return Check("inotify", SKIP, f"cannot read the inotify limits: {error}")
    used = _watches_in_use(unit_dir)
    limit = limits.get("max_user_watches", 0)
    data = {**limits, "watches_used": used}
    detail = f"max_user_watches {limit}; the installed path units use {used}"
    if used > limit * WATCH_SHARE:
        return Check("inotify", WARN, f"{detail}: raise fs.inotify.max_user_watches (sysctl)", data=data)
    return Check("inotify", OK, detail, data=data)


def _units(unit_dir: Path, libraries: Sequence[Library] | None, settings: Settings) -> Check:
    templates = [name for name in systemd.TEMPLATE_NAMES if (unit_dir / name).exists()]
    installed = systemd.installed_libraries(False, directory=unit_dir)
    data: dict[str, Any] = {"unit_dir": str(unit_dir), "templates": templates, "libraries": installed}
    if not templates:
        return Check("units", WARN, f"not installed in {unit_dir}: scans run only when started "
                                    "(`libwatch units install`)", data=data)
    problems = [f"not installed for {', '.join(unscheduled)}"
                for unscheduled in [sorted({lib.name for lib in libraries or ()} - set(installed))] if unscheduled]
    drift = _settings_drift(unit_dir, settings)
    data["settings_differ"] = drift
    if drift:
        problems.append("the shell reads other settings than the units: " + "; ".join(drift))
    detail = f"{len(templates)} units in {unit_dir}; libraries: {', '.join(installed) or 'none'}"
    return Check("units", WARN if problems else OK, "; ".join([detail, *problems]), data=data)


def _settings_drift(unit_dir: Path, settings: Settings) -> list[str]:
    """Where the settings of this shell differ from those the installed units read (their LIBWATCH_CONFIG)."""
    from libwatch import config
    from libwatch.services import units as units_service

    template = unit_dir / "libwatch-scan@.service"
    found = re.search(r"^Environment=\"?LIBWATCH_CONFIG=(.+?)\"?$", template.read_text(encoding="utf-8"), re.M) \
        if template.is_file() else None
    if found is None:
        return []
    try:
        theirs = config.load(environ={"LIBWATCH_CONFIG": found.group(1).replace("%%", "%")})
    except LibwatchError as error:
        return [str(error)]
    return units_service.settings_differences(settings, theirs)


def _roots(libraries: Sequence[Library] | None) -> Check:
    if libraries is None:
        return Check("libraries", SKIP, "the catalog could not be read")
    problems: list[str] = []
    kinds: dict[str, str] = {}
    for lib in libraries:
        if not os.path.isdir(lib.path):
            problems.append(f"{lib.name}: root {lib.path} is missing (unmounted?)")
            continue
        kinds[lib.name] = systemd.filesystem_type(lib.path)
        if kinds[lib.name] in systemd.NETWORK_FS_TYPES:
            problems.append(f"{lib.name}: {lib.path} is on {kinds[lib.name]}: path units see no changes "
                            "made by other hosts; the timer still scans it")
    problems += library_service.overlaps(libraries)
    if problems:
        return Check("libraries", WARN, "; ".join(problems), data={"filesystems": kinds})
    return Check("libraries", OK, f"{count(len(libraries), 'library')}, roots present, none on a network file system",
                 data={"filesystems": kinds})


def _holds_password(path: Path) -> bool:
    """A settings or environment file with a URL that carries a password (TOML or KEY=VALUE lines)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(has_password(word.strip("\"'")) for word in re.findall(r"[a-z][a-z0-9+.-]*://\S+", text, re.I))


def _file_mode(path: Path | None) -> int | None:
    """The permission bits of a regular file, None when it is absent or cannot be looked at."""
    try:
        info = path.stat() if path is not None else None
    except OSError:
        return None
    return stat.S_IMODE(info.st_mode) if info is not None and stat.S_ISREG(info.st_mode) else None


def _secret_files(settings: Settings) -> dict[Path, int]:
    """The files this host's settings keep a password in, with their modes: the secret files the
    settings name, the store's credentials and URI, and the settings file and the previous version's
    environment file (/etc/libwatch/libwatch.env) when they hold a URL with one."""
    from libwatch.services.units import LEGACY_ENV_FILE

    secrets = [settings.mongo_uri_file, settings.amqp_url_file, settings.store_credentials, settings.store_uri_file]
    found = {path: mode for path in secrets if path is not None and (mode := _file_mode(path)) is not None}
    for path in (settings.config_file, LEGACY_ENV_FILE):
        mode = _file_mode(path)
        if path is not None and mode is not None and _holds_password(path):
            found[path] = mode
    return found


def _secrets(settings: Settings) -> Check:
    readable = {path: mode for path, mode in _secret_files(settings).items() if mode & 0o004}
    if readable:
        return Check("secrets", WARN, "; ".join(f"{path} holds a password and every user may read it (mode "
                                                f"{mode:04o}): chmod o-rwx {path}" for path, mode in readable.items()),
                     data={"readable": [str(path) for path in readable]})
    return Check("secrets", OK, "no file holding a password is readable by other users")


def diagnose(settings: Settings, *, unit_dir: Path | None = None) -> Report:
    """Run every check; never raises for a service that is down."""
    catalog, libraries = _catalog(settings)
    units_at = unit_dir or systemd.unit_dir(os.geteuid() != 0)
    return report((catalog, _broker(settings), _cache_dir(settings), _inotify(units_at),
                   _units(units_at, libraries, settings), _roots(libraries), _secrets(settings)))
