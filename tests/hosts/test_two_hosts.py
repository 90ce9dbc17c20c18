"""Two hosts, one catalog, one broker: each scans its own library, both render into one shared cache.

The README's "Scaling out" set-up, on simulated hosts (see conftest.py): the catalog and the
broker are reached over each host's network, each library is scanned by the host whose
timer owns it (the lease and the run name that host), and the workers of both hosts share the
rebuild queues and one cache folder (a shared filesystem in a real deployment), so a worker
killed on one host leaves its unacknowledged messages to the other.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from .conftest import Host, Relay, libwatch_argv, simulated_host
from support import tree

pytestmark = [pytest.mark.slow, pytest.mark.broker]

IMAGES = 40


def _through(url: str, host: Host, relay: Relay) -> str:
    """`url` (a service on the root namespace's loopback) as `host` reaches it: the relay on its gateway."""
    parts = urlsplit(url)
    assert parts.port is not None
    port = relay.add(host.gateway, parts.port)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host.gateway}:{port}" if userinfo else f"{host.gateway}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _host_env(host: Host, relay: Relay, cli_env: dict[str, str], mongo_uri: str, amqp_url: str,
              prefix: str) -> dict[str, str]:
    mongo = _through(mongo_uri, host, relay)
    mongo += ("&" if "?" in mongo else "?") + "directConnection=true"
    return {**cli_env, "LIBWATCH_MONGO_URI": mongo, "LIBWATCH_AMQP_URL": _through(amqp_url, host, relay),
            "LIBWATCH_AMQP_PREFIX": prefix}


def _json(done: Any) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_two_hosts_share_one_catalog_and_one_broker(namespaces_available: None, relay: Relay, tmp_path: Path,
                                                    cli_env: dict[str, str], mongo_uri: str, amqp_url: str,
                                                    topology: Any, db: Any) -> None:
    prefix = topology.exchange.removesuffix("libwatch")
    roots = {name: tree(tmp_path / name, {f"{i // 10}/{i}.jpg": (640 + i, 480) for i in range(IMAGES)})
             for name in ("one", "two")}
    with simulated_host(1, "hosta") as host_a, simulated_host(2, "hostb") as host_b:
        env = {host_a: _host_env(host_a, relay, cli_env, mongo_uri, amqp_url, prefix),
               host_b: _host_env(host_b, relay, cli_env, mongo_uri, amqp_url, prefix)}
        owner = {"one": host_a, "two": host_b}
        for name, host in owner.items():
            assert host.run(libwatch_argv("library", "add", name, str(roots[name])), env[host]).returncode == 0
            scanned = _json(host.run(libwatch_argv("--json", "scan", name), env[host]))
            assert scanned["counts"]["added"] == IMAGES
            assert scanned["rebuild"]["published"] == 2 * IMAGES

        # A worker on host a takes its prefetch window and is killed mid-way: its messages go to host b's.
        killed = host_a.start(libwatch_argv("worker", "--prefetch", "8"), env[host_a])
        deadline = time.monotonic() + 60
        while db.files.count_documents({"rebuild.cache": "done"}) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        rendered_by_a = db.files.count_documents({"rebuild.cache": "done"})
        assert 4 <= rendered_by_a < 2 * IMAGES, "host a's worker must be killed with work left"
        drained = host_b.run(libwatch_argv("worker", "--idle-exit", "3"), env[host_b], timeout=300)
        assert drained.returncode == 0, drained.stderr

        history = {name: _json(host_a.run(libwatch_argv("--json", "history", name), env[host_a]))
                   for name in owner}
        status = _json(host_b.run(libwatch_argv("--json", "status"), env[host_b]))

    # Each library was scanned by its own host, as its lease and its run say.
    for name, host in owner.items():
        scans = [run for run in history[name]["runs"] if run["job"] == "scan"]
        assert scans and {run["host"] for run in scans} == {host.hostname}
    # Every request was rendered, each image's cache image and thumbnail exactly once in the shared cache.
    assert db.files.count_documents({"rebuild.cache": "done", "rebuild.thumbnail": "done"}) == 2 * IMAGES
    hashes = {record["hash"].split(":")[1] for record in db.files.find({}, {"hash": 1})}
    cache = Path(cli_env["LIBWATCH_CACHE_DIR"])
    for kind in ("cache", "thumbnail"):
        names = [path.name for path in (cache / kind).rglob("*") if path.is_file()]
        renders = sorted(name.split(".")[0] for name in names if not name.startswith("."))
        assert renders == sorted(hashes), f"{kind}: one finished render per image"
        # The killed worker may leave the temporary file of the render it was writing (cleanup removes those).
        assert all(name.endswith(".tmp") and name.split(".")[1] in hashes for name in names if name.startswith("."))
    workers = {run["host"] for run in db.runs.find({"job": "worker"}, {"host": 1})}
    assert workers == {"hosta", "hostb"}
    assert {library["name"]: library["last_scan"]["host"] for library in status["libraries"]} == {
        name: host.hostname for name, host in owner.items()}
