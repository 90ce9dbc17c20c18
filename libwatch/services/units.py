"""The systemd units of the libraries in the catalog: the glue between the catalog, the settings and `systemd.py`.

One configuration per host: `units install` writes the settings the units read
(`/etc/libwatch/config.toml`, or `~/.config/libwatch/config.toml` for `--user`), which is the
file `libwatch` in an admin's shell reads too, so a library added from the shell is the one
the timer scans.
"""
from __future__ import annotations

import contextlib
import difflib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final

from pymongo.database import Database

from libwatch import config, systemd
from libwatch.catalog import files as catalog_files
from libwatch.catalog import libraries as repo
from libwatch.catalog import store
from libwatch.catalog.schema import ensure_schema
from libwatch.config import Settings, mask_url
from libwatch.errors import UsageError
from libwatch.library import Library
from libwatch.result import Problem, Result

Db = Database[dict[str, Any]]
# What the previous version wrote for the store service, which had no password then.
UNAUTHENTICATED_STORE_URI: Final = f"mongodb://127.0.0.1:{systemd.STORE_PORT}/"
# Before this version the units read their settings from this file, which the shell never read.
LEGACY_ENV_FILE: Final = Path("/etc/libwatch/libwatch.env")
_CONFIG_HEADER: Final = (
    "# The settings of libwatch on this host, written by `libwatch units install`.\n"
    "# Every libwatch unit reads this file (LIBWATCH_CONFIG), and so does libwatch in an admin's shell:\n"
    "# edit it, then run `libwatch units install` again so the units' sandbox follows the folders.\n")


@dataclass(frozen=True, slots=True)
class Plan:
    """What an install would write: the host's settings file and the units, and what the admin should know."""

    ctx: systemd.UnitContext
    settings: Settings  # what the units will read
    config_file: Path
    config_text: str
    installed_text: str | None  # the settings file as it is now (None: absent)
    warnings: tuple[str, ...]

    @property
    def config_changes(self) -> bool:
        return self.installed_text is not None and self.installed_text != self.config_text


def units_of(db: Db, library: Library) -> systemd.LibraryUnits:
    """A library as its units see it: schedule, watch flag and the collection folders to watch."""
    folders = sorted(path for path, doc in catalog_files.collection_documents(db, library.name).items()
                     if doc.get("missing_since") is None and path)
    return systemd.LibraryUnits(name=library.name, root=library.path, on_calendar=library.on_calendar,
                                watch=library.watch, watch_dirs=tuple(folders), enabled=library.enabled)


def _selected(db: Db, names: list[str]) -> list[Library]:
    return [repo.get(db, name) for name in names] if names else repo.all_libraries(db)


# ---------------------------------------------------------------- the host's settings

def host_settings(shell: Settings, *, user: bool) -> Settings:
    """The settings the units get: the shell's, with the units' folders where the shell has per-user defaults.

    Without a mongo_uri the units share the embedded store through libwatch-store.service. Settings
    of the previous version's environment file (/etc/libwatch/libwatch.env) fill what the shell left
    at its defaults, so an upgrade keeps the deployment's catalog and broker.
    """
    defaults = Settings()
    settings = shell
    if not user:
        legacy = _legacy_settings()
        settings = replace(settings, **{f.name: getattr(legacy, f.name) for f in fields(Settings)
                                        if f.name != "config_file"
                                        and getattr(settings, f.name) == getattr(defaults, f.name)
                                        and getattr(legacy, f.name) != getattr(defaults, f.name)})
        if settings.home == defaults.home:
            settings = replace(settings, home=Path(systemd.SYSTEM_STATE_DIR))
        if settings.cache_dir == defaults.cache_dir:
            settings = replace(settings, cache_dir=Path(systemd.SYSTEM_CACHE_DIR))
    if settings.mongo_uri in (None, UNAUTHENTICATED_STORE_URI) and settings.mongo_uri_file is None:
        # The store service writes its URI, with its password, there at its first start (0600, the
        # services' user's; root reads it too): no password in the settings file.
        settings = replace(settings, mongo_uri=None, mongo_uri_file=settings.store_uri_file)
    return replace(settings, config_file=None)


