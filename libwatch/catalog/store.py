"""Where the catalog lives: a configured MongoDB, or the embedded SecantusDB store.

The embedded store is SecantusDB started in this process on loopback, with its data under
`$LIBWATCH_HOME/db`. WiredTiger allows one process per data folder, so a lock file next to
it serialises libwatch processes: a second one waits (bounded) and then exits 75 naming
the holder. `libwatch store serve` runs the same store as a long-lived loopback server for
hosts where several units must share it.

Either way the store requires authentication: its one user's password is made at the first
start and kept in `$LIBWATCH_HOME/store-credentials.json` (0600, in a 0700 folder), so another
local user can neither connect nor read the catalog's files.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import pymongo
from pymongo.database import Database
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError

from libwatch import state
from libwatch.catalog.failures import error_reason, translated
from libwatch.config import STORE_CREDENTIALS, Settings, mask_url
from libwatch.errors import CatalogUnavailable, ConfigError, Locked
from libwatch.state import FILE_MODE, private_dir, write_private

log = logging.getLogger("libwatch.store")

CONNECT_TIMEOUT_MS: Final = 5000
_LOCK_POLL_S: Final = 0.2
STORE_USER: Final = "libwatch"
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


def _open_lock(lock_file: Path) -> int:
    try:
        private_dir(lock_file.parent)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
    except OSError as error:
        raise CatalogUnavailable(f"cannot open the embedded store's lock {lock_file}: "
                                 f"{error.strerror or error} (the state folder is another user's?)") from None
    with contextlib.suppress(OSError):  # a lock file of an older libwatch was 0644
        os.fchmod(fd, FILE_MODE)
    return fd


@contextlib.contextmanager
def _exclusive(lock_file: Path, wait_s: float) -> Iterator[None]:
    fd = _open_lock(lock_file)
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
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": state.COMMAND,
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


@dataclass(frozen=True, slots=True)
class Credentials:
    """The store's one user (SCRAM-SHA-256, role root on admin)."""

    user: str
    password: str

    def uri(self, host: str, port: int, *, tls: bool = False) -> str:
        """A MongoDB URI with these credentials for the server at host:port."""
        shown = f"[{host}]" if ":" in host else host
        options = "authSource=admin&authMechanism=SCRAM-SHA-256" + ("&tls=true" if tls else "")
        return f"mongodb://{quote(self.user, safe='')}:{quote(self.password, safe='')}@{shown}:{port}/?{options}"


@dataclass(frozen=True, slots=True)
class Served:
    """A running embedded store: the SecantusDB server and the URI (with credentials) to reach it."""

    server: Any
    uri: str


def read_credentials(path: Path) -> Credentials | None:
    """The store's credentials from `path`; None when the file does not exist (a first start)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Credentials(str(data["user"]), str(data["password"]))
    except FileNotFoundError:
        return None
    except OSError as error:
        raise CatalogUnavailable(f"cannot read the store's credentials {path}: {error.strerror or error}") from None
    except (ValueError, KeyError, TypeError):
        raise CatalogUnavailable(f"the store's credentials {path} are damaged: remove the file and start the "
                                 "store again (it sets a new password)") from None


@contextlib.contextmanager
def _started(data_dir: Path, *, require_auth: bool, host: str = "127.0.0.1", port: int = 0,
             sync_on_commit: bool = True, tls: tuple[Path, Path] | None = None) -> Iterator[Any]:
    import secantus  # imported here: only the embedded store needs it

    private_dir(data_dir)
    tls_files = {} if tls is None else {"tls_cert_file": str(tls[0]), "tls_key_file": str(tls[1])}
    umask = os.umask(0o077)  # the files WiredTiger creates now are the owner's alone
    try:
        server = secantus.SecantusDBServer(host=host, port=port, storage_path=str(data_dir),
                                           sync_on_commit=sync_on_commit, require_auth=require_auth,
                                           **SERVER_OPTIONS, **tls_files)
        server.start()
    except Exception as error:  # WiredTiger reports a damaged or foreign folder in many ways
        raise CatalogUnavailable(f"cannot open the embedded store in {data_dir}: {error}") from error
    finally:
        os.umask(umask)
    try:
        yield server
    finally:
        _stop_quickly(server)
        _owner_only(data_dir)


def _owner_only(data_dir: Path) -> None:
    """WiredTiger rewrites files (WiredTiger.turtle at every close) with the process's umask: take
    the other users' bits away again. The 0700 folder keeps them out while the store runs."""
    for entry in os.scandir(data_dir):
        with contextlib.suppress(OSError):
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077 and info.st_uid == os.geteuid():
                os.chmod(entry.path, FILE_MODE)


