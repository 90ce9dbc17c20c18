"""The content-addressed layout of the cache folder, and atomic writes into it.

A rendered image lives at ``<cache-dir>/<kind>/<hex[0:2]>/<hex>.<ext>``, where
``<hex>`` is the hex part of the source's content hash (``xxh3-128:<hex>``).
The file name deliberately leaves out the ``xxh3-128:`` prefix: a colon is legal
on Linux but is mangled or refused on SMB/CIFS shares and by Windows clients,
and the cache folder is often exported to a viewer over exactly such a share.
The prefix is implied by the layout (one hash algorithm per cache); should the
algorithm ever change, the new one gets its own prefix in ``HASH_PREFIX`` and
the cache is rebuilt.

Standard library only.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from libwatch.core.hashing import HASH_PREFIX

HASH_HEX_RE: Final = re.compile(r"[0-9a-f]{32}")
TEMP_SUFFIX: Final = ".tmp"
_CACHE_NAME_RE: Final = re.compile(r"([0-9a-f]{32})\.([A-Za-z0-9]+)")


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


def existing(cache_dir: Path, kind: str, content_hash: str) -> Path | None:
    """The stored ``kind`` rendering of ``content_hash`` in whichever format it was written, or None."""
    hex_part = hash_hex(content_hash)
    shard = cache_dir / kind / hex_part[:2]
    # Temp files start with "." so the pattern never matches a half-written file.
    return next(iter(sorted(shard.glob(f"{hex_part}.*"))), None)


def discard_other_formats(path: Path) -> None:
    """Remove the renderings of the same content in other formats, so ``existing`` is unambiguous."""
    for sibling in path.parent.glob(f"{path.stem}.*"):
        if sibling != path:
            sibling.unlink(missing_ok=True)


def write_atomic(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` so that readers see the old file or the whole new one, never a part.

    The data goes to ``.<name>.<random>.tmp`` in the same folder, is fsync'ed and
    renamed over ``dest``; the folder is fsync'ed so the rename survives a power
    loss. On any failure (ENOSPC included) the temp file is removed and the error
    re-raised. Files are created with mode 0666 minus the umask, so a viewer
    running as another user can read them.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with open(fd, "wb", closefd=True) as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_cache_files(cache_dir: Path) -> Iterator[tuple[str, str, Path]]:
    """Every stored rendering as ``(kind, content_hash, path)``; temp files and strangers are left out."""
    for kind_dir in _subdirs(cache_dir):
        for shard in _subdirs(kind_dir):
            for entry in sorted(os.scandir(shard), key=lambda e: e.name):
                match = _CACHE_NAME_RE.fullmatch(entry.name)
                if match and match[1].startswith(shard.name) and entry.is_file(follow_symlinks=False):
                    yield kind_dir.name, HASH_PREFIX + match[1], Path(entry.path)


def iter_temp_files(cache_dir: Path) -> Iterator[Path]:
    """Temp files left by a writer that was killed (SIGKILL, power loss) before it could clean up."""
    for kind_dir in _subdirs(cache_dir):
        for shard in _subdirs(kind_dir):
            yield from sorted(p for p in shard.glob(f".*{TEMP_SUFFIX}") if p.is_file())


def _subdirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        Path(e.path)
        for e in os.scandir(folder)
        if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
    )
