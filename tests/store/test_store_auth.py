"""Another local user (`nobody`) can neither use the store nor read the state folder (issue 12, items 2 and 6).

The store runs as libwatch runs it: in-process (`store.connect`, in a child process of the test)
and as `libwatch store serve`. The intruder is a forked child that drops to `nobody`; the
state folder sits in a folder everybody may enter, so only libwatch's own modes stop it.
"""
from __future__ import annotations

import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pymongo
import pytest
from pymongo.errors import OperationFailure

from libwatch.catalog.store import read_credentials

from support import unavailable

HOLD_STORE = """
import sys, time
from pathlib import Path
from libwatch import config
from libwatch.catalog import store
settings = config.load(environ={"LIBWATCH_CONFIG": "/dev/null", "LIBWATCH_HOME": sys.argv[1]})
with store.connect(settings) as connection:
    connection.db.libraries.insert_one({"_id": "photos", "path": "/srv/photos"})
    print(connection.client.address[1], flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder every user may enter (pytest's own tmp_path is 0700, which would hide our modes)."""
    if os.geteuid() != 0:
        unavailable("running a child as another user needs root", "LIBWATCH_REQUIRE_ROOT")
    folder = Path(tempfile.mkdtemp(prefix="libwatch-auth-"))
    folder.chmod(0o755)
    yield folder
    subprocess.run(["rm", "-rf", str(folder)], check=False)


def as_nobody(probe: Callable[[], Any]) -> Any:
    """`probe()` run in a forked child as `nobody` (no groups); its value, or its error as a string."""
    nobody = pwd.getpwnam("nobody")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only os calls and modules the parent has loaded
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                result: Any = probe()
            except Exception as error:
                result = f"{type(error).__name__}: {error}"
            os.write(write, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as stream:
        data = stream.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def _client(uri: str) -> pymongo.MongoClient[dict[str, Any]]:
    return pymongo.MongoClient(uri, serverSelectionTimeoutMS=3000, connectTimeoutMS=3000)


def catalog_without_password(port: int) -> Callable[[], Any]:
    def probe() -> Any:
        client = _client(f"mongodb://127.0.0.1:{port}/")
        try:
            return client.libwatch.libraries.find_one()
        finally:
            client.close()
    return probe


def reads(path: Path) -> Callable[[], Any]:
    return lambda: sorted(os.listdir(path)) if path.is_dir() else path.read_text()


def warm_up(port: int) -> None:
    """Load what pymongo imports lazily, here: the child as nobody cannot read /root's Python."""
    with pytest.raises(OperationFailure):
        catalog_without_password(port)()


def assert_private(home: Path) -> None:
    """Nothing under the state folder is open to other users; folders 0700, libwatch's files 0600."""
    for folder, _, names in os.walk(home):
        assert stat.S_IMODE(os.stat(folder).st_mode) & 0o077 == 0, folder
        for name in names:
            mode = stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode)
            assert mode & 0o077 == 0, (os.path.join(folder, name), oct(mode))


def test_nobody_cannot_use_the_in_process_store_nor_read_its_folder(open_folder: Path) -> None:
    home = open_folder / "home"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_STORE, str(home)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        warm_up(port)
        assert "requires authentication" in as_nobody(catalog_without_password(port))
        for path in (home, home / "db", home / "store-credentials.json", home / "db.lock"):
            assert as_nobody(reads(path)).startswith("PermissionError"), path
        # The owner reads the credentials and is let in.
        credentials = read_credentials(home / "store-credentials.json")
        assert credentials is not None
        owner = _client(credentials.uri("127.0.0.1", port))
        assert owner.libwatch.libraries.find_one() == {"_id": "photos", "path": "/srv/photos"}
        owner.close()
        # The lock file names the holder without its command line.
        assert set(json.loads((home / "db.lock").read_text())) == {"pid", "host", "command", "since"}
    finally:
        holder.communicate("")
    assert_private(home)


