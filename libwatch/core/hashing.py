"""Content fingerprints: XXH3-128 of a file, read only when it held still.

A file is opened without following links and without blocking, checked to be
regular, read in 1 MiB blocks, and stat'ed again (the open file and the path)
afterwards; if it changed while being read it is retried, then skipped as
``unstable``. Many small files go to worker processes, big ones are read here.
"""
from __future__ import annotations

import errno
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

import xxhash

from libwatch.core.paths import join
from libwatch.core.walk import NOT_REGULAR, UNSTABLE, DiskEntry, Skip, reason_of

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

HASH_PREFIX: Final = "xxh3-128:"
BLOCK_SIZE: Final = 1 << 20
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Files at least this big are read by the calling process (one stream cannot be
# split across processes); smaller ones are worth shipping to a worker.
_IN_PROCESS_BYTES: Final = 16 << 20
_WINDOW_FILES: Final = 4096
_WINDOW_BYTES: Final = 256 << 20
_CHUNK_FILES: Final = 128
_POOL_MIN_FILES: Final = 128

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A file's content hash with the stat of the open file it was read from."""

    entry: DiskEntry
    hash: str


# What reading a file gives, in plain tuples that are cheap to send between
# processes (pickling the dataclasses cost as much as hashing a 100 KiB file):
# (hash, size, mtime_ns, ctime_ns, inode, dev, nlink) or (skip reason, detail).
_Outcome = tuple[str, int, int, int, int, int, int] | tuple[str, str]


def _stamp(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _digest(fd: int, size: int) -> str:
    # Asking for the expected size (+1 to notice growth) is about 3x faster on
    # small files than filling a preallocated 1 MiB buffer (measured).
    hasher = xxhash.xxh3_128()
    total = 0
    want = min(size + 1, BLOCK_SIZE)
    while chunk := os.read(fd, want):
        hasher.update(chunk)
        total += len(chunk)
        if total > size:
            break  # it grew while being read: the caller's re-stat reports it unstable
        want = min(size + 1 - total, BLOCK_SIZE)
    return HASH_PREFIX + hasher.hexdigest()


def _read(path: bytes, retries: int, follow_symlinks: bool) -> _Outcome:
    flags = _OPEN_FLAGS & ~os.O_NOFOLLOW if follow_symlinks else _OPEN_FLAGS
    for _ in range(retries + 1):
        try:
            fd = os.open(path, flags)
        except OSError as err:
            return _failure(err)
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                return (NOT_REGULAR, "not a regular file when opened")
            if before.st_size > BLOCK_SIZE:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            digest = _digest(fd, before.st_size)
            after = os.fstat(fd)
            now = os.stat(path, follow_symlinks=follow_symlinks)
        except OSError as err:
            return _failure(err)
        finally:
            os.close(fd)
        if _stamp(before) == _stamp(after) == _stamp(now):
            return (digest, *_stamp(before), before.st_nlink)
    return (UNSTABLE, "changed while being read")


def _failure(err: OSError) -> tuple[str, str]:
    # O_NOFOLLOW reports a symlink as ELOOP: it is a link, not a loop.
    reason = NOT_REGULAR if err.errno == errno.ELOOP else reason_of(err)
    return (reason, err.strerror or str(err))


def _result(entry: DiskEntry, outcome: _Outcome) -> Fingerprint | Skip:
    if len(outcome) == 2:
        return Skip(entry.path, entry.raw, outcome[0], outcome[1])
    digest, size, mtime_ns, ctime_ns, inode, dev, nlink = outcome
    return Fingerprint(DiskEntry(entry.path, entry.raw, size, mtime_ns, ctime_ns, inode, dev, nlink), digest)


def hash_file(root: bytes, entry: DiskEntry, *, retries: int = 1, follow_symlinks: bool = False) -> Fingerprint | Skip:
    """Hash one file; a :class:`Skip` when it is not regular, unreadable, gone or kept changing.

    The fingerprint's entry holds the stat of the open file. ``follow_symlinks``
    must match the walk's option: without it a symlink is refused as not regular.
    """
    return _result(entry, _read(join(root, entry.raw), retries, follow_symlinks))


def _read_chunk(root: bytes, raws: list[bytes], follow_symlinks: bool) -> list[_Outcome]:
    return [_read(join(root, raw), 1, follow_symlinks) for raw in raws]


def hash_files(
    root: bytes | str,
    entries: Iterable[DiskEntry],
    *,
    workers: int | None = None,
    follow_symlinks: bool = False,
    progress: Callable[[int], None] = lambda nbytes: None,
) -> Iterator[Fingerprint | Skip]:
    """Hash ``entries`` and yield their results in the same order (see :func:`hash_tagged`)."""
    for _, result in hash_tagged(
        root, ((None, e) for e in entries), workers=workers, follow_symlinks=follow_symlinks, progress=progress
    ):
        yield result


def hash_tagged(
    root: bytes | str,
    items: Iterable[tuple[T, DiskEntry]],
    *,
    workers: int | None = None,
    follow_symlinks: bool = False,
    progress: Callable[[int], None] = lambda nbytes: None,
) -> Iterator[tuple[T, Fingerprint | Skip]]:
    """Hash each item's entry, yielding ``(tag, result)`` in input order.

    The input is consumed lazily, a window at a time. Windows with many small
    files are hashed by ``workers`` processes (default: the usable CPUs; 1 = all
    in this process); big files are read here meanwhile. Hard links (same
    device and inode, ``nlink > 1``) are read once. ``progress`` gets the size
    of each file actually read.
    """
    root_b = os.fsencode(root)
    count = workers if workers is not None else len(os.sched_getaffinity(0))
    hasher = _Hasher(root_b, count, follow_symlinks, progress)
    try:
        yield from hasher.run(iter(items))
    finally:
        hasher.close()


class _Hasher:
    """Windows of work, a lazily started process pool, and the hard-link memory."""

    def __init__(self, root: bytes, workers: int, follow_symlinks: bool, progress: Callable[[int], None]) -> None:
        self.root = root
        self.progress = progress
        self.workers = workers
        self.follow = follow_symlinks
        self.pool: ProcessPoolExecutor | None = None
        # (dev, inode) -> (result, links still to come); forgotten after the last link.
        self.links: dict[tuple[int, int], tuple[Fingerprint, int]] = {}

    def run(self, items: Iterator[tuple[T, DiskEntry]]) -> Iterator[tuple[T, Fingerprint | Skip]]:
        ahead: deque[tuple[list[tuple[T, DiskEntry]], dict[int, Future[list[_Outcome]]]]] = deque()
        while True:
            while len(ahead) < 2 and (window := _window(items)):
                ahead.append((window, self.submit(window)))
            if not ahead:
                return
            window, futures = ahead.popleft()
            yield from self.collect(window, futures)

    def submit(self, window: list[tuple[T, DiskEntry]]) -> dict[int, Future[list[_Outcome]]]:
        """Send the window's small files to the pool in chunks; key: index of each chunk's first item."""
        small = [i for i, (_, e) in enumerate(window) if e.size < _IN_PROCESS_BYTES and not _is_link(e)]
        if self.workers <= 1 or len(small) < _POOL_MIN_FILES:
            return {}
        pool = self.pool or self.start()
        futures: dict[int, Future[list[_Outcome]]] = {}
        for at in range(0, len(small), _CHUNK_FILES):
            chunk = small[at : at + _CHUNK_FILES]
            future = pool.submit(_read_chunk, self.root, [window[i][1].raw for i in chunk], self.follow)
            for i in chunk:
                futures[i] = future
        return futures

    def collect(
        self, window: list[tuple[T, DiskEntry]], futures: dict[int, Future[list[_Outcome]]]
    ) -> Iterator[tuple[T, Fingerprint | Skip]]:
        offsets: dict[int, int] = {}
        for i, (tag, entry) in enumerate(window):
            future = futures.get(i)
            if future is None:
                yield tag, self.hash_here(entry)
                continue
            at = offsets.get(id(future), 0)
            offsets[id(future)] = at + 1
            yield tag, self.counted(_result(entry, future.result()[at]))

    def counted(self, result: Fingerprint | Skip) -> Fingerprint | Skip:
        if type(result) is Fingerprint:
            self.progress(result.entry.size)
        return result

    def hash_here(self, entry: DiskEntry) -> Fingerprint | Skip:
        if not _is_link(entry):
            return self.counted(hash_file(self.root, entry, follow_symlinks=self.follow))
        key = (entry.dev, entry.inode)
        known = self.links.pop(key, None)
        if known is not None:
            first, remaining = known
            if remaining > 1:
                self.links[key] = (first, remaining - 1)
            return Fingerprint(first.entry._replace(path=entry.path, raw=entry.raw), first.hash)
        result = self.counted(hash_file(self.root, entry, follow_symlinks=self.follow))
        if type(result) is Fingerprint:
            self.links[key] = (result, entry.nlink - 1)
        return result

    def start(self) -> ProcessPoolExecutor:
        # fork starts in milliseconds but copies other threads' held locks (database
        # clients run threads); forkserver is safe then, at about 150 ms more.
        method = "fork" if threading.active_count() == 1 else "forkserver"
        # Imported here: a scan with nothing to hash in a pool (a rescan) does not pay for multiprocessing.
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context(method))
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _is_link(entry: DiskEntry) -> bool:
    return entry.nlink > 1


def _window(items: Iterator[tuple[T, DiskEntry]]) -> list[tuple[T, DiskEntry]]:
    """The next items up to a file count or a byte total."""
    window: list[tuple[T, DiskEntry]] = []
    total = 0
    for item in items:
        window.append(item)
        total += item[1].size
        if len(window) >= _WINDOW_FILES or total >= _WINDOW_BYTES:
            break
    return window
