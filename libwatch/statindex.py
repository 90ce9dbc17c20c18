"""A local stat index: the catalog's present records for one library, on local disk.

Reading 200,000 records from the embedded store takes about 10 s; reading them from
this file takes a fraction of a second, which is what lets a no-change rescan run at
the speed of the disk walk. The catalog stays the truth: the index carries the
library's catalog `generation` (bumped by every scan that writes), and a scan uses it
only when the generations agree; any mismatch falls back to a full catalog read.
Like git's index and DVC's state, entries carry a format version, so a format change
forces a rebuild instead of a misread.
"""
from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import marshal
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from libwatch.core.diff import Record

FORMAT: Final = 2
_CHUNK: Final = 8192
# Chunks are framed with their length and decoded with marshal.loads: marshal.load on a
# file object reads item by item and was 12x slower (0.125 s against 0.011 s for 20,000 records).
_LENGTH: Final = struct.Struct("<I")


def index_path(home: Path, catalog_identity: str, library: str) -> Path:
    """Where the index of `library` in the catalog named by `catalog_identity` lives."""
    digest = hashlib.sha256(catalog_identity.encode()).hexdigest()[:16]
    return home / "index" / digest / f"{library}.idx"


def _header(library: str, generation: int, root: str) -> dict[str, Any]:
    return {"format": FORMAT, "library": library, "generation": generation, "root": root}


def read(path: Path, *, library: str, generation: int, root: str) -> Iterator[Record] | None:
    """The records if the index matches this library state exactly, else None."""
    try:
        stream = path.open("rb")
    except OSError:
        return None
    try:
        header = json.loads(stream.readline())
    except ValueError:
        stream.close()
        return None
    if header != _header(library, generation, root):
        stream.close()
        return None
    return _records(stream)


def _record(fields: tuple[Any, ...]) -> Record:
    return _new_record(Record, (*fields, None))


_new_record: Final = tuple.__new__


def _records(stream: Any) -> Iterator[Record]:
    with stream:
        while head := stream.read(_LENGTH.size):
            (length,) = _LENGTH.unpack(head)
            yield from map(_record, marshal.loads(stream.read(length)))


def _dump(chunk: list[tuple[Any, ...]], stream: Any) -> None:
    blob = marshal.dumps(chunk)
    stream.write(_LENGTH.pack(len(blob)))
    stream.write(blob)


def write(path: Path, records: Iterable[Record], *, library: str, generation: int, root: str) -> None:
    """Write the index atomically (temp file + rename); records must be in path order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temp.open("wb") as stream:
            stream.write(json.dumps(_header(library, generation, root)).encode() + b"\n")
            chunk: list[tuple[Any, ...]] = []
            for r in records:
                chunk.append((r.path, r.size, r.mtime_ns, r.ctime_ns, r.inode, r.hash, r.racy))
                if len(chunk) == _CHUNK:
                    _dump(chunk, stream)
                    chunk = []
            if chunk:
                _dump(chunk, stream)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class Spool:
    """Collects the records a scan leaves as they are, in path order, on disk (not in memory).

    After the scan's writes, `commit` merges them with the records the scan wrote into
    the new index for the library's new generation.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._temp = path.with_name(f".{path.name}.{os.getpid()}.spool")
        self._stream = self._temp.open("wb")
        self._chunk: list[tuple[Any, ...]] = []

    def add(self, r: Record) -> None:
        self._chunk.append((r.path, r.size, r.mtime_ns, r.ctime_ns, r.inode, r.hash, r.racy))
        if len(self._chunk) == _CHUNK:
            _dump(self._chunk, self._stream)
            self._chunk = []

    def commit(self, written: Iterable[Record], *, library: str, generation: int, root: str) -> None:
        """Write the index: the spooled records merged with `written` (any order)."""
        if self._chunk:
            _dump(self._chunk, self._stream)
        self._stream.close()
        try:
            spooled = _records(self._temp.open("rb"))
            merged = heapq.merge(spooled, sorted(written, key=lambda r: r.path), key=lambda r: r.path)
            write(self.path, merged, library=library, generation=generation, root=root)
        finally:
            self.discard()

    def discard(self) -> None:
        if not self._stream.closed:
            self._stream.close()
        with contextlib.suppress(FileNotFoundError):
            self._temp.unlink()
