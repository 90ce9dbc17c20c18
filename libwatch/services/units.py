"""The systemd units of the libraries in the catalog: the glue between the catalog and `systemd.py`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pymongo.database import Database

from libwatch import systemd
from libwatch.catalog import files as catalog_files
from libwatch.catalog import libraries as repo
from libwatch.config import Settings
from libwatch.library import Library

Db = Database[dict[str, Any]]


def units_of(db: Db, library: Library) -> systemd.LibraryUnits:
    """A library as its units see it: schedule, watch flag and the collection folders to watch."""
    folders = sorted(path for path, doc in catalog_files.collection_documents(db, library.name).items()
                     if doc.get("missing_since") is None and path)
    return systemd.LibraryUnits(name=library.name, root=library.path, on_calendar=library.on_calendar,
                                watch=library.watch, watch_dirs=tuple(folders), enabled=library.enabled)


def _selected(db: Db, names: list[str]) -> list[Library]:
    return [repo.get(db, name) for name in names] if names else repo.all_libraries(db)


def context_for(settings: Settings, *, user: bool) -> systemd.UnitContext:
    """Units for this host; a user install keeps this configuration's state and cache folders."""
    if user:
        return systemd.UnitContext.for_host(user=True, state_dir=str(settings.home), cache_dir=str(settings.cache_dir))
    return systemd.UnitContext.for_host()


def render(db: Db, settings: Settings, names: list[str], output: Path, *, user: bool) -> systemd.InstallResult:
    """Write the units for the named libraries (all when none) into `output`, without touching systemd."""
    rendered = systemd.render_all(context_for(settings, user=user), [units_of(db, lib) for lib in _selected(db, names)])
    written = systemd.write_units(output, rendered.files)
    return systemd.InstallResult(output, written, warnings=rendered.warnings)


def install(db: Db, settings: Settings, names: list[str], *, user: bool, enable: bool, worker: bool,
            store: bool) -> systemd.InstallResult:
    return systemd.install(context_for(settings, user=user), [units_of(db, lib) for lib in _selected(db, names)],
                           enable=enable, worker=worker, store=store)


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
    return [systemd.install(context_for(settings, user=user), [units_of(db, library)])
            for user in (False, True) if library.name in systemd.installed_libraries(user)]
