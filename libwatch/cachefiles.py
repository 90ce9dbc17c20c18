"""The content-addressed layout of the cache folder, and atomic writes into it.

A rendered image lives at ``<cache-dir>/<kind>/<hex[0:2]>/<hex>.<ext>``, where
``<hex>`` is the hex part of the source's content hash (``xxh3-128:<hex>``).
The file name deliberately leaves out the ``xxh3-128:`` prefix: a colon is legal
on Linux but is mangled or refused on SMB/CIFS shares and by Windows clients,
and the cache folder is often exported to a viewer over exactly such a share.
The prefix is implied by the layout (one hash algorithm per cache); should the
algorithm ever change, the new one gets its own prefix in ``HASH_PREFIX`` and
the cache is rebuilt.

The cache folder is entered without following symbolic links: the kind and shard
folders are opened with ``O_NOFOLLOW | O_DIRECTORY`` below the cache root's descriptor
(``dir_fd=``) and must belong to the service user, and the root itself must not be
writable by group or others (``CacheUnsafe``, exit 65, otherwise). Only regular
``<hex>.jpg`` and ``<hex>.webp`` files count as renderings; anything else in a shard
(``<hex>.txt``, a link, a file of another owner) is neither used nor deleted.

Files are created with the ``cache_mode`` setting (default 0640: the service's group
may read them, others not), folders with the same bits plus search (0750).

Standard library only.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from libwatch.core.hashing import HASH_PREFIX
from libwatch.errors import CacheUnsafe

HASH_HEX_RE: Final = re.compile(r"[0-9a-f]{32}")
TEMP_SUFFIX: Final = ".tmp"
# A rendering set aside by a cleanup before it asks the catalog again (``set_aside``).
ASIDE_SUFFIX: Final = ".del"
# The extensions of the formats libwatch renders (imaging.FORMATS); nothing else counts as a rendering.
EXTENSIONS: Final = ("jpg", "webp")
DEFAULT_FILE_MODE: Final = 0o640
_CACHE_NAME_RE: Final = re.compile(r"([0-9a-f]{32})\.(jpg|webp)")
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def hash_hex(content_hash: str) -> str:
    """The 32 lowercase hex digits of ``xxh3-128:<hex>``; ValueError for any other form."""
    hex_part = content_hash.removeprefix(HASH_PREFIX)
    if hex_part == content_hash or not HASH_HEX_RE.fullmatch(hex_part):
        raise ValueError(f"not an {HASH_PREFIX}<32 lowercase hex> hash: {content_hash!r}")
    return hex_part


def cache_path(cache_dir: Path, kind: str, content_hash: str, ext: str) -> Path:
    """Where the ``kind`` rendering of the content ``content_hash`` is stored, as ``ext``."""
    hex_part = hash_hex(content_hash)
    return cache_dir / kind / hex_part[:2] / f"{hex_part}.{ext}"


def dir_mode(file_mode: int) -> int:
    """The mode of cache folders for files of ``file_mode``: search wherever read is allowed (0640 → 0750)."""
    return file_mode | (file_mode & 0o444) >> 2


def open_root(cache_dir: Path, file_mode: int = DEFAULT_FILE_MODE) -> int:
    """A descriptor of the cache folder, created (``dir_mode``) when missing; the caller closes it.

    The configured path may be reached through links (the admin's choice); the folder
    must belong to this user and not be writable by group or others: CacheUnsafe otherwise.
    """
    fd = _root(cache_dir, file_mode)
    assert fd is not None
    return fd


def _root(cache_dir: Path, file_mode: int | None) -> int | None:
    """``open_root``, or None when the folder is missing and ``file_mode`` is None (nothing to create)."""
    created = False
    if file_mode is not None:
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(cache_dir, dir_mode(file_mode))
            created = True
        except FileExistsError:
            pass
    try:
        fd = os.open(cache_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        if file_mode is None:
            return None
        raise
    try:
        if created:
            os.fchmod(fd, dir_mode(file_mode or DEFAULT_FILE_MODE))  # the mode asked for, whatever the umask
        _check_owned(fd, str(cache_dir))
        mode = os.fstat(fd).st_mode
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise CacheUnsafe(f"the cache folder {cache_dir} is writable by {_writers(mode)} (mode "
                              f"{stat.S_IMODE(mode):04o}); make it 0750 or 0700 (chmod go-w)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _writers(mode: int) -> str:
    return " and ".join(who for who, bit in (("its group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if mode & bit)


def _check_owned(fd: int, name: str) -> None:
    owner = os.fstat(fd).st_uid
    if owner != os.geteuid():
        raise CacheUnsafe(f"the cache folder {name} belongs to user {owner}, not to this user ({os.geteuid()})")


def _subfolder(parent: int, name: str, shown: str, file_mode: int | None) -> int | None:
    """``name`` below ``parent``, never through a link; created when ``file_mode`` is given, else None if absent."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if file_mode is None:
            return None
        try:
            os.mkdir(name, dir_mode(file_mode), dir_fd=parent)
        except FileExistsError:
            pass  # another writer made it meanwhile
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, dir_mode(file_mode))
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise CacheUnsafe(f"the cache folder {shown} is not a folder (a symbolic link or a file)") from None
        raise
    try:
        _check_owned(fd, shown)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _shard(cache_dir: Path, kind: str, hex_part: str, file_mode: int | None) -> int | None:
    """A descriptor of the shard folder of ``hex_part`` (created when ``file_mode`` is given), or None if absent."""
    root = _root(cache_dir, file_mode)
    if root is None:
        return None
    try:
        kind_fd = _subfolder(root, kind, str(cache_dir / kind), file_mode)
    finally:
        os.close(root)
    if kind_fd is None:
        return None
    try:
        return _subfolder(kind_fd, hex_part[:2], str(cache_dir / kind / hex_part[:2]), file_mode)
    finally:
        os.close(kind_fd)


