"""The system services' sandbox: its directives, and what it hides from them."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from libwatch.systemd.layout import SERVICE_USER, LibraryUnits, UnitContext

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


def hidden_by_sandbox(path: str) -> str | None:
    """The directive that hides ``path`` from the system services, or None when they see it."""
    for prefix, directive in HIDDEN:
        if path == prefix or path.startswith(prefix + "/"):
            return directive
    return None


def under_home(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in HOME_PREFIXES)
