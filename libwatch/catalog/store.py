"""Where the catalog lives: a configured MongoDB, or the embedded SecantusDB store.

The embedded store is SecantusDB started in this process on loopback, with its data under
`$LIBWATCH_HOME/db`. WiredTiger allows one process per data folder, so a lock file next to
it serialises libwatch processes: a second one waits (bounded) and then exits 75 naming
the holder. `libwatch store serve` runs the same store as a long-lived loopback server for
hosts where several units must share it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pymongo
from pymongo.database import Database
from pymongo.errors import ConfigurationError, PyMongoError

from libwatch.catalog.failures import error_reason, translated
from libwatch.config import Settings, mask_url
from libwatch.errors import CatalogUnavailable, ConfigError, Locked

log = logging.getLogger("libwatch.store")

CONNECT_TIMEOUT_MS: Final = 5000
_LOCK_POLL_S: Final = 0.2
# What libwatch asks of every SecantusDB server it starts: nothing that runs in the background.
# The TTL sweeper (60 s by default) parks a WiredTiger cursor on the `libraries` document, which
# shares a table with `events`; every new event then lands on a page nobody can evict or split, and
# a 200,000-file first scan took 655 s instead of 151 s (issue 17). `cleanup` deletes processed
# events past their retention, so the sweeper is not needed. No replica set: libwatch uses neither
# change streams nor transactions, so the oplog (written on every write, pruned in the background)
# and its heartbeat are dead weight. Test commands (configureFailPoint) stay off.
SERVER_OPTIONS: Final[dict[str, Any]] = {
    "replica_set_name": None,
    "ttl_sweep_seconds": 0,
    "noop_heartbeat_seconds": 0,
    "enable_test_commands": False,
}


@dataclass(frozen=True, slots=True)
class Connection:
    """An open catalog: the database handle and where it came from."""

    db: Database[dict[str, Any]]
    client: pymongo.MongoClient[dict[str, Any]]
    description: str
    embedded: bool


def _holder(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.read_text() or "{}")
    except (OSError, ValueError):
        return "another libwatch process"
    return f"pid {info.get('pid')} on {info.get('host')} ({info.get('command', '?')}, since {info.get('since', '?')})"


@contextlib.contextmanager
def _exclusive(lock_file: Path, wait_s: float) -> Iterator[None]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline, waiting = time.monotonic() + wait_s, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Locked(f"the embedded store {lock_file.parent / 'db'} is in use by {_holder(lock_file)}; "
                                 "try later, or run `libwatch store serve` to share it") from None
                if not waiting:  # say so at once: a silent wait of store_wait_s looks like a hang
                    waiting = True
                    log.warning("waiting up to %g s for the embedded store %s, in use by %s", wait_s,
                                lock_file.parent / "db", _holder(lock_file))
                time.sleep(_LOCK_POLL_S)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(os.sys.argv[:3]),
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _stop_quickly(server: Any) -> None:
    # SecantusDB's stop() joins its accept thread for up to 2 s because a blocked accept()
    # does not notice the socket being closed; shutting the listening socket down wakes it.
    listener = getattr(server, "_socket", None)
    if listener is not None:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
    server.stop()


@contextlib.contextmanager
def embedded_server(data_dir: Path, *, port: int = 0, host: str = "127.0.0.1",
                    sync_on_commit: bool = True) -> Iterator[Any]:
    """Run SecantusDB on loopback with its data in `data_dir` (caller holds the lock)."""
    import secantus  # imported here: only the embedded store needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        server = secantus.SecantusDBServer(host=host, port=port, storage_path=str(data_dir),
                                           sync_on_commit=sync_on_commit, **SERVER_OPTIONS)
        server.start()
    except Exception as error:  # WiredTiger reports a damaged or foreign folder in many ways
        raise CatalogUnavailable(f"cannot open the embedded store in {data_dir}: {error}") from error
    try:
        yield server
    finally:
        _stop_quickly(server)


def _client(uri: str) -> pymongo.MongoClient[dict[str, Any]]:
    # Keyword options beat the URI's in pymongo: pass the defaults only where the URI is silent.
    given = uri.lower()
    timeouts = {option: CONNECT_TIMEOUT_MS for option in ("serverSelectionTimeoutMS", "connectTimeoutMS")
                if option.lower() + "=" not in given}
    try:
        return pymongo.MongoClient(uri, tz_aware=True, appname="libwatch", **timeouts)
    except (ConfigurationError, ValueError, TypeError) as error:
        raise ConfigError(f"bad MongoDB URI {mask_url(uri)}: {error}") from None


def _ping(client: pymongo.MongoClient[dict[str, Any]], shown: str) -> None:
    try:
        client.admin.command("ping")
    except PyMongoError as error:
        client.close()
        raise CatalogUnavailable(f"MongoDB at {shown} is unreachable: {error_reason(error)}") from None


@contextlib.contextmanager
def exclusive_store(settings: Settings) -> Iterator[Path]:
    """Hold the embedded store's lock (waiting at most `store_wait_s`); yields its data folder."""
    with _exclusive(settings.home / "db.lock", settings.store_wait_s):
        yield settings.store_dir


@contextlib.contextmanager
def connect(settings: Settings) -> Iterator[Connection]:
    """Open the catalog the settings name; close (and stop the embedded store) on exit.

    A PyMongo error raised by the body becomes `CatalogUnavailable` naming the catalog.
    """
    if settings.mongo_uri:
        shown = mask_url(settings.mongo_uri)
        client = _client(settings.mongo_uri)
        _ping(client, shown)
        description = f"MongoDB {shown}"
        try:
            with translated(description):
                yield Connection(client[settings.database], client, description, embedded=False)
        finally:
            client.close()
        return
    with exclusive_store(settings) as data_dir, embedded_server(data_dir) as server:
        client = _client(server.uri)
        _ping(client, server.uri)
        description = f"embedded store {settings.store_dir}"
        try:
            with translated(description):
                yield Connection(client[settings.database], client, description, embedded=True)
        finally:
            client.close()
