"""systemd integration: render, install and inspect libwatch's units.

One module an idea: ``layout`` (where units and state live, unit names), ``render`` (unit files
from templates, pure), ``sandbox`` (the services' sandbox and what it hides), ``analyze``
(``systemd-analyze``), ``systemctl`` (the one runner of systemd's commands, timer states),
``install`` (write units, tell systemd) and ``host`` (inotify limits, file system types,
sd_notify). The names callers use are re-exported here.
"""
from __future__ import annotations

from libwatch.systemd.analyze import security_exposure, validate_calendar, verify
from libwatch.systemd.host import NETWORK_FS_TYPES, filesystem_type, inotify_limits, is_network_fs, notify_ready
from libwatch.systemd.install import (
    INOTIFY_RESERVE,
    InstallResult,
    create_service_user,
    install,
    installed_libraries,
    prepare_host,
    refresh_watch,
    uninstall,
    watch_budget,
    write_units,
)
from libwatch.systemd.layout import (
    DEFAULT_SETTLE,
    METRICS_DROPIN,
    PATHS_DROPIN,
    POLKIT_TEXT,
    SERVICE_USER,
    STORE_PORT,
    SYSTEM_CACHE_DIR,
    SYSTEM_CONFIG_FILE,
    SYSTEM_STATE_DIR,
    SYSUSERS_FILE,
    SYSUSERS_TEXT,
    TEMPLATE_NAMES,
    WEB_UNITS,
    LibraryUnits,
    UnitContext,
    find_executable,
    library_units,
    path_unit,
    timer_unit,
    unit_dir,
)
from libwatch.systemd.render import (
    DEFAULT_WATCH_CAP,
    Rendered,
    render_all,
    render_library_dropins,
    render_templates,
    render_worker_dropin,
)
from libwatch.systemd.sandbox import SANDBOX, sandbox_warnings
from libwatch.systemd.systemctl import NextRun, manager_running, start_unit, timers_status

__all__ = [
    "DEFAULT_SETTLE", "DEFAULT_WATCH_CAP", "INOTIFY_RESERVE", "METRICS_DROPIN", "NETWORK_FS_TYPES", "PATHS_DROPIN",
    "POLKIT_TEXT", "SANDBOX", "SERVICE_USER", "STORE_PORT", "SYSTEM_CACHE_DIR", "SYSTEM_CONFIG_FILE",
    "SYSTEM_STATE_DIR", "SYSUSERS_FILE", "SYSUSERS_TEXT", "TEMPLATE_NAMES", "WEB_UNITS", "InstallResult",
    "LibraryUnits", "NextRun", "Rendered", "UnitContext", "create_service_user", "filesystem_type", "find_executable",
    "inotify_limits", "install", "installed_libraries", "is_network_fs", "library_units", "manager_running",
    "notify_ready", "path_unit", "prepare_host", "refresh_watch", "render_all", "render_library_dropins",
    "render_templates", "render_worker_dropin", "sandbox_warnings", "security_exposure", "start_unit",
    "timer_unit", "timers_status", "uninstall", "unit_dir", "validate_calendar", "verify", "watch_budget",
    "write_units",
]