def uses_store(settings: Settings) -> bool:
    """True when the settings point at the store service of their own state folder."""
    return settings.mongo_uri_file == settings.store_uri_file


def _legacy_settings() -> Settings:
    """The LIBWATCH_* lines of the previous version's environment file, as settings (defaults if absent)."""
    try:
        lines = LEGACY_ENV_FILE.read_text(encoding="utf-8").splitlines()
    except OSError:
        return Settings()
    values = dict(line.strip().partition("=")[::2] for line in lines
                  if "=" in line and not line.lstrip().startswith("#"))
    return config.load(environ={**{k.strip(): v.strip().strip('"') for k, v in values.items()},
                                "LIBWATCH_CONFIG": os.devnull})


def config_text(settings: Settings) -> str:
    """The TOML settings file: every setting that differs from the defaults, and the folders always."""
    defaults = Settings()
    lines = [_CONFIG_HEADER]
    from_files = {key for file_key, key in config.SECRET_FILES.items() if getattr(settings, file_key) is not None}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if f.name == "config_file" or value is None or f.name in from_files:
            continue
        if f.name in ("home", "cache_dir", "mongo_uri", "mongo_uri_file") or value != getattr(defaults, f.name):
            lines.append(f"{f.name} = {_toml_value(value)}\n")
    return "".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # A JSON string is a TOML basic string (both escape '"', '\\' and control characters alike).
    return json.dumps(str(value), ensure_ascii=False)


def settings_differences(shell: Settings, units: Settings) -> list[str]:
    """One line per setting the shell reads differently from the units (URIs masked)."""
    lines = []
    # A secret read from the same file is the same setting (the units' copy may be unread yet).
    same_file = {key for file_key, key in config.SECRET_FILES.items()
                 if getattr(units, file_key) is not None and getattr(shell, file_key) == getattr(units, file_key)}
    for f in fields(Settings):
        mine, theirs = getattr(shell, f.name), getattr(units, f.name)
        if f.name != "config_file" and f.name not in same_file and mine != theirs:
            lines.append(f"{f.name}: the shell has {_shown(mine)}, the units {_shown(theirs)}")
    return lines


def _shown(value: object) -> str:
    return "unset" if value is None else repr(mask_url(value) if isinstance(value, str) else str(value))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def plan(shell: Settings, *, user: bool) -> Plan:
    """The settings file and unit context an install would write, and the warnings about them."""
    settings = host_settings(shell, user=user)
    ctx = systemd.UnitContext.for_host(user=user, state_dir=str(settings.home), cache_dir=str(settings.cache_dir),
                                       store=uses_store(settings))
    path = Path(ctx.config_file)
    text, installed = config_text(settings), _read(path)
    units = _loaded(text)
    # The units read the installed file until it is replaced: that is what the shell must agree with.
    differences = settings_differences(shell, units if installed is None else _loaded(installed))
    warnings = [f"the shell's settings differ from the units' ({path}): {line}" for line in differences]
    if differences and shell.config_file != path:
        warnings.append(f"the shell reads {shell.config_file or 'no settings file'}, the units {path}: "
                        f"set LIBWATCH_CONFIG={path} or remove the other file")
    if not user and LEGACY_ENV_FILE.exists():
        warnings.append(f"{LEGACY_ENV_FILE} is no longer read by the units: its settings are in {path}; remove it")
    return Plan(ctx, units, path, text, installed, tuple(warnings))


