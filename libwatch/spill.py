"""A spill file: items appended in order, kept on disk in pickled batches, read back as often as needed.

A scan of a million new files meets a million changes; holding them costs about 1.8 KB each
(measured: 360 MB at 200,000 files). Spilled, memory holds one batch, and each reader holds
one batch at a time. The file is anonymous (`tempfile.TemporaryFile`, unlinked at once), so a
killed scan leaves nothing behind, and the space is freed when the last report made from it
is gone (the file is closed with its object); readers use `os.pread`, so several may read at once.
"""
from __future__ import annotations

import bisect
import os
import pickle
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from typing import Final, Generic, TypeVar

T = TypeVar("T")

BATCH: Final = 1000  # items per pickled batch: a batch is about 0.3 MB of changes
CACHED: Final = 16  # batches `__getitem__` keeps read (the least recently used goes first)


class Spill(Generic[T]):
    """Items of one kind, in the order appended; `len` counts them, iterating reads them from disk."""

    def __init__(self, batch: int = BATCH) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by `close`, or with the process)
        self._batch: list[T] = []
        self._size = batch
        self._frames: list[tuple[int, int, int]] = []  # (place of its first item, offset, length) of each batch
        self._end = 0
        self._count = 0
        self._read: OrderedDict[int, list[T]] = OrderedDict()  # batches `__getitem__` read, by number

    def append(self, item: T) -> None:
        self._batch.append(item)
        self._count += 1
        if len(self._batch) >= self._size:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        data = pickle.dumps(self._batch, pickle.HIGHEST_PROTOCOL)
        os.pwrite(self._file.fileno(), data, self._end)
        self._frames.append((self._count - len(self._batch), self._end, len(data)))
        self._end += len(data)
        self._batch = []

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[T]:
        """The items in order (those appended after the read started may be left out)."""
        self._flush()
        fd = self._file.fileno()
        for _, offset, length in list(self._frames):
            yield from pickle.loads(os.pread(fd, length, offset))

    def __getitem__(self, place: int) -> T:
        """The item at ``place`` (0-based, append order); raises IndexError past the end.

        Its batch is read from disk unless it is among the CACHED read last: reading in order
        costs one read a batch.
        """
        if not 0 <= place < self._count:
            raise IndexError(place)
        written = self._count - len(self._batch)
        if place >= written:
            return self._batch[place - written]
        number = bisect.bisect_right(self._frames, place, key=_first_place) - 1
        first, offset, length = self._frames[number]
        batch = self._read.get(number)
        if batch is None:
            batch = self._read[number] = pickle.loads(os.pread(self._file.fileno(), length, offset))
            if len(self._read) > CACHED:
                self._read.popitem(last=False)
        else:
            self._read.move_to_end(number)
        return batch[place - first]

    def close(self) -> None:
        self._file.close()


def _first_place(frame: tuple[int, int, int]) -> int:
    return frame[0]
