"""The parallel walk: the serial walk's folders shared out among forked worker processes.

Fork, pipes and SIGKILL live here, apart from the pure walk of :mod:`libwatch.core.walk`;
the items and their order are exactly the serial walk's.
"""
from __future__ import annotations

import contextlib
import gc
import heapq
import os
import pickle
import signal
import struct
from collections.abc import Iterator
from typing import BinaryIO, Final, NamedTuple, NoReturn

from libwatch.core.walk import (
    DEFAULT_OPTIONS,
    FolderCheck,
    Item,
    Skip,
    Walk,
    WalkOptions,
    _Child,
    _folded,
    _Folder,
    _Ready,
    _run,
    _Sub,
    _Walker,
    opened,
    sort_key,
)
from libwatch.errors import WalkWorkerLost


def walk(root: str | bytes, options: WalkOptions = DEFAULT_OPTIONS, *,
         unchanged: FolderCheck | None = None, under: str = "", workers: int = 1) -> Walk:
    """The items of :func:`libwatch.core.walk.walk`, in the same order; raises what it raises.

    With ``workers`` above 1, forked processes walk the folders (see :class:`_Parallel`):
    the same items in the same order, sooner on a warm cache.
    """
    walker, top, children, ancestors = opened(root, options, unchanged, under)
    if workers > 1:
        return _Parallel(walker, top, children, ancestors, unchanged, workers)
    return _run(walker, top, children, unchanged, set(ancestors))


class _Unit(NamedTuple):
    """A folder whose subtree one worker walks: the folder it is listed in and the folders above it."""

    parent: _Folder
    sub: _Sub
    ancestors: frozenset[tuple[int, int]]


def _unit_items(walker: _Walker, unit: _Unit, unchanged: FolderCheck | None) -> Iterator[Item]:
    entered = walker.enter(unit.parent, unit.sub, unit.ancestors)
    if type(entered) is Skip:
        yield entered
        return
    folder, children = entered  # type: ignore[misc]
    yield from _run(walker, folder, _folded(folder, children, unchanged), unchanged, {*unit.ancestors, folder.dev_ino})


def _split(walker: _Walker, top: _Folder, children: list[_Child], ancestors: frozenset[tuple[int, int]],
           unchanged: FolderCheck | None, wanted: int) -> tuple[list[Item], list[_Unit]]:
    """The items the calling process finds itself, sorted, and the folders left to workers (walk order).

    It lists one level deeper while there are fewer folders than ``wanted`` (a root holding
    one folder), so that every worker has a subtree to walk if the tree allows.
    """
    found: list[Item] = []
    level = [(top, children, ancestors)]
    while True:
        units: list[_Unit] = []
        for folder, kids, ancestors in level:
            for child in kids:
                if type(child) is _Sub:
                    units.append(_Unit(folder, child, ancestors))
                else:
                    found.append(child.skip if type(child) is _Ready else child)  # type: ignore[arg-type]
        if not units or len(units) >= wanted:
            found.sort(key=sort_key)
            return found, units
        level = []
        for unit in units:
            entered = walker.enter(unit.parent, unit.sub, unit.ancestors)
            if type(entered) is Skip:
                found.append(entered)
                continue
            folder, kids = entered  # type: ignore[misc]
            level.append((folder, _folded(folder, kids, unchanged), unit.ancestors | {folder.dev_ino}))


# Work is handed out as 4-byte batch numbers, all written to a pipe before any worker starts:
# 1,024 of them fill 4 KiB, which even a pipe shrunk to one page by the per-user limit holds.
_TOKEN: Final = struct.Struct("<I")
_MAX_BATCHES: Final = 1024
_FRAME: Final = struct.Struct("<I")


