"""The per-library lease: a held lease refuses a second scan, a dead holder's is taken over,
and a scan that loses its lease stops before committing more."""
from __future__ import annotations

import json
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from libwatch.catalog import runs
from libwatch.catalog.locks import Lease
from libwatch.errors import LeaseLost
from libwatch.services import scan as service
from libwatch.services.scan import ScanOptions
from libwatch.services.scan_detect import HASHING, NoProgress

from .conftest import NAME, tree

KEY = f"scan:{NAME}"


def _dead_pid() -> int:
    child = subprocess.Popen(["sleep", "60"])
    child.kill()
    child.wait()
    return child.pid


def _abandoned_run(db: Any, *, host: str, pid: int, expires_in_s: float) -> str:
    """A run that died holding the lease (as kill -9 leaves it)."""
    run_id = runs.start(db, "scan", NAME, "timer")
    db.runs.update_one({"_id": run_id}, {"$set": {"host": host, "pid": pid}})
    db.locks.insert_one({"_id": KEY, "owner": run_id, "host": host, "pid": pid,
                         "expires_at": datetime.now(UTC) + timedelta(seconds=expires_in_s)})
    return run_id


def test_a_second_scan_exits_75_naming_the_holder(db: Any, root: Path, register: Any, cli: Any) -> None:
    tree(root, {"x.jpg": (10, 10)})
    register()
    lease = Lease(db, KEY, "holder-run-1234", 60).acquire()
    try:
        done = cli("scan", NAME)
    finally:
        lease.release()
    assert done.code == 75, done.stderr
    assert "holder-run-1234" in done.stderr and f"on {socket.gethostname()}" in done.stderr
    assert db.files.count_documents({}) == 0
    assert cli("scan", NAME).code == 0  # released: the next one runs


def test_a_scan_that_finds_another_scan_running_is_a_recorded_skip_naming_it(db: Any, root: Path, register: Any,
                                                                            cli: Any) -> None:
    """What the units pass (--skip-if-locked): exit 0, and history and status say who held the library."""
    tree(root, {"x.jpg": (10, 10)})
    register()
    lease = Lease(db, KEY, "holder-run-1234", 60).acquire()
    try:
        done = cli("scan", NAME, "--trigger", "timer", "--skip-if-locked", "--json")
        refused = cli("scan", NAME)
    finally:
        lease.release()
    assert done.code == 0, done.stderr
    assert "another scan runs" in done.doc["skipped_run"] and "holder-run-1234" in done.doc["skipped_run"]
    assert refused.code == 75
    skipped = list(db.runs.find({"library": NAME, "status": "skipped"}))
    assert len(skipped) == 2 and all("holder-run-1234" in run["error"] for run in skipped)
    history = json.dumps(cli("history", NAME).doc)
    assert '"skipped"' in history and "holder-run-1234" in history, history
    status = json.dumps(cli("status", NAME).doc)
    assert '"last_scan": {' in status and "holder-run-1234" in status, status


@pytest.mark.parametrize("host, expires_in_s", [(socket.gethostname(), 600), ("elsewhere", -5)],
                         ids=["dead-pid-on-this-host", "expired-from-another-host"])
def test_an_abandoned_lease_is_taken_over_and_its_run_interrupted(db: Any, root: Path, register: Any, cli: Any,
                                                                  host: str, expires_in_s: float) -> None:
    tree(root, {"x.jpg": (10, 10)})
    register()
    dead = _abandoned_run(db, host=host, pid=_dead_pid(), expires_in_s=expires_in_s)
    done = cli("scan", NAME)
    assert done.code == 0, done.stderr
    assert done.doc["counts"]["added"] == 1
    assert runs.get(db, dead)["status"] == "interrupted"
    assert db.locks.count_documents({}) == 0


def test_a_live_lease_from_another_host_is_respected(db: Any, root: Path, register: Any, cli: Any) -> None:
    tree(root, {"x.jpg": (10, 10)})
    register()
    alive = _abandoned_run(db, host="elsewhere", pid=1, expires_in_s=600)
    done = cli("scan", NAME)
    assert done.code == 75 and "elsewhere" in done.stderr
    assert runs.get(db, alive)["status"] == "running"


def test_a_scan_whose_lease_is_taken_over_stops_before_writing(db: Any, settings: Any, root: Path,
                                                               register: Any) -> None:
    tree(root, {f"d{i}/x{j}.jpg": (10 + j, 10) for i in range(3) for j in range(3)})
    library = register()

    class Steal(NoProgress):
        def start_phase(self, phase: str, total: int | None = None, *, unit: str = "file") -> None:
            if phase == HASHING:  # planning is under way: another run takes the lease over
                db.locks.update_one({"_id": KEY}, {"$set": {"owner": "thief", "pid": 1}})

    with pytest.raises(LeaseLost):
        service.scan(db, settings, library, ScanOptions(), progress=Steal())
    assert db.files.count_documents({}) == 0 and db.events.count_documents({}) == 0
    [run] = db.runs.find({"library": NAME})
    assert run["status"] == "failed" and "taken over" in run["error"]
    assert db.locks.find_one({"_id": KEY})["owner"] == "thief"  # the loser does not release the thief's lease
