"""A local stat index: the catalog's present records for one library, on local disk.

Reading 200,000 records from the embedded store takes about 10 s; reading them from
this file takes a fraction of a second, which is what lets a no-change rescan run at
the speed of the disk walk. The catalog stays the truth: the index carries the
library's catalog `generation` (bumped by every scan that writes), and a scan uses it
only when the generations agree; any mismatch falls back to a full catalog read.
Like git's index and DVC's state, entries carry a format version, so a format change
forces a rebuild instead of a misread.

The index also holds a digest per folder of its files' (path, size, mtime, ctime, inode),
for folders whose records are all hashed and not racy: a walk whose listing of a folder
has the same digest takes the whole folder as unchanged without matching file by file,
and the records of that folder are not even decoded.
Layout: a JSON header line; the records in path order as length-framed spans (records of
one folder that follow each other, at most 8,192), each a marshal pair of the first path
and the marshal bytes of the records; one framed marshal pair of the record count and the
dict of folder digests; and an 8-byte trailer with the offset of that pair.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import heapq
import itertools
import json
import logging
import marshal
import operator
import os
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final

import xxhash

from libwatch.core.diff import Record, Span
from libwatch.core.paths import collection_of
from libwatch.core.walk import DiskEntry
from libwatch.state import open_private, private_dir

FORMAT: Final = 4
_CHUNK: Final = 8192
# Chunks are framed with their length and decoded with marshal.loads: marshal.load on a
# file object reads item by item and was 12x slower (0.125 s against 0.011 s for 20,000 records).
_LENGTH: Final = struct.Struct("<I")
_TRAILER: Final = struct.Struct("<Q")
# marshal format 2 has no back-references, whose use depends on reference counts: the
# same tuple always gives the same bytes, on the disk side and on the index side.
_DIGEST_MARSHAL: Final = 2
_LIST_HEADER: Final = 5  # type code and 4-byte length
_record_stat: Final[Callable[[Record], tuple[Any, ...]]] = operator.itemgetter(0, 1, 2, 3, 4)
_entry_stat: Final[Callable[[DiskEntry], tuple[Any, ...]]] = operator.itemgetter(0, 2, 3, 4, 5)

log = logging.getLogger("libwatch.statindex")


def folder_digest(entries: Sequence[DiskEntry]) -> bytes:
    """The digest of a folder's image files as walked (path order), comparable with the index's.

    marshal writes a list as a 5-byte header and then each item as ``marshal.dumps(item)``
    would, so this is the digest of the items' concatenation, which `write` builds record by record.
    """
    return xxhash.xxh3_128_digest(marshal.dumps(list(map(_entry_stat, entries)), _DIGEST_MARSHAL)[_LIST_HEADER:])


class Index:
    """An index whose header matched: its folder digests now, its records once, in path order."""

    def __init__(self, stream: BinaryIO, count: int, folders: dict[str, bytes], end: int) -> None:
        self.count = count
        self.folders = folders
        self._stream = stream
        self._end = end

    def spans(self) -> Iterator[Span]:
        """The records as spans, each decoded only if loaded."""
        stream, end = self._stream, self._end
        with stream:
            while stream.tell() < end:
                (length,) = _LENGTH.unpack(stream.read(_LENGTH.size))
                first, rows = marshal.loads(stream.read(length))
                yield Span(first, functools.partial(_decoded, rows))


def index_path(home: Path, catalog_identity: str, library: str) -> Path:
    """Where the index of `library` in the catalog named by `catalog_identity` lives."""
    digest = hashlib.sha256(catalog_identity.encode()).hexdigest()[:16]
    return home / "index" / digest / f"{library}.idx"


def clock_ns(index_file: Path) -> int:
    """Now by the clock of the filesystem holding the index: the mtime of a file touched beside it.

    git compares file times with its index file's own mtime for the same reason: a file's
    times come from its filesystem's clock (a NAS's, for a share), not this machine's. The
    machine's clock stands in when the folder cannot be written (a read-only state folder).
    """
    marker = index_file.with_name(index_file.name + ".clock")
    try:
        private_dir(marker.parent)
        with open_private(marker, os.O_WRONLY | os.O_CREAT | os.O_APPEND):
            pass
        os.utime(marker)  # no times given: the filesystem sets its own now
        return marker.stat().st_mtime_ns
    except OSError:
        return time.time_ns()


def _header(library: str, generation: int, root: str) -> dict[str, Any]:
    return {"format": FORMAT, "library": library, "generation": generation, "root": root}


def read(path: Path, *, library: str, generation: int, root: str) -> Index | None:
    """The index if it matches this library state exactly, else None."""
    try:
        stream = path.open("rb")
    except OSError:
        return None
    try:
        if json.loads(stream.readline()) != _header(library, generation, root):
            stream.close()
            return None
        start = stream.tell()
        stream.seek(-_TRAILER.size, os.SEEK_END)
        (end,) = _TRAILER.unpack(stream.read(_TRAILER.size))
        stream.seek(end)
        (length,) = _LENGTH.unpack(stream.read(_LENGTH.size))
        count, folders = marshal.loads(stream.read(length))
        stream.seek(start)
    except (ValueError, OSError, EOFError, TypeError, struct.error):
        stream.close()
        return None
    return Index(stream, count, folders, end)


def _record(fields: tuple[Any, ...]) -> Record:
    return _new_record(Record, (*fields, None))


def _decoded(rows: bytes) -> Iterator[Record]:
    return map(_record, marshal.loads(rows))


_new_record: Final = tuple.__new__


def _spooled(stream: BinaryIO) -> Iterator[Record]:
    with stream:
        while head := stream.read(_LENGTH.size):
            (length,) = _LENGTH.unpack(head)
            yield from _decoded(stream.read(length))


def _dump(chunk: Any, stream: BinaryIO) -> None:
    blob = marshal.dumps(chunk)
    stream.write(_LENGTH.pack(len(blob)))
    stream.write(blob)


def _row(r: Record) -> tuple[Any, ...]:
    return r.path, r.size, r.mtime_ns, r.ctime_ns, r.inode, r.hash, r.racy


def _folder_of(record: Record) -> str:
    return collection_of(record.path)


def _spans(records: Iterable[Record]) -> Iterator[tuple[str, list[Record]]]:
    """Records in path order as (folder, span): records of one folder that follow each other, at most _CHUNK."""
    for folder, group in itertools.groupby(records, key=_folder_of):
        while span := list(itertools.islice(group, _CHUNK)):
            yield folder, span


def _digest_span(digests: dict[str, Any], folder: str, span: list[Record]) -> None:
    """Add a span to its folder's running digest; a racy or unhashed record leaves the folder without one (None)."""
    running = digests.setdefault(folder, xxhash.xxh3_128())
    if running is None:
        return
    if any(r.racy or r.hash is None for r in span):
        digests[folder] = None
        return
    dumps = marshal.dumps
    for r in span:
        running.update(dumps(_record_stat(r), _DIGEST_MARSHAL))


