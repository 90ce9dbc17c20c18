"""The worker against hostile messages: poison bodies, exceptions, crashes, huge bodies, forged fields, SIGTERM.

Issue 12.1/12.5/12.4 and 18: one message never stops a worker, nothing it
receives is unbounded, what it logs is escaped, and SIGTERM at any moment exits 0.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from libwatch.bus import Topology
from libwatch.config import Settings, mask_url
from libwatch.renderpool import RenderJob, RenderOutcome
from libwatch.services import outbox
from libwatch.services.worker import Worker, WorkerOptions

from .conftest import Photos, drain

pytestmark = pytest.mark.broker

NESTED = b"[" * 100_000 + b"]" * 100_000


def _env(amqp_url: str, topology: Topology) -> dict[str, str]:
    return {"LIBWATCH_AMQP_URL": amqp_url, "LIBWATCH_AMQP_PREFIX": topology.exchange.removesuffix("libwatch")}


def _raw(amqp_url: str, topology: Topology, kind: str, body: bytes, message_id: str | None = "raw",
         headers: dict[str, Any] | None = None) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(topology.exchange, Topology.routing_key(kind), body,
                              pika.BasicProperties(delivery_mode=2, message_id=message_id, headers=headers),
                              mandatory=True)
    finally:
        connection.close()


def _depth(amqp_url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def _ready(photos: Photos, settings: Settings, topology: Topology) -> None:
    """One real image with its two requests queued (declares the topology)."""
    photos.add("a.jpg")
    outbox.publish_pending(photos.db, settings, library="photos", topology=topology)


def test_nested_brackets_body_is_dead_lettered_and_two_workers_in_a_row_exit_0(
        photos: Photos, broker_settings: Settings, topology: Topology, amqp_url: str,
        libwatch: Callable[..., Any]) -> None:
    _ready(photos, broker_settings, topology)
    _raw(amqp_url, topology, "cache", NESTED)
    env = _env(amqp_url, topology)
    first = libwatch("--json", "worker", "--idle-exit", "1", "--processes", "1", env=env)
    second = libwatch("--json", "worker", "--idle-exit", "1", "--processes", "1", env=env)
    assert (first.code, second.code) == (0, 0), first.stderr + second.stderr
    assert json.loads(first.stdout)["counts"] == {"received": 3, "invalid": 1, "done": 2}
    assert json.loads(second.stdout)["counts"] == {}
    [rejected] = [line for line in first.stderr.splitlines() if "rejected message" in line]
    assert "body of 200000 bytes is over the limit of 16384 bytes" in rejected
    [(_props, body)] = drain(amqp_url, topology.dead_letter_queue)
    assert body == NESTED
    assert photos.states() == {"a.jpg": ("done", "done")}


def test_nested_brackets_within_the_size_limit_are_rejected_by_the_decoder(
        photos: Photos, broker_settings: Settings, topology: Topology, amqp_url: str,
        libwatch: Callable[..., Any]) -> None:
    _ready(photos, broker_settings, topology)
    _raw(amqp_url, topology, "cache", NESTED)
    done = libwatch("--json", "worker", "--idle-exit", "1", "--processes", "1", "--max-message-size", "300000",
                    env=_env(amqp_url, topology))
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)["counts"] == {"received": 3, "invalid": 1, "done": 2}
    assert "nested too deeply" in done.stderr and "Traceback" not in done.stderr


def test_an_exception_while_handling_rejects_only_its_message_and_the_worker_goes_on(
        photos: Photos, broker_settings: Settings, topology: Topology, amqp_url: str) -> None:
    for name in ("a.jpg", "poison.jpg", "c.jpg"):
        photos.add(name, color=(len(name) * 20, 0, 0))
    outbox.publish_pending(photos.db, broker_settings, library="photos", topology=topology)

    def render(jobs: Iterator[RenderJob]) -> Iterator[RenderOutcome]:
        from libwatch.renderpool import DONE
        for job in jobs:
            if job.source.endswith(b"poison.jpg"):
                raise OSError("simulated fault tied to one message")
            yield RenderOutcome(job.key, DONE)

    worker = Worker(photos.db, broker_settings, WorkerOptions(idle_exit_s=1.0), topology=topology, render=render)
    counts = worker.run().counts
    assert counts == {"received": 6, "done": 4, "invalid": 2}
    assert len(drain(amqp_url, topology.dead_letter_queue)) == 2
    assert photos.states()["a.jpg"] == ("done", "done") and photos.states()["c.jpg"] == ("done", "done")


_KILLER = """
import os, sys
from pathlib import Path
from libwatch.bus import Topology
from libwatch.catalog.store import connect
from libwatch.config import Settings, mask_url
from libwatch.renderpool import DONE, RenderOutcome
from libwatch.services.worker import Worker, WorkerOptions