def _loaded(text: str) -> Settings:
    """``text`` read as a settings file is read (with no environment), for comparing with the shell."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", encoding="utf-8") as draft:
        draft.write(text)
        draft.flush()
        return config.load(environ={"LIBWATCH_CONFIG": draft.name}, secrets=False)


def write_config(draft: Plan) -> bool:
    """Write the settings file: 0640, group of the service user (it may hold URIs with passwords)."""
    if draft.installed_text == draft.config_text:
        return False
    draft.config_file.parent.mkdir(parents=True, exist_ok=True)
    written = systemd.write_units(draft.config_file.parent, {draft.config_file.name: draft.config_text})
    os.chmod(draft.config_file, 0o640)
    if not draft.ctx.user:
        import grp

        try:
            os.chown(draft.config_file, 0, grp.getgrnam(systemd.SERVICE_USER).gr_gid)
        except KeyError:
            pass  # no service user (yet): systemd-sysusers failed and said so
    return bool(written)


def diff_text(old: str | None, new: str, name: str) -> str:
    """A unified diff of a file as installed (None: absent) and as it would be written."""
    return "".join(difflib.unified_diff((old or "").splitlines(keepends=True), new.splitlines(keepends=True),
                                        f"{name} (installed)" if old is not None else "/dev/null", f"{name} (new)"))


# ---------------------------------------------------------------- render, install, refresh

def render(db: Db, shell: Settings, names: list[str], output: Path, *, user: bool) -> systemd.InstallResult:
    """Write the units and the settings file for the named libraries (all when none) into `output`.

    Touches neither systemd nor the installed settings; warns where the shell and the units differ.
    """
    draft = plan(shell, user=user)
    libraries = [units_of(db, lib) for lib in _selected(db, names)]
    rendered = systemd.render_all(draft.ctx, libraries, roots=[lib.path for lib in repo.all_libraries(db)])
    files = {**rendered.files, Path(draft.ctx.config_file).name: draft.config_text}
    written = systemd.write_units(output, files)
    warnings = (*rendered.warnings, *systemd.sandbox_warnings(draft.ctx, libraries), *draft.warnings)
    return systemd.InstallResult(output, written, warnings=warnings)


@dataclass(frozen=True, slots=True, kw_only=True)
class DryRun(Result):
    """`units install --dry-run`: every file it would write, and a diff against what is installed."""

    files: Mapping[str, str]  # absolute path -> text
    diff: str
    warnings: tuple[str, ...]

    def data(self) -> dict[str, Any]:
        return {"files": dict(self.files), "diff": self.diff, "warnings": list(self.warnings)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Changed(Result):
    """What `units render|install|uninstall|refresh` did (``done``); each line systemd refused is a
    problem (kind ``systemd``), and the exit code is then 3: some units could not be enabled."""

    done: systemd.InstallResult

    def data(self) -> dict[str, Any]:
        done = self.done
        return {"unit_dir": str(done.unit_dir), "written": [str(p) for p in done.written],
                "removed": [str(p) for p in done.removed], "enabled": list(done.enabled),
                "disabled": list(done.disabled), "warnings": list(done.warnings), "notice": done.notice}


def changed(done: systemd.InstallResult) -> Changed:
    """The result of an install, uninstall, refresh or render."""
    return Changed(done=done, problems=tuple(Problem(str(done.unit_dir), "systemd", line) for line in done.problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitsStatus(Result):
    """`units status`: each library, whether its units are installed, its timer and watcher."""

    unit_dir: Path
    libraries: tuple[dict[str, Any], ...]

    def data(self) -> dict[str, Any]:
        return {"unit_dir": str(self.unit_dir), "libraries": list(self.libraries)}


def status(db: Db, *, user: bool) -> UnitsStatus:
    """Every library's units as systemd sees them (``units status``)."""
    names = [lib.name for lib in repo.all_libraries(db)]
    installed = set(systemd.installed_libraries(user))
    states = systemd.timers_status(names, user=user)
    return UnitsStatus(unit_dir=systemd.unit_dir(user), libraries=tuple(
        {"library": n, "installed": n in installed, "timer": states[n].state, "watch": states[n].watch,
         "next_run": states[n].next_run, "last_run": states[n].last_run} for n in names))


