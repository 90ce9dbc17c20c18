"""A real `libwatch web` over real HTTP: a subprocess on a free port, this test's catalog behind it."""
from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support import tree

SERVING = re.compile(r"serving (http://\S+/)")


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class Server:
    """A running `libwatch web`: its base URL, its process and what it printed on stderr."""

    url: str
    process: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)

    def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                data: bytes | None = None) -> Reply:
        sent = urllib.request.Request(self.url.rstrip("/") + path, method=method, data=data,
                                      headers=dict(headers or {}))
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(sent, timeout=60) as answer:
                return Reply(answer.status, dict(answer.headers), answer.read())
        except urllib.error.HTTPError as error:
            return Reply(error.code, dict(error.headers), error.read())

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: Mapping[str, str] | None = None, **kwargs: Any) -> Reply:
        data = urllib.parse.urlencode(form or {}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", **(kwargs.pop("headers", None) or {})}
        return self.request("POST", path, data=data, headers=headers, **kwargs)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def until(check: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll `check` until it returns something true (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s")


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def start_web(env: Mapping[str, str], *args: str, timeout: float = 30, wrapper: tuple[str, ...] = (),
              ready: re.Pattern[str] = SERVING) -> Server:
    """Start `[WRAPPER] libwatch web ARGS`; wait for the line `ready` finds the URL in.

    A thread keeps reading stderr.
    """
    process = subprocess.Popen([*wrapper, sys.executable, "-m", "libwatch", "web", *args], env=dict(env), text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if ready.search(line):
                started.set()
        started.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not started.wait(0.1) and time.monotonic() < deadline:
        pass
    found = next((m for line in lines if (m := ready.search(line))), None)
    if found is None:
        process.kill()
        process.wait()
        raise AssertionError(f"libwatch web did not start (exit {process.poll()}): {''.join(lines)}")
    url = found.group(1)
    return Server(url if url.startswith("http") else f"http://{url}/", process, lines)


def stop_web(server: Server) -> str:
    """Stop the server with SIGTERM (as systemd does); returns everything it printed on stderr."""
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    time.sleep(0.1)  # the reader thread drains what is left
    return "".join(server.log)


@pytest.fixture
def web(cli_env: dict[str, str]) -> Iterator[Any]:
    """Start servers for this test's catalog: web(env={...}, args=(...)); all are stopped afterwards."""
    started: list[Server] = []

    def start(*args: str, env: Mapping[str, str] | None = None) -> Server:
        server = start_web({**cli_env, **(env or {})}, "--port", "0", *args)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            stop_web(server)


@pytest.fixture
def photos(tmp_path: Path, libwatch: Any) -> Path:
    """A library `photos` of five real images in two albums, scanned once."""
    root = tree(tmp_path / "photos", {"2024/trip/a.jpg": (64, 48), "2024/trip/b.jpg": (80, 60),
                                      "2024/party/c.png": (32, 32), "2025/d.jpg": (50, 50), "e.jpg": (40, 30)})
    assert libwatch("library", "add", "photos", str(root)).code == 0
    done = libwatch("scan", "photos")
    assert done.code == 0, done.stderr
    return root
