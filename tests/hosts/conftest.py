"""Simulated hosts: network namespaces joined to the root namespace by veth pairs, each with its hostname.

The catalog (the session's SecantusDB server) and RabbitMQ listen on the root namespace's
loopback. A TCP relay in the test process listens on the root side of every veth pair and
forwards to them, so the hosts reach both at the same address, as machines on a LAN reach
their database and broker. The relay's connections come from loopback, which is also why
RabbitMQ's `guest` user (loopback only) can be used here.

Needs root, `ip netns` and `unshare`; skipped with the reason elsewhere, and a failure instead
under LIBWATCH_REQUIRE_NETNS=1 (set by .ci/run).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pytest

from support import unavailable

# A /30 per host out of a block that nothing on this machine uses; only these namespaces hold it.
SUBNET = "10.231.{host}.{end}"


@dataclass(frozen=True)
class Host:
    """One simulated machine: its namespace, hostname, its address and the root side's (where services are)."""

    netns: str
    hostname: str
    address: str
    gateway: str

    def run(self, argv: list[str], env: Mapping[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run argv on this host (its network, hostname and mounts) and wait for it."""
        return subprocess.run(self._wrap(argv), env=dict(env), capture_output=True, text=True, timeout=timeout)

    def start(self, argv: list[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
        """Start argv on this host in the background (its own process group, so a kill reaches it all)."""
        return subprocess.Popen(self._wrap(argv), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)

    def _wrap(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c",
                f"hostname {self.hostname} && exec \"$@\"", "host", *argv]


def _missing_requirement() -> str | None:
    if os.geteuid() != 0:
        return "simulated hosts need root (network namespaces)"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"simulated hosts need `{tool}`"
    probe = f"lwprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


@pytest.fixture(scope="module")
def namespaces_available() -> None:
    reason = _missing_requirement()
    if reason is None:
        return
    unavailable(reason, "LIBWATCH_REQUIRE_NETNS")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def simulated_host(index: int, hostname: str) -> Iterator[Host]:
    """A namespace `hostname` with a veth pair to the root namespace; removed afterwards."""
    tag = uuid.uuid4().hex[:6]
    netns, outer, inner = f"lw{tag}{index}", f"lwo{tag}{index}", f"lwi{tag}{index}"
    gateway, address = SUBNET.format(host=index, end=1), SUBNET.format(host=index, end=2)
    _ip("netns", "add", netns)
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", netns)
        _ip("addr", "add", f"{gateway}/30", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("-n", netns, "addr", "add", f"{address}/30", "dev", inner)
        _ip("-n", netns, "link", "set", inner, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        yield Host(netns, hostname, address, gateway)
    finally:
        subprocess.run(["ip", "link", "delete", outer], capture_output=True)
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True)


class Relay:
    """TCP relays from (address, port) on the root side of the veth pairs to 127.0.0.1 ports, in one thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.base_events.Server] = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def add(self, address: str, target_port: int) -> int:
        """Listen on `address` (a free port); forward each connection to 127.0.0.1:`target_port`. Returns the port."""
        future = asyncio.run_coroutine_threadsafe(self._listen(address, target_port), self._loop)
        server = future.result(timeout=10)
        self._servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def _listen(self, address: str, target_port: int) -> asyncio.base_events.Server:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            with contextlib.suppress(OSError):
                writer.close()

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

        return await asyncio.start_server(connected, address, 0)

    def close(self) -> None:
        for server in self._servers:
            self._loop.call_soon_threadsafe(server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@pytest.fixture
def relay() -> Iterator[Relay]:
    made = Relay()
    yield made
    made.close()


def libwatch_argv(*args: str) -> list[str]:
    """The `libwatch` command as every host runs it (the test's interpreter and checkout)."""
    return [sys.executable, "-m", "libwatch", *args]