def write(path: Path, records: Iterable[Record], *, library: str, generation: int, root: str) -> None:
    """Write the index atomically (temp file + rename); records must be in path order."""
    private_dir(path.parent)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    digests: dict[str, Any] = {}  # folder -> running digest, or None once a record in it is racy or unhashed
    try:
        with open_private(temp) as stream:
            stream.write(json.dumps(_header(library, generation, root)).encode() + b"\n")
            count = 0
            for folder, span in _spans(records):
                _dump((span[0].path, marshal.dumps(list(map(_row, span)))), stream)
                _digest_span(digests, folder, span)
                count += len(span)
            end = stream.tell()
            _dump((count, {folder: running.digest() for folder, running in digests.items() if running is not None}),
                  stream)
            stream.write(_TRAILER.pack(end))
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _path(record: Record) -> str:
    return record.path


class _Chunked:
    """Records in path order, written to a temporary file in marshal chunks and read back once."""

    def __init__(self, temp: Path) -> None:
        self.temp = temp
        self._stream = open_private(temp)
        self._chunk: list[tuple[Any, ...]] = []

    def add(self, r: Record) -> None:
        self._chunk.append(_row(r))
        if len(self._chunk) == _CHUNK:
            _dump(self._chunk, self._stream)
            self._chunk = []

    def read(self) -> Iterator[Record]:
        if self._chunk:
            _dump(self._chunk, self._stream)
            self._chunk = []
        self._stream.close()
        return _spooled(self.temp.open("rb"))

    def discard(self) -> None:
        if not self._stream.closed:
            self._stream.close()
        with contextlib.suppress(FileNotFoundError):
            self.temp.unlink()


class Spool:
    """Collects the records of a scan's new index, in path order, on disk (not in memory).

    Two streams, each in path order: the records the scan leaves as they are (`add`) and
    those it hashed (`add_hashed`: what it writes, or keeps when the hash failed). After
    the scan's writes, `commit` merges them into the new index for the library's new
    generation. Folders the walk found the same as the index (`carry`) are not spooled:
    their records are copied from the old index, as are those of every folder outside the
    subtree a subtree scan walked (`carry_outside`).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        private_dir(path.parent)
        self._kept = _Chunked(path.with_name(f".{path.name}.{os.getpid()}.spool"))
        self._hashed = _Chunked(path.with_name(f".{path.name}.{os.getpid()}.hashed"))
        self._carried: set[str] = set()
        self._outside: str | None = None

    def carry(self, folder: str) -> None:
        self._carried.add(folder)

    def carry_outside(self, subtree: str) -> None:
        """Carry every record outside the folder ``subtree`` (a scan of that subtree only)."""
        self._outside = subtree + "/"

    def add(self, r: Record) -> None:
        self._kept.add(r)

    def add_hashed(self, r: Record) -> None:
        self._hashed.add(r)

    def commit(self, *, library: str, generation: int, root: str, source_generation: int) -> None:
        """Write the index: both spooled streams merged with the carried folders' records.

        The carried records come from the index of `source_generation`; if it cannot be
        read any more, the index is removed instead (the next scan reads the catalog).
        """
        try:
            parts = [self._kept.read(), self._hashed.read()]
            if self._carried or self._outside is not None:
                source = read(self.path, library=library, generation=source_generation, root=root)
                if source is None:
                    if self._outside is None:
                        log.warning("the local index of %s changed during the scan: removed", library)
                    discard(self.path)
                    return
                carried, outside = self._carried, self._outside
                parts.append(r for span in source.spans()
                             if collection_of(span.path) in carried or (outside and not span.path.startswith(outside))
                             for r in span.load())
            write(self.path, heapq.merge(*parts, key=_path), library=library, generation=generation, root=root)
        finally:
            self.discard()

    def discard(self) -> None:
        self._kept.discard()
        self._hashed.discard()


class NoSpool:
    """The spool of a run that writes no index (a diff, a dry run): it takes records and keeps none."""

    def carry(self, folder: str) -> None:
        """Nothing to carry."""

    def carry_outside(self, subtree: str) -> None:
        """Nothing to carry."""

    def add(self, r: Record) -> None:
        """Nothing to keep."""

    def add_hashed(self, r: Record) -> None:
        """Nothing to keep."""

    def commit(self, *, library: str, generation: int, root: str, source_generation: int) -> None:
        """Nothing to write."""

    def discard(self) -> None:
        """Nothing to remove."""


NO_SPOOL: Final = NoSpool()
