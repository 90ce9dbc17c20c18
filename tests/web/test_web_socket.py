"""Socket activation: `libwatch web` serves on the socket systemd passes (LISTEN_FDS), by the same rules."""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import start_web, stop_web, until

ACTIVATE = shutil.which("systemd-socket-activate")
pytestmark = pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed (package systemd)")


def _connect(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _activate(env: dict[str, str], listen: str) -> tuple[str, ...]:
    # systemd-socket-activate passes only the variables named with -E, as a unit passes its Environment=.
    passed = [f"-E{name}" for name in env if name.startswith(("LIBWATCH_", "PYTHON")) or name in ("PATH", "HOME")]
    return (str(ACTIVATE), "-l", listen, *passed)


def test_serves_on_the_socket_it_is_handed(cli_env: dict[str, str], photos: Path) -> None:
    port = _free_port()
    # --port is ignored: the inherited socket is what it serves
    server = start_web(cli_env, "--port", "1", wrapper=_activate(cli_env, f"127.0.0.1:{port}"),
                       ready=re.compile(r"Listening on (\S+) as 3"))
    try:
        # systemd-socket-activate starts the command on the first connection, as the socket unit does
        reply = server.get("/api/v1/libraries/photos")
        assert reply.status == 200, reply.text
        assert reply.json()["libraries"][0]["name"] == "photos"
        assert any(f"serving http://127.0.0.1:{port}/" in line for line in server.log)
        started = server.post("/api/v1/libraries/photos/run").json()
        assert started["via"] == "process"
    finally:
        log = stop_web(server)
    assert "authentication" in log


def test_an_inherited_public_socket_needs_a_secret(cli_env: dict[str, str]) -> None:
    port = _free_port()
    activated = subprocess.Popen([*_activate(cli_env, f"0.0.0.0:{port}"), sys.executable, "-m", "libwatch", "web"],
                                 env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        until(lambda: _connect(port))  # the first connection starts it
        _, stderr = activated.communicate(timeout=60)
    finally:
        if activated.poll() is None:
            activated.kill()
            activated.wait()
    assert activated.returncode == 2
    assert f"refusing to listen on 0.0.0.0:{port} without authentication" in stderr


def test_scans_started_from_the_page_do_not_inherit_the_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from libwatch.config import Settings
    from libwatch.web.controls import child_environment

    for name, value in (("LISTEN_FDS", "1"), ("LISTEN_PID", "1"), ("LISTEN_FDNAMES", "web"), ("LIBWATCH_HOME", "/x")):
        monkeypatch.setenv(name, value)
    env = child_environment(Settings(home=tmp_path, mongo_uri=None, amqp_url=None))
    assert not {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "LIBWATCH_MONGO_URI", "LIBWATCH_AMQP_URL"} & set(env)
    assert env["LIBWATCH_HOME"] == str(tmp_path)  # the server's effective settings, not its environment