def dry_run(db: Db, shell: Settings, names: list[str], *, user: bool) -> DryRun:
    """What `install` would write, changing nothing."""
    draft = plan(shell, user=user)
    libraries = [units_of(db, lib) for lib in _selected(db, names)]
    rendered = systemd.render_all(draft.ctx, libraries, roots=[lib.path for lib in repo.all_libraries(db)])
    target = systemd.unit_dir(user)
    files = {str(draft.config_file): draft.config_text,
             **{str(target / rel): text for rel, text in rendered.files.items()}}
    if not user:
        files[str(systemd.SYSUSERS_FILE)] = systemd.SYSUSERS_TEXT
    diff = "".join(diff_text(_read(Path(path)), text, path) for path, text in sorted(files.items()))
    return DryRun(files=files, diff=diff,
                  warnings=(*rendered.warnings, *systemd.sandbox_warnings(draft.ctx, libraries), *draft.warnings))


def install(shell: Settings, names: list[str], *, user: bool, enable: bool, worker: bool,
            force: bool, web: bool = False, metrics_textfile: Path | None = None) -> systemd.InstallResult:
    """Write the host's settings, the service user, the store (when used) and the units; enable them.

    The libraries are read from the catalog the units will use (through the store service when
    there is no MongoDB), after the store is up. Refuses to replace a settings file that says
    something else unless ``force``.
    """
    draft = plan(shell, user=user)
    if draft.config_changes and not force:
        raise UsageError(f"{draft.config_file} holds other settings; see them with `libwatch units install "
                         f"--dry-run`, or replace them with --force:\n"
                         f"{diff_text(draft.installed_text, draft.config_text, str(draft.config_file))}")
    account = systemd.create_service_user() if not user else systemd.InstallResult(draft.config_file.parent)
    wrote_config = write_config(draft)
    prepared = systemd.prepare_host(draft.ctx)
    prepared = replace(prepared, written=(*account.written, *prepared.written),
                       problems=(*account.problems, *prepared.problems))
    # Without a running systemd the store service did not start: the shell's catalog is all there is.
    # The settings as the units read them, now that the store (when used) is up: what they point at
    # (the store's URI file) exists only from its first start.
    with _catalog(shell if prepared.notice and draft.ctx.store
                  else config.load(environ={"LIBWATCH_CONFIG": str(draft.config_file)})) as db:
        libraries = [units_of(db, lib) for lib in _selected(db, names)]
        roots = [lib.path for lib in repo.all_libraries(db)]
    result = systemd.install(draft.ctx, libraries, enable=enable, worker=worker, roots=roots, web=web,
                             metrics_textfile=None if metrics_textfile is None else str(metrics_textfile))
    return replace(result,
                   written=(*((draft.config_file,) if wrote_config else ()), *prepared.written, *result.written),
                   warnings=(*draft.warnings, *result.warnings), problems=(*prepared.problems, *result.problems))


@contextlib.contextmanager
def _catalog(settings: Settings) -> Iterator[Db]:
    with store.connect(settings) as connection:
        ensure_schema(connection.db)
        yield connection.db


def refresh(db: Db, shell: Settings, name: str) -> systemd.InstallResult:
    """`units refresh NAME`: rewrite the library's watch list (run by its scan units with privileges)."""
    library = repo.get(db, name)
    return systemd.refresh_watch(units_of(db, library), user=False)


def validate_schedule(expression: str) -> str:
    """The calendar expression if systemd accepts it (checked with `systemd-analyze calendar`).

    Raises CalendarError (exit 2) when it does not, SystemdError (exit 69) without systemd-analyze.
    """
    systemd.validate_calendar(expression)
    return expression


def refresh_watch(db: Db, library: Library) -> systemd.InstallResult:
    """Rewrite an installed watcher's folder list after a scan found new or vanished folders."""
    return systemd.refresh_watch(units_of(db, library))


def sync_installed(db: Db, settings: Settings, library: Library) -> list[systemd.InstallResult]:
    """After `library set`: rewrite the drop-ins of an installed library and (dis)enable its units."""
    roots = [lib.path for lib in repo.all_libraries(db)]
    return [systemd.install(plan(settings, user=user).ctx, [units_of(db, library)], roots=roots)
            for user in (False, True) if library.name in systemd.installed_libraries(user)]
