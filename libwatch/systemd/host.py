"""What the kernel and the service manager tell a process: inotify limits, file system types, sd_notify."""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Final

# Path units cannot watch these (no inotify events for changes made by other hosts).
NETWORK_FS_TYPES: Final = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "9p", "afs", "ceph", "glusterfs",
    "lustre", "gpfs", "davfs", "sshfs", "fuse.sshfs", "fuse.glusterfs", "fuse.s3fs",
    "fuse.rclone", "fuse.davfs2", "fuse.cephfs", "fuse.gcsfuse", "virtiofs",
})


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