def render(jobs):
    for job in jobs:
        if job.source.endswith(b"poison.jpg"):
            os._exit(3)  # the worker process dies on this message, as on a segfault or the OOM killer
        yield RenderOutcome(job.key, DONE)

settings = Settings(mongo_uri=sys.argv[1], database=sys.argv[2], amqp_url=sys.argv[3], home=Path(sys.argv[5]),
                    cache_dir=Path(sys.argv[6]))
with connect(settings) as connection:
    worker = Worker(connection.db, settings, WorkerOptions(idle_exit_s=1.0), topology=Topology.prefixed(sys.argv[4]),
                    render=render)
    print(worker.run().counts, flush=True)
"""


def test_a_message_that_kills_its_worker_is_rejected_instead_of_killing_workers_forever(
        photos: Photos, broker_settings: Settings, topology: Topology, amqp_url: str) -> None:
    for name in ("a.jpg", "poison.jpg"):
        photos.add(name, color=(len(name) * 20, 0, 0))
    outbox.publish_pending(photos.db, broker_settings, library="photos", kinds=("cache",), topology=topology)
    args = [sys.executable, "-c", _KILLER, broker_settings.mongo_uri or "", broker_settings.database, amqp_url,
            topology.exchange.removesuffix("libwatch"), str(broker_settings.home), str(broker_settings.cache_dir)]
    codes = []
    for _ in range(4):
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
        codes.append(done.returncode)
        if done.returncode == 0:
            break
    # Killed in its batch, killed once more handling it alone, then rejected unread.
    assert codes == [3, 3, 0], done.stderr
    assert "a worker died while handling it" in done.stderr
    assert photos.states()["a.jpg"][0] == "done"
    assert len(drain(amqp_url, topology.dead_letter_queue)) == 1
    assert photos.db.deliveries.count_documents({}) == 0


def _rss_peak_kib(cli_env: dict[str, str], env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run `libwatch worker` under a parent that reports its children's peak RSS."""
    code = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
            "print(done.returncode, done.stderr[-2000:])")
    out = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "libwatch", "worker", *args],
                         env={**cli_env, **env}, capture_output=True, text=True, timeout=300, check=True).stdout
    peak, rest = out.split("\n", 1)
    return int(peak), rest


@pytest.mark.slow
def test_large_bodies_do_not_grow_the_workers_memory(photos: Photos, broker_settings: Settings, topology: Topology,
                                                     amqp_url: str, cli_env: dict[str, str]) -> None:
    _ready(photos, broker_settings, topology)
    env = _env(amqp_url, topology)
    baseline, rest = _rss_peak_kib(cli_env, env, "--idle-exit", "1", "--processes", "1")
    assert rest.startswith("0 "), rest
    for i in range(24):
        _raw(amqp_url, topology, "cache", bytes([65 + i % 26]) * (8 << 20), message_id=f"big{i}")
    peak, rest = _rss_peak_kib(cli_env, env, "--idle-exit", "1", "--processes", "1")
    assert rest.startswith("0 "), rest
    # 24 bodies of 8 MiB are 192 MiB (all of them held before: +200 MB); now a few at most, whatever the count.
    assert peak - baseline < 64 * 1024, (baseline, peak)
    assert _depth(amqp_url, topology.dead_letter_queue) == 24


