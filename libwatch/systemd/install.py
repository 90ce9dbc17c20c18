"""Install, refresh and remove units on a host: write the files, tell systemd."""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from libwatch.systemd.analyze import validate_calendar
from libwatch.systemd.host import inotify_limits
from libwatch.systemd.layout import (
    LIBRARY_DROPIN,
    METRICS_DROPIN,
    PATHS_DROPIN,
    POLKIT_RULE,
    POLKIT_TEXT,
    SCHEDULE_DROPIN,
    SERVICE_USER,
    SYSTEM_CACHE_DIR,
    SYSTEM_STATE_DIR,
    SYSUSERS_FILE,
    SYSUSERS_TEXT,
    TEMPLATE_NAMES,
    WEB_UNITS,
    LibraryUnits,
    UnitContext,
    check_library_name,
    path_unit,
    timer_unit,
    unit_dir,
)
from libwatch.systemd.render import (
    DEFAULT_WATCH_CAP,
    render_all,
    render_library_dropins,
    render_metrics_dropins,
    render_templates,
    watch_paths,
)
from libwatch.systemd.sandbox import sandbox_warnings
from libwatch.systemd.systemctl import NOT_RUNNING, manager_running, run, systemctl_step

# Each PathChanged= line costs the manager one inotify instance (measured on systemd 252: a
# 200-line path unit fails with "Too many open files" under the default max_user_instances=128,
# a 100-line one holds 104). Leave this many to the manager and the user's other processes.
INOTIFY_RESERVE: Final = 40


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
        return replace(base, notice=NOT_RUNNING)
    wanted = [u for lib in libraries for u, on in ((timer_unit(lib.name), lib.enabled),
                                                    (path_unit(lib.name), lib.watch)) if on]
    wanted += ["libwatch-cleanup.timer"] + ["libwatch-worker.service"] * worker + ["libwatch-store.service"] * ctx.store
    wanted += ["libwatch-web.socket"] * web
    unwanted = [u for lib in libraries for u, on in ((timer_unit(lib.name), lib.enabled),
                                                      (path_unit(lib.name), lib.watch)) if not on]
    problems = [*systemctl_step(ctx.user, "daemon-reload")]
    if enable:
        problems += systemctl_step(ctx.user, "enable", "--now", *wanted)
    if unwanted:
        problems += systemctl_step(ctx.user, "disable", "--now", *unwanted)
    return replace(base, enabled=tuple(wanted) if enable else (), disabled=tuple(unwanted), problems=tuple(problems))


def create_service_user() -> InstallResult:
    """The ``libwatch`` system user, from a sysusers.d file (systemd-sysusers creates it).

    A fixed user rather than DynamicUser=: the admin's shell and the services share the settings
    file (group-readable) and the state, which keep one owner across restarts.
    """
    written = write_units(SYSUSERS_FILE.parent, {SYSUSERS_FILE.name: SYSUSERS_TEXT})
    sysusers = run(["systemd-sysusers", str(SYSUSERS_FILE)])
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
        return replace(base, notice=NOT_RUNNING)
    steps = systemctl_step(ctx.user, "daemon-reload")
    if ctx.store:
        steps += systemctl_step(ctx.user, "enable", "--now", "libwatch-store.service")
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
    problems = systemctl_step(user, "disable", "--now", *units) if running and units else []
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
        return InstallResult(target, removed=tuple(removed), notice=NOT_RUNNING)
    problems += systemctl_step(user, "daemon-reload")
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
        return InstallResult(target, written, warnings=rendered.warnings, notice=NOT_RUNNING)
    problems = systemctl_step(scope, "daemon-reload")
    return InstallResult(target, written, warnings=rendered.warnings, problems=tuple(problems))


def watch_budget(directory: Path, *, exclude: Iterable[str] = ()) -> int:
    """PathChanged= lines the kernel's inotify limit leaves for libraries other than ``exclude``."""
    skip = {f"{path_unit(name)}.d" for name in exclude}
    used = sum(f.read_text(encoding="utf-8").count("\nPathChanged=")
               for f in directory.glob(f"libwatch-watch@*.path.d/{PATHS_DROPIN}") if f.parent.name not in skip)
    return max(1, inotify_limits()["max_user_instances"] - INOTIFY_RESERVE - used)


def _cut_by_budget(lib: LibraryUnits, share: int, watch_cap: int) -> bool:
    """Whether the kernel's inotify budget, not the watch cap, leaves some of the library's folders unwatched."""
    return lib.watch and share < watch_cap and len(watch_paths(lib, watch_cap)[0]) > share


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
