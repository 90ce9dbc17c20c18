"""Rendering cache images and thumbnails in child processes, with a time and memory limit per image.

Pillow runs only in the children (``libwatch.imaging`` is imported there, never
here), one image at a time per child. A child that crashes (a segfault in a
decoder) or exceeds its time limit costs only its own job: that job fails with
the reason, the child is replaced and the other jobs go on. ``processes=1``
still renders in a child, so nothing Pillow does can kill the caller.

Children are started with ``spawn`` (see ``_CONTEXT``), so, as with any spawn
pool, the caller's ``__main__`` must be importable without side effects.

Each child reads the source once, beneath its library root without following
symbolic links planted there (``libwatch.beneath``), and renders only bytes whose
XXH3-128 is the job's content hash: a file replaced since the scan (another
picture, a link to a private file, a folder) ends ``changed`` and writes nothing,
so a rendering is never stored under another content's hash. It then renders and
writes its output itself (``cachefiles.write_atomic``), so the pixels never cross
a pipe. Outputs are content-addressed: a job whose (kind, hash) is already in the
cache is done without rendering, which is what makes a renamed or duplicated image
free.
"""

from __future__ import annotations

import atexit
import errno
import multiprocessing
import os
import resource
import signal
import stat
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Final

import xxhash

from libwatch import beneath, cachefiles
from libwatch.core.hashing import HASH_PREFIX
from libwatch.errors import CacheUnsafe

if TYPE_CHECKING:
    from libwatch.imaging import RenderSpec

DONE: Final = "done"
FAILED: Final = "failed"
SKIPPED: Final = "skipped"
CHANGED: Final = "changed"
DEFAULT_TIMEOUT_S: Final = 60.0
DEFAULT_MEMORY_LIMIT: Final = 1 << 30
STARTUP_TIMEOUT_S: Final = 60.0
STOP_GRACE_S: Final = 2.0
# Reading the source failed in a way that may heal by itself (NAS hiccup): retry later.
TRANSIENT_READ_ERRNOS: Final = frozenset(
    {errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EAGAIN, errno.EINTR, errno.ENOTCONN, errno.EHOSTDOWN, errno.ENOMEM}
)
# spawn, not fork: the caller may hold threads (pymongo's monitors) and sockets a fork would copy.
_CONTEXT: Final = multiprocessing.get_context("spawn")
_READY: Final = "ready"


@dataclass(frozen=True, slots=True)
class RenderJob:
    """One rendering to make; ``key`` is the caller's, returned untouched in the outcome.

    ``force`` renders even when the cache already holds this (kind, hash), e.g.
    after the render size changed (``forceRegenerate`` of a message).
    ``derive_from`` names a kind whose rendering of the same content, when the cache
    holds it at the time the job runs, is rendered from instead of the source (a
    thumbnail from the cache image; see ``imaging.derive``).
    ``source`` is relative to ``root`` (a library root); without a root it is an
    absolute path whose folder serves as the root. ``follow_symlinks`` follows links
    within the root (the library's setting); otherwise a link anywhere below it is refused.
    """

    key: object
    source: str | bytes
    kind: str
    content_hash: str
    spec: RenderSpec
    force: bool = False
    derive_from: str | None = None
    root: str | bytes | None = None
    follow_symlinks: bool = False

    def __post_init__(self) -> None:
        cachefiles.hash_hex(self.content_hash)  # ValueError here, not halfway through a batch
        if not self.kind or "/" in self.kind or self.kind.startswith("."):
            raise ValueError(f"kind must be a plain folder name, not {self.kind!r}")


@dataclass(frozen=True, slots=True)
class RenderOutcome:
    """How a job ended: ``done`` (``path`` is the cache file), ``failed``, ``skipped`` or ``changed``.

    ``error`` says why a job did not end ``done``.

    ``skipped``: no file at the path (vanished since the scan). ``changed``: the file
    there no longer holds the job's content (rewritten, now a link or a folder): nothing
    was written, and the next scan records the change.

    ``transient`` marks a failure that is not the image's fault (the cache disk is
    full, the source's NAS timed out): retry later instead of recording it failed.
    """

    key: object
    status: str
    path: Path | None = None
    error: str = ""
    transient: bool = False