def _batches(units: list[_Unit]) -> list[list[_Unit]]:
    """Consecutive units in at most _MAX_BATCHES batches of equal length (the last shorter)."""
    size = max(1, -(-len(units) // _MAX_BATCHES))
    return [units[i:i + size] for i in range(0, len(units), size)]




class _Parallel:
    """A walk whose folders are shared out among forked worker processes and merged back in walk order.

    The workers are forked after the caller's state is built (the ``unchanged`` check and
    whatever it reads), take folder batches from a shared pipe as they go (a big folder
    does not hold up the others) and send back only their items: a folded folder is one
    small :class:`Same`. Each worker's items come in walk order, so a merge by ``sort_key``
    restores the serial walk's sequence exactly. Threads do not help: with a warm cache the
    walk is CPU-bound Python.
    """

    def __init__(self, walker: _Walker, top: _Folder, children: list[_Child], ancestors: frozenset[tuple[int, int]],
                 unchanged: FolderCheck | None, workers: int) -> None:
        found, units = _split(walker, top, children, ancestors, unchanged, workers)
        batches = _batches(units)
        self._pids: list[int] = []
        self._streams: list[BinaryIO] = []
        self._done = False
        tokens, tokens_in = os.pipe()
        try:
            os.write(tokens_in, b"".join(_TOKEN.pack(i) for i in range(len(batches))))
            os.close(tokens_in)
            for _ in range(min(workers, len(batches))):
                self._fork(walker, batches, unchanged, tokens)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(tokens)
        self._items = heapq.merge(found, *map(_received, self._streams), key=sort_key)

    def _fork(self, walker: _Walker, batches: list[list[_Unit]], unchanged: FolderCheck | None, tokens: int) -> None:
        out, into = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(out)
            for stream in self._streams:  # the earlier workers' pipes: their end must be seen
                os.close(stream.fileno())
            _serve(walker, batches, unchanged, tokens, into)
        os.close(into)
        self._pids.append(pid)
        self._streams.append(os.fdopen(out, "rb"))

    def __iter__(self) -> Iterator[Item]:
        return self

    def __next__(self) -> Item:
        try:
            return next(self._items)
        except StopIteration:
            self._done = True
            self.close()
            raise

    def close(self) -> None:
        """Stop the workers still running (an early end) and reap them."""
        for stream in self._streams:
            stream.close()
        for pid in self._pids:
            if not self._done:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self._pids, self._streams = [], []


def _serve(walker: _Walker, batches: list[list[_Unit]], unchanged: FolderCheck | None, tokens: int,
           into: int) -> NoReturn:
    """A worker: walk the batches it takes, send each one's items, then an empty frame; never returns."""
    code = 1
    try:
        # The worker's own objects form no cycles: a collection would only walk the parent's heap,
        # copying it page by page, and could run finalizers of objects that belong to the parent.
        gc.disable()
        with os.fdopen(into, "wb") as stream:
            try:
                while token := os.read(tokens, _TOKEN.size):
                    batch = batches[_TOKEN.unpack(token)[0]]
                    items = [item for unit in batch for item in _unit_items(walker, unit, unchanged)]
                    _send(stream, pickle.dumps(items))
                code = 0
            except Exception as error:  # noqa: BLE001 - handed to the parent, which raises it
                _send(stream, _pickled_error(error))
            _send(stream, b"")
    finally:
        os._exit(code)


def _pickled_error(error: Exception) -> bytes:
    try:
        return pickle.dumps(error)
    except Exception:  # noqa: BLE001 - an exception that does not pickle still reaches the parent
        return pickle.dumps(RuntimeError(repr(error)))


def _send(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_FRAME.pack(len(payload)))
    stream.write(payload)


def _received(stream: BinaryIO) -> Iterator[Item]:
    """One worker's items, in its walk order; raises what the worker raised."""
    while True:
        head = stream.read(_FRAME.size)
        if len(head) < _FRAME.size:
            raise WalkWorkerLost("a walk worker process ended without finishing its share")
        (length,) = _FRAME.unpack(head)
        if not length:
            return
        items = pickle.loads(stream.read(length))
        if isinstance(items, Exception):
            raise items
        yield from items