def _provision(data_dir: Path, credentials_file: Path) -> Credentials:
    """First start: the store's user with a new random password, then the credentials file (0600).

    As SecantusDB documents it: `createUser` on the server started without authentication (on a
    random loopback port, for the moment this takes), then restarted with it. A lost credentials
    file gets a new password the same way. Nobody else may have slipped in while the door was
    open: any other user is dropped, and so is any database in a store that was new.
    """
    fresh = _fresh(data_dir)
    credentials = Credentials(STORE_USER, secrets.token_urlsafe(32))
    with _started(data_dir, require_auth=False) as server:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            server.uri, serverSelectionTimeoutMS=CONNECT_TIMEOUT_MS)
        try:
            _set_user(client, credentials)
            _drop_intruders(client, data_dir, fresh=fresh)
        except PyMongoError as error:
            raise CatalogUnavailable(f"cannot set up the embedded store's user in {data_dir}: "
                                     f"{error_reason(error)}") from None
        finally:
            client.close()
    write_private(credentials_file, json.dumps({"user": credentials.user, "password": credentials.password}).encode())
    log.info("the embedded store %s requires a password now, kept in %s", data_dir, credentials_file)
    return credentials


def _fresh(data_dir: Path) -> bool:
    """A store WiredTiger has not made yet (its `WiredTiger` file is written first)."""
    return not (data_dir / "WiredTiger").exists()


def _users(client: pymongo.MongoClient[dict[str, Any]]) -> list[tuple[str, str]]:
    # `usersInfo` with `forAllDBs` answers an empty list on SecantusDB 0.7: its users are listed here.
    return [(user["db"], user["user"]) for user in client.admin["system.users"].find({}, {"db": 1, "user": 1})]


def _set_user(client: pymongo.MongoClient[dict[str, Any]], credentials: Credentials) -> None:
    command = "updateUser" if ("admin", credentials.user) in _users(client) else "createUser"
    client.admin.command(command, credentials.user, pwd=credentials.password, roles=["root"])


def _drop_intruders(client: pymongo.MongoClient[dict[str, Any]], data_dir: Path, *, fresh: bool) -> None:
    for database, user in _users(client):
        if (database, user) != ("admin", STORE_USER):
            log.warning("dropping user %s of database %s from the embedded store %s: libwatch made no such user",
                        user, database, data_dir)
            client[database].command("dropUser", user)
    for database in client.list_database_names() if fresh else ():
        if database not in ("admin", "config", "local"):
            log.warning("dropping database %s from the new embedded store %s: it was written while the store "
                        "was being set up", database, data_dir)
            client.drop_database(database)


@contextlib.contextmanager
def embedded_server(data_dir: Path, *, credentials_file: Path | None = None, port: int = 0,
                    host: str = "127.0.0.1", sync_on_commit: bool = True,
                    tls: tuple[Path, Path] | None = None) -> Iterator[Served]:
    """Run SecantusDB with its data in `data_dir`, authentication required (caller holds the lock).

    The credentials live in `credentials_file` (default: `store-credentials.json` beside the data
    folder), created 0600 at the first start. `tls`: (certificate, key) files.
    """
    credentials_file = credentials_file or data_dir.parent / STORE_CREDENTIALS
    # A new store has no user yet, whatever a credentials file left from another one says.
    credentials = (None if _fresh(data_dir) else read_credentials(credentials_file)) \
        or _provision(data_dir, credentials_file)
    with _started(data_dir, require_auth=True, host=host, port=port, sync_on_commit=sync_on_commit,
                  tls=tls) as server:
        yield Served(server, credentials.uri(server.host, server.port, tls=tls is not None))


def _client(uri: str) -> pymongo.MongoClient[dict[str, Any]]:
    # Keyword options beat the URI's in pymongo: pass the defaults only where the URI is silent.
    given = uri.lower()
    timeouts = {option: CONNECT_TIMEOUT_MS for option in ("serverSelectionTimeoutMS", "connectTimeoutMS")
                if option.lower() + "=" not in given}
    try:
        return pymongo.MongoClient(uri, tz_aware=True, appname="libwatch", **timeouts)
    except (ConfigurationError, ValueError, TypeError) as error:
        raise ConfigError(f"bad MongoDB URI {mask_url(uri)}: {error}") from None


def _ping(client: pymongo.MongoClient[dict[str, Any]], shown: str, *, refused_hint: str = "") -> None:
    try:
        client.admin.command("ping")
    except OperationFailure as error:
        client.close()
        raise CatalogUnavailable(f"{shown} refused the password: {error_reason(error)}{refused_hint}") from None
    except PyMongoError as error:
        client.close()
        raise CatalogUnavailable(f"{shown} is unreachable: {error_reason(error)}") from None


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
        description = f"MongoDB {shown}"
        _ping(client, f"MongoDB at {shown}")
        try:
            with translated(description):
                yield Connection(client[settings.database], client, description, embedded=False)
        finally:
            client.close()
        return
    with exclusive_store(settings) as data_dir, \
            embedded_server(data_dir, credentials_file=settings.store_credentials) as served:
        description = f"embedded store {settings.store_dir}"
        client = _client(served.uri)
        _ping(client, description, refused_hint=f" (remove {settings.store_credentials} and run again: the "
                                                 "store then sets a new password)")
        try:
            with translated(description):
                yield Connection(client[settings.database], client, description, embedded=True)
        finally:
            client.close()