class RenderPool:
    """A pool of rendering child processes; a context manager. Not thread-safe: one caller at a time."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        processes: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_limit_bytes: int | None = DEFAULT_MEMORY_LIMIT,
        file_mode: int = cachefiles.DEFAULT_FILE_MODE,
    ) -> None:
        """``processes`` defaults to the CPUs this process may use; ``memory_limit_bytes=None`` sets no limit.

        ``file_mode`` is the mode of the cache files written (folders get ``cachefiles.dir_mode``).
        Raises CacheUnsafe at once when the cache folder could be changed by other users.
        """
        self.cache_dir = Path(cache_dir)
        try:
            os.close(cachefiles.open_root(self.cache_dir, file_mode))
        except OSError:
            pass  # a cache disk not there yet or full fails each job transiently (retried later), not the pool
        self.timeout_s = timeout_s
        self.memory_limit_bytes = memory_limit_bytes
        count = processes or len(os.sched_getaffinity(0))
        self._children = [_Child(self.cache_dir, memory_limit_bytes, file_mode) for _ in range(max(1, count))]
        _open_pools.add(self)

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the child processes (each finishes the image it is on, within the time limit)."""
        for child in self._children:
            child.stop(self.timeout_s)

    def render_one(self, job: RenderJob) -> RenderOutcome:
        """Render one job and wait for it."""
        (outcome,) = self.render_many([job])
        return outcome

    def render_many(self, jobs: Iterable[RenderJob]) -> Iterator[RenderOutcome]:
        """Render ``jobs`` on all children, yielding each outcome as it finishes.

        ``jobs`` is consumed lazily, as children become free. A caller that stops
        iterating early still gets the images being rendered written, not killed halfway.
        """
        pending = iter(jobs)
        try:
            while True:
                yield from self._dispatch(pending)
                busy = [child for child in self._children if child.job is not None]
                if not busy:
                    return
                yield from self._collect(busy)
        finally:
            busy = [child for child in self._children if child.job is not None]
            while busy:
                list(self._collect(busy))
                busy = [child for child in busy if child.job is not None]

    def _dispatch(self, pending: Iterator[RenderJob]) -> Iterator[RenderOutcome]:
        """Hand jobs to idle children; jobs whose output already exists are done at once."""
        for child in self._children:
            while child.job is None:
                job = next(pending, None)
                if job is None:
                    return
                done = None if job.force else cachefiles.existing(self.cache_dir, job.kind, job.content_hash)
                if done is not None:
                    yield RenderOutcome(job.key, DONE, done)
                    continue
                child.send(job, self.timeout_s)

    def _collect(self, busy: list[_Child]) -> Iterator[RenderOutcome]:
        """Wait until at least one busy child finishes, crashes or runs out of time."""
        timeout = max(0.0, min(child.deadline for child in busy) - time.monotonic())
        wait([w for child in busy for w in child.waitables()], timeout)
        now = time.monotonic()
        for child in busy:
            outcome = child.outcome(now, self.timeout_s)
            if outcome is not None:
                yield outcome


class _Child:
    """One rendering child process and the job it is on."""

    def __init__(self, cache_dir: Path, memory_limit_bytes: int | None, file_mode: int) -> None:
        self.cache_dir = cache_dir
        self.memory_limit_bytes = memory_limit_bytes
        self.file_mode = file_mode
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.job: RenderJob | None = None
        self.deadline = 0.0

    def send(self, job: RenderJob, timeout_s: float) -> None:
        """Start rendering ``job``; a child that died while idle is replaced first."""
        for attempt in (1, 2):
            self._start()
            assert self.conn is not None
            try:
                self.conn.send(_request(job))
                break
            except OSError:
                self._kill()  # died between jobs (killed by hand, OOM killer): not this job's fault
                if attempt == 2:
                    raise
        self.job, self.deadline = job, time.monotonic() + timeout_s

    def _start(self) -> None:
        """Start the process unless it runs; returns once it has imported Pillow and set its limits."""
        if self.process is not None:
            if self.process.is_alive():
                return
            self._kill()
        self.conn, child_end = _CONTEXT.Pipe()
        self.process = _CONTEXT.Process(
            target=_child_main,
            args=(child_end, str(self.cache_dir), self.memory_limit_bytes, self.file_mode),
            daemon=True,
            name="libwatch-render",
        )
        self.process.start()
        child_end.close()
        try:
            ready = self.conn.poll(STARTUP_TIMEOUT_S) and self.conn.recv() == _READY
        except EOFError:
            ready = False
        if not ready:
            reason = self._death() if not self.process.is_alive() else f"not ready after {STARTUP_TIMEOUT_S:.0f} s"
            self._kill()
            raise RuntimeError(f"a rendering process failed to start: {reason}")

    def waitables(self) -> list[object]:
        assert self.conn is not None and self.process is not None
        return [self.conn, self.process.sentinel]

    def outcome(self, now: float, timeout_s: float) -> RenderOutcome | None:
        """The finished job's outcome, or None while it is still running within its time."""
        assert self.conn is not None and self.process is not None and self.job is not None
        job = self.job
        if self.conn.poll():
            try:
                status, path, error, transient = self.conn.recv()
            except (EOFError, OSError):
                return self._lost(job, self._death())
            self.job = None
            return RenderOutcome(job.key, status, Path(path) if path else None, error, transient)
        if not self.process.is_alive():
            return self._lost(job, self._death())
        if now >= self.deadline:
            self._kill()
            return self._lost(job, f"timed out after {timeout_s:g} s")
        return None

    def _lost(self, job: RenderJob, reason: str) -> RenderOutcome:
        self._kill()
        self.job = None
        return RenderOutcome(job.key, FAILED, error=reason)

    def _death(self) -> str:
        assert self.process is not None
        self.process.join(STOP_GRACE_S)
        code = self.process.exitcode
        if code is not None and code < 0:
            return f"render process crashed ({signal.Signals(-code).name})"
        return f"render process exited unexpectedly (code {code})"

    def stop(self, timeout_s: float) -> None:
        """Ask the process to exit after its current image; kill it if it does not."""
        if self.process is None or self.conn is None:
            return
        try:
            self.conn.send(None)
        except OSError:
            pass  # already gone
        self.process.join(timeout_s if self.job is not None else STOP_GRACE_S)
        self._kill()
        self.job = None

    def _kill(self) -> None:
        if self.process is not None:
            if self.process.is_alive():
                self.process.kill()
            self.process.join()
            self.process.close()
        if self.conn is not None:
            self.conn.close()
        self.process, self.conn = None, None


