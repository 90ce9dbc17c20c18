"""The state folder (`$LIBWATCH_HOME`): the catalog's files, the store's credentials, the stat
indexes and the lock are its owner's alone (0700 folders, 0600 files), whatever the umask.

Under systemd the folder is the services' `StateDirectory=` (0750, group libwatch): group
bits an admin or a unit gave are kept; only the bits for everybody else are taken away.
"""
from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import BinaryIO, Final

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
# Who holds the embedded store, as its lock file says: `libwatch COMMAND`, set by the CLI.
# Never argv, which may hold a URI with its password.
COMMAND = "libwatch"


def private_dir(path: Path) -> Path:
    """Create `path` and its missing parents 0700; an existing one of ours loses the others' bits."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, DIR_MODE)
    _close_to_others(path)
    return path


def _close_to_others(path: Path) -> None:
    info = os.stat(path)
    if info.st_uid == os.geteuid() and info.st_mode & 0o007:
        os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o007)


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> BinaryIO:
    """`path` opened for binary writing, created 0600 (an existing file of ours is made 0600)."""
    fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, "wb" if not flags & os.O_APPEND else "ab")
    except BaseException:
        os.close(fd)
        raise


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically (a 0600 temp file renamed over it), synced."""
    private_dir(path.parent)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open_private(temp) as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