def test_nobody_cannot_use_store_serve_and_its_uri_file_is_the_owners(open_folder: Path,
                                                                      cli_env: dict[str, str]) -> None:
    home = open_folder / "home"
    env = {**cli_env, "LIBWATCH_HOME": str(home)}
    env.pop("LIBWATCH_MONGO_URI")
    serve = subprocess.Popen([sys.executable, "-m", "libwatch", "--amqp-url", "amqp://me:s3cret@127.0.0.1/",
                              "store", "serve", "--port", "0"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stderr is not None
        warning = serve.stderr.readline()
        assert "--amqp-url holds a password" in warning and "s3cret" not in warning
        assert "password required" in serve.stderr.readline()
        port = urlsplit((home / "store.uri").read_text().strip()).port
        assert port is not None
        warm_up(port)
        assert "requires authentication" in as_nobody(catalog_without_password(port))
        for path in (home, home / "store.uri", home / "store-credentials.json", home / "db"):
            assert as_nobody(reads(path)).startswith("PermissionError"), path
        lock = json.loads((home / "db.lock").read_text())
        assert lock["command"] == "libwatch store" and "s3cret" not in json.dumps(lock)
        # The owner's clients read the URI file and are let in.
        listed = subprocess.run([sys.executable, "-m", "libwatch", "library", "list", "--json"], text=True,
                                capture_output=True, env={**env, "LIBWATCH_MONGO_URI_FILE": str(home / "store.uri")})
        assert listed.returncode == 0, listed.stderr
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
    assert_private(home)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "db.example.org"])
def test_store_serve_refuses_a_non_loopback_host_without_tls(libwatch: Any, host: str) -> None:
    started = time.monotonic()
    done = libwatch("store", "serve", "--host", host)
    assert done.code == 2 and "not a loopback address" in done.stderr and "--tls-cert" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and time.monotonic() - started < 30


def _started_without_password(data_dir: Path) -> Any:
    """A store as the previous libwatch ran it: no authentication (SecantusDB's own defaults)."""
    import secantus

    server = secantus.SecantusDBServer(storage_path=str(data_dir), replica_set_name=None, ttl_sweep_seconds=0)
    server.start()
    return server


def test_an_old_store_gets_a_password_and_loses_the_users_others_made(tmp_path: Path, libwatch: Any) -> None:
    """Upgrade: a catalog kept by the previous libwatch (no password) keeps its data; a user another
    local user made in it while it was open is dropped; a lost or wrong credentials file is repaired."""
    home = tmp_path / "home"
    old = _started_without_password(home / "db")
    client = _client(old.uri)
    client.libwatch.libraries.insert_one({"_id": "photos", "path": str(tmp_path)})
    client.libwatch.command("createUser", "intruder", pwd="x", roles=["dbOwner"])
    client.close()
    old.stop()
    env = {"LIBWATCH_MONGO_URI": "", "LIBWATCH_HOME": str(home), "LIBWATCH_DATABASE": "libwatch"}
    listed = libwatch("library", "list", "--json", env=env)
    assert listed.code == 0 and "photos" in listed.stdout, listed.stderr
    assert "dropping user intruder of database libwatch" in listed.stderr
    # A wrong password: one line saying what to do, and doing it repairs the store.
    (home / "store-credentials.json").write_text(json.dumps({"user": "libwatch", "password": "wrong"}))
    refused = libwatch("library", "list", env=env)
    assert refused.code == 69 and "refused the password" in refused.stderr and "remove" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    (home / "store-credentials.json").unlink()
    assert libwatch("library", "list", env=env).code == 0
    # A new store beside a credentials file of an old one: it makes its user anyway.
    subprocess.run(["rm", "-rf", str(home / "db")], check=True)
    assert libwatch("library", "list", env=env).code == 0


def test_what_others_write_while_a_new_store_is_set_up_is_dropped(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The user is made on the store without a password, for a moment: someone who found its port in
    that moment and wrote a library (or a user) into the new store finds it gone."""
    from libwatch.catalog import store

    set_user = store._set_user

    def with_an_intruder(client: Any, credentials: Any) -> None:
        client.libwatch.libraries.insert_one({"_id": "secrets", "path": "/root"})
        client.admin.command("createUser", "intruder", pwd="x", roles=["root"])
        set_user(client, credentials)

    monkeypatch.setattr(store, "_set_user", with_an_intruder)
    with store.embedded_server(tmp_path / "db") as served:
        client = _client(served.uri)
        assert client.list_database_names() == [] and [u["user"] for u in client.admin["system.users"].find()] == \
            ["libwatch"]
        client.close()