_open_pools: weakref.WeakSet[RenderPool] = weakref.WeakSet()


@atexit.register
def _close_open_pools() -> None:
    """Close pools the caller left open. Registered after multiprocessing's own exit hook,
    so it runs first: the children ignore SIGTERM and would otherwise be joined forever."""
    for pool in list(_open_pools):
        pool.close()


def _request(job: RenderJob) -> tuple[object, ...]:
    """What a child needs of ``job``, as a plain tuple (cheap to pickle)."""
    root, source = job.root, job.source
    if root is None:
        root, source = os.path.split(source)
    return (root, source, job.follow_symlinks, job.kind, job.content_hash, job.spec, job.derive_from)


def _child_main(conn: Connection, cache_dir: str, memory_limit_bytes: int | None, file_mode: int) -> None:
    """The child's loop: render each job received until told to stop or the parent is gone."""
    # Ctrl-C and systemd's SIGTERM reach the whole process group; the parent
    # decides when to stop, so that an image in progress is finished, not lost.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from libwatch import imaging  # noqa: F401  Pillow lives in the children only; import before the limit

    if memory_limit_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    # A parent that died (SIGKILL, OOM killer) shows as end-of-file, a reset or a broken
    # pipe, depending on the moment: each means "stop", quietly, not a traceback.
    try:
        conn.send(_READY)
        while (request := conn.recv()) is not None:
            conn.send(_render_and_store(Path(cache_dir), *request, file_mode=file_mode))
    except (EOFError, OSError):
        return


def _render_and_store(
    cache_dir: Path, root: str | bytes, source: str | bytes, follow_symlinks: bool, kind: str, content_hash: str,
    spec: RenderSpec, derive_from: str | None, *, file_mode: int = cachefiles.DEFAULT_FILE_MODE,
) -> tuple[str, str | None, str, bool]:
    """(status, path, error, transient) for one job; runs in the child."""
    from libwatch import imaging

    try:
        rendition = cachefiles.existing(cache_dir, derive_from, content_hash) if derive_from else None
        data = imaging.derive(str(rendition), spec) if rendition else None
        if data is None:
            content = _read_source(root, source, follow_symlinks)
            if isinstance(content, str):
                return CHANGED, None, content, False
            if HASH_PREFIX + xxhash.xxh3_128_hexdigest(content) != content_hash:
                return CHANGED, None, "changed since the scan (other content)", False
            data = imaging.render(content, spec, camera_raw=imaging.is_camera_raw(source))
    except (FileNotFoundError, NotADirectoryError):
        return SKIPPED, None, "vanished", False
    except imaging.ImageError as exc:
        return FAILED, None, exc.reason, False
    except CacheUnsafe as exc:
        return FAILED, None, str(exc), True  # the admin's to fix; the image is not at fault
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return CHANGED, None, "changed since the scan (now a symbolic link)", False
        return FAILED, None, f"cannot read the image: {exc.strerror or exc}", exc.errno in TRANSIENT_READ_ERRNOS
    try:
        dest = cachefiles.write_atomic(cache_dir, kind, content_hash, spec.ext, data, file_mode=file_mode)
    except CacheUnsafe as exc:
        return FAILED, None, str(exc), True
    except OSError as exc:
        # The cache disk, not the image, is at fault (full, read-only, gone): retry later.
        where = cachefiles.cache_path(cache_dir, kind, content_hash, spec.ext)
        return FAILED, None, f"cannot write {where}: {exc.strerror or exc}", True
    return DONE, str(dest), "", False


def _read_source(root: str | bytes, source: str | bytes, follow_symlinks: bool) -> bytes | str:
    """The whole content of the source, read once (it is hashed and decoded from memory), or why it changed.

    Raises OSError as ``beneath.open_file`` does (ELOOP for a link, EXDEV for a link leaving the root).
    """
    fd = beneath.open_file(root, source, follow_symlinks=follow_symlinks)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return "changed since the scan (no longer a regular file)"
    with open(fd, "rb", closefd=True) as fp:
        return fp.read()