def _is_rendering(shard: int, name: str) -> bool:
    try:
        st = os.stat(name, dir_fd=shard, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()


def existing(cache_dir: Path, kind: str, content_hash: str) -> Path | None:
    """The stored ``kind`` rendering of ``content_hash`` in whichever format it was written, or None.

    Only a regular ``<hex>.jpg`` or ``<hex>.webp`` of this user counts. Raises CacheUnsafe as ``open_root``.
    """
    hex_part = hash_hex(content_hash)
    try:
        shard = _shard(cache_dir, kind, hex_part, None)
    except OSError:
        return None  # unreadable counts as absent: the render that follows reports why it cannot write
    if shard is None:
        return None
    try:
        for ext in EXTENSIONS:
            if _is_rendering(shard, f"{hex_part}.{ext}"):
                return cache_path(cache_dir, kind, content_hash, ext)
        return None
    finally:
        os.close(shard)


def write_atomic(cache_dir: Path, kind: str, content_hash: str, ext: str, data: bytes, *,
                 file_mode: int = DEFAULT_FILE_MODE) -> Path:
    """Store ``data`` as the ``kind`` rendering of ``content_hash`` so readers see the old file or the new one.

    The data goes to ``.<name>.<random>.tmp`` in the shard folder (opened without
    following links, locked until renamed: see ``writer_gone``), is fsync'ed, given
    ``file_mode`` and renamed over the file; the folder is fsync'ed so the rename
    survives a power loss. The rendering of the same
    content in the other format is then removed, so ``existing`` is unambiguous. On
    any failure (ENOSPC included) the temp file is removed and the error re-raised;
    CacheUnsafe when the cache folder could be changed by others. Returns the path.
    """
    hex_part = hash_hex(content_hash)
    name = f"{hex_part}.{ext}"
    shard = _shard(cache_dir, kind, hex_part, file_mode)
    assert shard is not None
    try:
        tmp, fd = _locked_temp(shard, name, file_mode)
        try:
            with open(fd, "wb", closefd=True) as out:
                out.write(data)
                out.flush()
                os.fchmod(out.fileno(), file_mode)
                os.fsync(out.fileno())
                os.replace(tmp, name, src_dir_fd=shard, dst_dir_fd=shard)  # still locked: never taken for abandoned
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=shard)
            except FileNotFoundError:
                pass
            raise
        for other in EXTENSIONS:
            if other != ext and _is_rendering(shard, f"{hex_part}.{other}"):
                os.unlink(f"{hex_part}.{other}", dir_fd=shard)
        os.fsync(shard)
    finally:
        os.close(shard)
    return cache_path(cache_dir, kind, content_hash, ext)


