"""The store libwatch starts runs nothing in the background (issue 17): no TTL sweeper, no oplog, no heartbeat."""
from __future__ import annotations

import inspect
import threading
from pathlib import Path

import pymongo
import pytest
import secantus
from pymongo.errors import OperationFailure

from libwatch.catalog.schema import DURABLE
from libwatch.catalog.store import SERVER_OPTIONS, embedded_server

# SecantusDB's threads that wake up on their own, by the names it gives them.
BACKGROUND = ("secantus-ttl-sweeper", "secantus-noop-heartbeat")


def test_the_options_libwatch_passes_are_pinned() -> None:
    assert SERVER_OPTIONS == {"replica_set_name": None, "ttl_sweep_seconds": 0, "noop_heartbeat_seconds": 0,
                              "enable_test_commands": False}
    # Every option is one SecantusDB still has, so a rename upstream fails here, not at run time.
    assert set(SERVER_OPTIONS) <= set(inspect.signature(secantus.SecantusDBServer.__init__).parameters)


def test_embedded_server_starts_no_background_thread_and_no_replica_set(tmp_path: Path) -> None:
    before = {thread.name for thread in threading.enumerate()}
    with embedded_server(tmp_path / "db") as served:
        started = {thread.name for thread in threading.enumerate()} - before
        assert not [name for name in started if name.startswith(BACKGROUND)], started
        assert served.server.storage.enable_oplog is False
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(served.uri)
        try:
            assert "setName" not in client.admin.command("hello")
            # Durable writes still work without a replica set (w=majority is w=1 on a standalone).
            client.x.get_collection("y", write_concern=DURABLE).insert_one({"a": 1})
            with pytest.raises(OperationFailure, match="configureFailPoint"):
                client.admin.command("configureFailPoint", "failCommand", mode="off")
        finally:
            client.close()
