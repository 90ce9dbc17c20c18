"""The catalog under faults: the server killed mid-scan, unreachable at start, two scans racing."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import pymongo
import pytest
from pymongo.errors import PyMongoError

from libwatch.catalog.schema import DURABLE

from .conftest import NAME, age, one_clear_line, present_in_catalog, present_on_disk
from support import sample

FILES: Final = 2000
FOLDERS: Final = 20


def _many_small_images(root: Path, count: int = FILES) -> None:
    png = sample("tiny.png")
    for i in range(count):
        folder = root / f"f{i % FOLDERS:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"{i:05d}.png").write_bytes(png + i.to_bytes(4, "big"))  # bytes after IEND: still a PNG


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class StoreProcess:
    """`libwatch store serve` in a child process of its own, so that it can be SIGKILLed and restarted."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.port = home, _free_port()
        self.env = {**env, "LIBWATCH_HOME": str(home)}
        self.env.pop("LIBWATCH_MONGO_URI", None)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """The URI the store writes for its clients, password included."""
        return (self.home / "store.uri").read_text().strip()

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "libwatch", "store", "serve", "--port", str(self.port)],
                                        env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(self.uri,
                                                                                  serverSelectionTimeoutMS=500)
                try:
                    client.admin.command("listDatabases", nameOnly=True)  # needs the password, unlike ping
                    return
                finally:
                    client.close()
            except (OSError, PyMongoError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the store did not start (code {self.process.poll()})") from None
                time.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def _store(tmp_path: Path, env: dict[str, str]) -> Iterator[StoreProcess]:
    store = StoreProcess(tmp_path / "store-home", env)
    store.start()
    try:
        yield store
    finally:
        store.stop()


class AckedWriter(threading.Thread):
    """Inserts numbered documents with the catalog's write concern, remembering each acknowledged one."""

    def __init__(self, uri: str) -> None:
        super().__init__(daemon=True)
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, serverSelectionTimeoutMS=1000)
        self.acked: list[int] = []

    def run(self) -> None:
        target = self.client["acks"].get_collection("writes", write_concern=DURABLE)
        number = 0
        while True:
            try:
                target.insert_one({"_id": number})
            except PyMongoError:
                return  # the server is gone: what was acknowledged so far must survive
            self.acked.append(number)
            number += 1


def _kill_during_writes(store: StoreProcess, scan: subprocess.Popen[bytes]) -> set[str]:
    """SIGKILL the store once the scan's first file records are in; returns the paths seen before."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(store.uri)
    files = client["libwatch"]["files"]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and scan.poll() is None:
            if files.count_documents({"library": NAME}) >= 50:
                seen = {doc["path"] for doc in files.find({"library": NAME}, {"path": 1})}
                store.kill()
                return seen
            time.sleep(0.01)
    finally:
        client.close()
    pytest.fail(f"the scan ended (code {scan.poll()}) before the store could be killed mid-write")


@pytest.mark.slow
def test_store_killed_mid_scan_restarted_and_rescanned_converges(
        tmp_path: Path, root: Path, cli_env: dict[str, str]) -> None:
    _many_small_images(root)
    age(root)
    env = {k: v for k, v in cli_env.items() if k != "LIBWATCH_DATABASE"}
    with _store(tmp_path, env) as store:
        env["LIBWATCH_MONGO_URI"] = store.uri
        assert subprocess.run([sys.executable, "-m", "libwatch", "library", "add", NAME, str(root)], env=env,
                              capture_output=True, check=False).returncode == 0
        writer = AckedWriter(store.uri)
        scan = subprocess.Popen([sys.executable, "-m", "libwatch", "scan", NAME], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        writer.start()
        seen = _kill_during_writes(store, scan)
        writer.join(timeout=30)
        _out, err = scan.communicate(timeout=120)
        assert scan.returncode == 69, err
        one_clear_line(err, "catalog error", "Connection refused")
        assert len(seen) < FILES and len(writer.acked) > 0

        store.start()  # the same data folder, the same port
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(store.uri, tz_aware=True)
        try:
            survived = {doc["_id"] for doc in client["acks"]["writes"].find()}
            assert set(writer.acked) <= survived, "an acknowledged write was lost"
            catalog = client["libwatch"]
            assert seen <= {doc["path"] for doc in catalog.files.find({"library": NAME}, {"path": 1})}
            again = subprocess.run([sys.executable, "-m", "libwatch", "scan", NAME], env=env,
                                   capture_output=True, text=True, check=False)
            assert again.returncode == 0, again.stderr
            assert present_in_catalog(catalog) == present_on_disk(root)  # no duplicates, nothing missing
            assert catalog.files.count_documents({"library": NAME}) == FILES
            assert {(c["file_count"], c.get("missing_since")) for c in catalog.collections.find({"library": NAME})} \
                == {(FILES // FOLDERS, None)}
            assert catalog.files.count_documents({"library": NAME, "rebuild.cache": {"$ne": "pending"}}) == 0
            statuses = sorted(run["status"] for run in catalog.runs.find({"library": NAME, "job": "scan"}))
            assert statuses == ["interrupted", "succeeded"]
            quiet = subprocess.run([sys.executable, "-m", "libwatch", "diff", NAME, "--exit-code"], env=env,
                                   capture_output=True, text=True, check=False)
            assert quiet.returncode == 0, quiet.stdout + quiet.stderr
        finally:
            client.close()


@pytest.mark.parametrize("command", [("scan", NAME), ("rebuild", NAME, "--run")])
def test_catalog_unreachable_at_start_is_exit_69_in_one_line(command: tuple[str, ...], root: Path,
                                                             libwatch: Any) -> None:
    uri = "mongodb://me:hunter2@127.0.0.1:9/?serverSelectionTimeoutMS=500&connectTimeoutMS=500"
    done = libwatch(*command, env={"LIBWATCH_MONGO_URI": uri})
    assert done.code == 69, done.stderr
    line = one_clear_line(done.stderr, "me:***@127.0.0.1:9", "unreachable")
    assert "hunter2" not in line and len(line) < 300


@pytest.mark.slow
def test_two_scans_started_at_once_exactly_one_proceeds(db: Any, root: Path, register: Any,
                                                        cli_env: dict[str, str]) -> None:
    _many_small_images(root, 1500)  # long enough a scan for the second to arrive while the first holds the lease
    age(root)
    register()
    scans = [subprocess.Popen([sys.executable, "-m", "libwatch", "scan", NAME], env=cli_env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    ended = [(scan.wait(timeout=300), scan.communicate()[1]) for scan in scans]
    assert sorted(code for code, _ in ended) == [0, 75], ended
    [refused] = [err for code, err in ended if code == 75]
    one_clear_line(refused, f"scan:{NAME} is held by run")
    assert present_in_catalog(db) == present_on_disk(root)
    assert db.events.count_documents({"library": NAME, "type": "added"}) == 1500  # recorded once, by one scan