def set_aside(path: Path) -> Path | None:
    """Rename a rendering to a temp name in its folder, so no reader finds it any more; None if it is gone.

    The first step of removing a rendering that nothing seemed to need: the caller asks
    the catalog again, then deletes the file set aside or puts it back (``put_back``).
    A writer that looks for the rendering meanwhile finds none and renders it anew.
    """
    aside = path.with_name(f".{path.name}.{secrets.token_hex(6)}{ASIDE_SUFFIX}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return None
    os.utime(aside)  # a fresh temp file: another cleanup's sweep of abandoned ones leaves it alone
    return aside


def put_back(aside: Path, path: Path) -> None:
    """Undo ``set_aside``; a rendering written at ``path`` meanwhile (the same content) is kept instead."""
    try:
        os.link(aside, path)  # link, not rename: never replaces a file that is there now
    except FileExistsError:
        pass
    os.unlink(aside)


def _locked_temp(shard: int, name: str, file_mode: int) -> tuple[str, int]:
    """A new temp file for ``name`` in the shard, locked (``flock``) for as long as it is open.

    The lock tells a cleanup that its writer lives (``writer_gone``). A cleanup that probed
    the file in the instant between its creation and the lock may have removed it: then
    another one is made.
    """
    while True:
        tmp = f".{name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode,
                     dir_fd=shard)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                os.close(fd)
                raise
            return tmp, fd  # a filesystem without locks: cleanup goes by the file's age there
        if os.fstat(fd).st_nlink > 0:
            return tmp, fd
        os.close(fd)


def writer_gone(path: Path) -> bool | None:
    """Whether the process writing the temp file ``path`` is gone (its lock is free); None if unknown.

    Unknown: the file vanished, or its filesystem has no locks.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    finally:
        os.close(fd)
    return True


def iter_cache_files(cache_dir: Path) -> Iterator[tuple[str, str, Path]]:
    """Every stored rendering as ``(kind, content_hash, path)``; temp files, strangers and others' files left out."""
    for kind_dir in _subdirs(cache_dir):
        for shard in _subdirs(kind_dir):
            for entry in sorted(os.scandir(shard), key=lambda e: e.name):
                match = _CACHE_NAME_RE.fullmatch(entry.name)
                if match and match[1].startswith(shard.name) and _own_file(entry):
                    yield kind_dir.name, HASH_PREFIX + match[1], Path(entry.path)


def iter_temp_files(cache_dir: Path) -> Iterator[Path]:
    """Temp files (of writers, and renderings set aside by a cleanup), live or left by a process that was killed."""
    for kind_dir in _subdirs(cache_dir):
        for shard in _subdirs(kind_dir):
            for entry in sorted(os.scandir(shard), key=lambda e: e.name):
                if entry.name.startswith(".") and entry.name.endswith((TEMP_SUFFIX, ASIDE_SUFFIX)) and _own_file(entry):
                    yield Path(entry.path)


def _own_file(entry: os.DirEntry[str]) -> bool:
    return entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_uid == os.geteuid()


def _subdirs(folder: Path) -> list[Path]:
    """The folders in ``folder`` that belong to this user (a link or another user's folder is never entered)."""
    if not folder.is_dir():
        return []
    return sorted(
        Path(e.path)
        for e in os.scandir(folder)
        if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
        and e.stat(follow_symlinks=False).st_uid == os.geteuid()
    )
