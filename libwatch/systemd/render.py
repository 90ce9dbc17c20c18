"""Unit files from templates (``libwatch/units``) and a library's settings: pure text in, text out."""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from libwatch.errors import CalendarError, UnitError
from libwatch.systemd.layout import (
    CONTROL,
    LIBRARY_DROPIN,
    METRICS_DROPIN,
    PATHS_DROPIN,
    SCHEDULE_DROPIN,
    SERVICE_USER,
    STORE_PORT,
    SYSTEM_CACHE_DIR,
    SYSTEM_CONFIG_FILE,
    SYSTEM_STATE_DIR,
    TEMPLATE_NAMES,
    LibraryUnits,
    UnitContext,
    check_library_name,
    path_unit,
    timer_unit,
)
from libwatch.systemd.sandbox import SANDBOX, under_home

DEFAULT_WATCH_CAP: Final = 200
_NEEDS_QUOTES: Final = re.compile(r"[\s\"'\\;]")
_HEADER: Final = "# Written by libwatch from the library's settings; `libwatch units install` rewrites it.\n"


@dataclass(frozen=True, slots=True)
class Rendered:
    """Unit files by path relative to the unit directory, and what the user should know."""

    files: Mapping[str, str]
    warnings: tuple[str, ...] = ()


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
    if CONTROL.search(lib.on_calendar) or not lib.on_calendar.strip():
        raise CalendarError(lib.on_calendar, "empty or contains control characters")
    files = {f"{timer_unit(lib.name)}.d/{SCHEDULE_DROPIN}":
             f"{_HEADER}[Timer]\nOnCalendar=\nOnCalendar={_specifier_escape(lib.on_calendar.strip())}\n"}
    if not user:
        service = f"{_HEADER}[Service]\n{_read_only([lib.root])}"
        files.update({f"{unit}.d/{LIBRARY_DROPIN}": service
                      for unit in (f"libwatch-scan@{lib.name}.service", f"libwatch-watch@{lib.name}.service")})
    if not lib.watch:
        return Rendered(files)
    paths, warnings = watch_paths(lib, watch_cap)
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
    paths = sorted({absolute(root) for root in roots})
    lines = "ReadOnlyPaths=" + " ".join(quote(f"-{path}") for path in paths) + "\n"
    if any(under_home(path) for path in paths):
        lines += "ProtectHome=read-only\n"
    return lines


def render_metrics_dropins(ctx: UnitContext, folder: str) -> dict[str, str]:
    """Drop-ins that write the metrics for node_exporter into ``folder`` after every scan, failed or not.

    Both the step (``-``) and the folder (``-``) are optional: a missing or full folder never fails a scan.
    """
    directory = absolute(folder)
    command = f"{quote(absolute(ctx.executable), exec_line=True)} metrics --textfile {quote(directory, exec_line=True)}"
    writable = "" if ctx.user else f"ReadWritePaths=-{quote(directory)}\n"
    step = f"{_HEADER}[Service]\nExecStopPost=-{command}\n{writable}"
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


def _template_fields(ctx: UnitContext) -> dict[str, str]:
    state, cache, config = absolute(ctx.state_dir), absolute(ctx.cache_dir), absolute(ctx.config_file)
    store = " libwatch-store.service" if ctx.store else ""
    fields = {
        "LIBWATCH": quote(absolute(ctx.executable), exec_line=True),
        "SETTLE": f"{ctx.settle:g}",
        "CONFIG": quote(f"LIBWATCH_CONFIG={config}"),
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
        "REFRESH": f"ExecStartPost=+{quote(absolute(ctx.executable), exec_line=True)} units refresh %i",
        "DEPENDENCIES": f"Wants=network-online.target{store}\nAfter=network-online.target libwatch-store.service",
    }


def _writable(directive: str, path: str, default: str) -> str:
    name = default.rsplit("/", 1)[1]
    if path == default:
        return f"{directive}={name}\n{directive}Mode=0750"
    return f"ReadWritePaths={quote(path)}"


def watch_paths(lib: LibraryUnits, cap: int) -> tuple[list[str], list[str]]:
    """The root first, then shallow folders before deep ones: a watched parent sees new subfolders."""
    root = absolute(lib.root)
    warnings: list[str] = []
    candidates: set[str] = {root}
    for rel in lib.watch_dirs:
        path = os.path.normpath(os.path.join(root, rel)) if rel else root
        if CONTROL.search(path) or path != path.strip() or not Path(path).is_relative_to(root):
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


def absolute(path: str) -> str:
    if CONTROL.search(path) or not os.path.isabs(path):
        raise UnitError(f"{path!r} must be an absolute path without control characters")
    return os.path.normpath(path)


def _specifier_escape(text: str) -> str:
    return text.replace("%", "%%")


def quote(word: str, *, exec_line: bool = False, specifiers: bool = True) -> str:
    """One word of a unit setting, escaped for specifiers ('%') and, on Exec lines, variables ('$')."""
    if specifiers:
        word = _specifier_escape(word)
    if exec_line:
        word = word.replace("$", "$$")
    if not _NEEDS_QUOTES.search(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