def test_logged_message_fields_are_escaped_and_capped(photos: Photos, broker_settings: Settings,
                                                      topology: Topology, amqp_url: str,
                                                      libwatch: Callable[..., Any]) -> None:
    _ready(photos, broker_settings, topology)
    forged = "x\x1b]0;owned\x07\x1b[2J\nlibwatch: INFO: forged line\u202e"
    _raw(amqp_url, topology, "cache", b'{"schema": "' + b"\x1b[31m" * 2000 + b'"}', message_id=forged)
    done = libwatch("worker", "--idle-exit", "1", "--processes", "1", env=_env(amqp_url, topology))
    assert done.code == 0, done.stderr
    lines = done.stderr.splitlines()
    assert not [line for line in lines if line.startswith("libwatch: INFO: forged")]
    assert "\x1b" not in done.stderr and "\u202e" not in done.stderr and "\x07" not in done.stderr
    [rejected] = [line for line in lines if "rejected message" in line]
    assert "\\x1b" in rejected and "\\u202e" in rejected and len(rejected) < 1000


def test_start_line_heartbeat_and_json_run_id(photos: Photos, broker_settings: Settings, topology: Topology,
                                              amqp_url: str, cli_env: dict[str, str]) -> None:
    _ready(photos, broker_settings, topology)
    env = {**cli_env, **_env(amqp_url, topology)}
    worker = subprocess.Popen([sys.executable, "-m", "libwatch", "--json", "worker", "--idle-exit", "2.5",
                               "--processes", "1", "--heartbeat", "0.5", "--prefetch", "7"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    lines = err.splitlines()
    starts = [line for line in lines if "worker started" in line]
    assert len(starts) == 1 and starts[0].startswith("libwatch: INFO: ")
    queues = ", ".join(topology.queues.values())
    assert f"broker {mask_url(amqp_url)}, queues {queues}, prefetch 7, 1 render processes" in starts[0]
    assert "guest:guest" not in err
    beats = [line for line in lines if "worker alive" in line]
    assert len(beats) >= 3  # idle for 2.5 s after the work, a beat every 0.5 s
    assert any("2 done" in beat for beat in beats)
    doc = json.loads(out)
    run = photos.db.runs.find_one({"_id": doc["run_id"]})
    assert run is not None and run["job"] == "worker" and run["status"] == "succeeded"
    assert doc["counts"] == run["counts"] == {"received": 2, "done": 2}


def test_quiet_worker_logs_no_info(photos: Photos, topology: Topology, amqp_url: str,
                                   libwatch: Callable[..., Any]) -> None:
    done = libwatch("-q", "worker", "--idle-exit", "0.5", "--processes", "1", env=_env(amqp_url, topology))
    assert done.code == 0 and done.stderr == ""


def _wait_line(stream: Any, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if text in line:
            return
        if not line:
            raise AssertionError(f"stream ended before {text!r}")
    raise AssertionError(f"no {text!r} within {timeout} s")


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler (its SigCgt mask in /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@pytest.mark.slow
@pytest.mark.parametrize("moment", [0.0, 0.05, 0.2, 0.6, "started", "rendering"])
def test_sigterm_at_any_moment_exits_0(moment: float | str, photos: Photos, topology: Topology, amqp_url: str,
                                       cli_env: dict[str, str], libwatch: Callable[..., Any]) -> None:
    for i in range(6):
        photos.add(f"{i}.jpg", size=(1600, 1200), color=(i * 30, 0, 0))
    env = {**cli_env, **_env(amqp_url, topology)}
    assert libwatch("rebuild", "photos", env=env).code == 0
    worker = subprocess.Popen([sys.executable, "-m", "libwatch", "--json", "worker", "--processes", "1",
                               "--prefetch", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    if isinstance(moment, float):
        # Seconds after libwatch's first code ran (the interpreter's own start-up, tens of
        # milliseconds, or more on a loaded machine, comes before any handler can exist).
        deadline = time.monotonic() + 30
        while not _catches_sigterm(worker.pid) and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(moment)
    else:
        _wait_line(worker.stderr, "worker started")
        if moment == "rendering":
            deadline = time.monotonic() + 60
            while not list((Path(str(env["LIBWATCH_CACHE_DIR"]))).rglob("*.jpg")) and time.monotonic() < deadline:
                time.sleep(0.02)
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert "Traceback" not in err
    counts = json.loads(out)["counts"]
    run = photos.db.runs.find_one({"job": "worker"})
    assert run is not None and run["status"] == "succeeded"
    # Settled what it held: every message is done or back in its queue, none lost.
    done = sum(state == "done" for pair in photos.states().values() for state in pair)
    assert done == counts.get("done", 0)
    assert _depth(amqp_url, topology.queues["cache"]) + _depth(amqp_url, topology.queues["thumbnail"]) == 12 - done
