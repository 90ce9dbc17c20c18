"""The README's deployment under a real systemd (harness.sh), step by step, as an admin would do it.

libwatch is installed under /opt/libwatch (a venv that no sandbox hides), then, from a root
shell: `libwatch units install --worker`, `libwatch library add`, `libwatch units install
photos`. The timer, the watcher and the worker then share one catalog through the store
service while running as the unprivileged `libwatch` user, and the library stays untouched.
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
import site
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pytest
from PIL import Image

from systemd_box import Container

pytestmark = [pytest.mark.systemd, pytest.mark.slow, pytest.mark.broker]

PROJECT: Final = Path(__file__).resolve().parents[2]
LIBRARY: Final = "photos"
ROOT: Final = "/srv/photos"
SCHEDULE: Final = "*:*:0/4"
STEP_TIMEOUT: Final = 30.0
SCAN: Final = f"libwatch-scan@{LIBRARY}.service"
WATCH: Final = f"libwatch-watch@{LIBRARY}.service"
FINISHED: Final = re.compile(r"^(?:\S+: )?(Deactivated successfully|Failed with result)", re.M)
# A root login shell: no LIBWATCH_* of the test process, root's HOME.
SHELL_ENV: Final = ("env", "-i", "HOME=/root", "LANG=C.UTF-8",
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


def image(path: Path, colour: str) -> None:
    """A real PNG, written to a hidden name and renamed in place as careful writers do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    Image.new("RGB", (64, 48), colour).save(tmp, format="PNG")
    tmp.rename(path)


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``root``: size, mtime and SHA-256 of its content."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns,
                                             hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def wait_for(what: str, check: Callable[[], bool], timeout: float = STEP_TIMEOUT) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


def shell(box: Container, command: str, *, check: bool = True, env: str = "") -> subprocess.CompletedProcess[str]:
    """``command`` in a root shell inside the container, as the README's lines are typed."""
    return box.run(*SHELL_ENV, *shlex.split(env), "sh", "-c", command, check=check, timeout=120)


def finished_runs(box: Container, unit: str) -> int:
    """Completed activations of ``unit``; a failed one fails the test with its journal."""
    journal = box.journal(unit)
    if "Failed with result" in journal:
        pytest.fail(f"{unit} failed:\n{journal[-3000:]}")
    return len(FINISHED.findall(journal))


def active_state(box: Container, unit: str) -> str:
    return box.run("systemctl", "show", "-p", "ActiveState", "--value", unit).stdout.strip()


def catalog(box: Container, code: str) -> Any:
    """Run ``code`` (which prints JSON) with the installed libwatch, reading the host's settings as a shell does."""
    program = f"import json\nfrom libwatch import config\nfrom libwatch.catalog.store import connect\n" \
              f"with connect(config.load()) as c:\n    db = c.db\n    {code}\n"
    return json.loads(shell(box, f"/opt/libwatch/bin/python -c {shlex.quote(program)}").stdout)


def install_libwatch(box: Container) -> None:
    """Test-only stand-in for `pipx install --global libwatch` (the container has no network).

    A venv of the system's Python under /opt/libwatch with this checkout's dependencies copied in and
    libwatch itself built from a copy of the source: nothing in it points into the checkout or /root.
    """
    packages = site.getsitepackages()[0]
    target = f"/opt/libwatch/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
    box.run("sh", "-c", " && ".join([
        "/usr/bin/python3 -m venv --without-pip /opt/libwatch",
        f"cp -a {shlex.quote(packages)}/. {target}/",
        f"rm -rf {target}/__editable__* {target}/libwatch-*.dist-info",
        f"mkdir /tmp/libwatch-src && "
        f"cp -a {PROJECT}/pyproject.toml {PROJECT}/README.md {PROJECT}/libwatch /tmp/libwatch-src/",
        "/opt/libwatch/bin/python -m pip install -q --no-deps --no-index --no-build-isolation /tmp/libwatch-src",
        "rm -rf /tmp/libwatch-src",
    ]), timeout=300)


@pytest.fixture
def broker(container: Container, amqp_url: str) -> Iterator[tuple[str, str]]:
    """The host's RabbitMQ on the container's loopback (its network namespace is empty): a socat
    bridge through a Unix socket in the share. Yields (URL inside, topology prefix); the test's
    queues are deleted afterwards."""
    from libwatch.bus import Topology

    from broker import delete_topology

    parts = urlsplit(amqp_url)
    sock = container.share / "amqp.sock"
    bridge = subprocess.Popen(["socat", f"UNIX-LISTEN:{sock},fork,mode=666",
                               f"TCP:{parts.hostname}:{parts.port or 5672}"])
    prefix = f"e2e-{uuid.uuid4().hex[:8]}."
    try:
        container.run("systemd-run", "--unit=e2e-broker-bridge", "socat",
                      "TCP-LISTEN:5672,bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{container.inside(sock)}")
        yield amqp_url.replace(parts.netloc.split("@")[-1], "127.0.0.1:5672"), prefix
    finally:
        bridge.terminate()
        bridge.wait(timeout=10)
        delete_topology(amqp_url, Topology.prefixed(prefix))


def test_the_readme_deployment_works_as_a_whole(container: Container, broker: tuple[str, str]) -> None:
    box, (amqp_url, prefix) = container, broker
    lib = box.share / "photos"
    image(lib / "2024" / "trip" / "a.png", "red")
    lib.chmod(0o777)  # writable by anyone: only the sandbox keeps the services from writing
    box.run("sh", "-c", f"mkdir -p {ROOT} && mount --bind {box.inside(lib)} {ROOT}")
    install_libwatch(box)
    # Test-only drop-ins: the test's own queues on the shared broker; a precise timer without spread.
    for unit in ("libwatch-worker.service", "libwatch-scan@.service", "libwatch-watch@.service"):
        box.run("sh", "-c", f"mkdir -p /etc/systemd/system/{unit}.d && printf '[Service]\\nEnvironment="
                            f"LIBWATCH_AMQP_PREFIX={prefix}\\n' > /etc/systemd/system/{unit}.d/zz-e2e.conf")
    box.run("sh", "-c", f"mkdir -p /etc/systemd/system/libwatch-scan@{LIBRARY}.timer.d && printf '[Timer]\\n"
                        "Persistent=false\\nAccuracySec=100ms\\nRandomizedDelaySec=0\\n' "
                        f"> /etc/systemd/system/libwatch-scan@{LIBRARY}.timer.d/zz-e2e-fast.conf")
    env = f"LIBWATCH_AMQP_PREFIX={prefix}"

    # ---- The README's walk-through, line by line.
    shell(box, "ln -s /opt/libwatch/bin/libwatch /usr/local/bin/libwatch")
    dry = shell(box, f"LIBWATCH_AMQP_URL={shlex.quote(amqp_url)} libwatch units install --worker --dry-run", env=env)
    assert "+++ /etc/libwatch/config.toml (new)" in dry.stdout and "\n+amqp_url = " in dry.stdout
    done = shell(box, f"LIBWATCH_AMQP_URL={shlex.quote(amqp_url)} libwatch units install --worker", env=env,
                 check=False)
    assert done.returncode == 0, done.stderr + box.journal("libwatch-store.service")[-3000:]
    assert "problem:" not in done.stderr, done.stderr
    assert "enabled libwatch-store.service" in done.stdout and "enabled libwatch-worker.service" in done.stdout
    shell(box, f"libwatch library add {LIBRARY} {ROOT} --schedule '{SCHEDULE}'", env=env)
    done = shell(box, f"libwatch units install {LIBRARY}", env=env)
    assert f"enabled libwatch-scan@{LIBRARY}.timer" in done.stdout, done.stdout + done.stderr
    assert "warning: the shell's settings differ" not in done.stderr, done.stderr
    config_toml = box.run("stat", "-c", "%a %U %G", "/etc/libwatch/config.toml").stdout.split()
    assert config_toml == ["640", "root", "libwatch"]
    # The store requires its password, which the settings file does not hold: the services (the
    # libwatch user) and root read it from the store's URI file, nobody else can.
    settings_text = box.run("cat", "/etc/libwatch/config.toml").stdout
    assert 'mongo_uri_file = "/var/lib/libwatch/store.uri"' in settings_text and "mongo_uri =" not in settings_text
    for secret in ("/var/lib/libwatch/store.uri", "/var/lib/libwatch/store-credentials.json"):
        assert box.run("stat", "-c", "%a %U", secret).stdout.split() == ["600", "libwatch"]
        assert box.run("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat", secret,
                       check=False).returncode != 0
    as_libwatch = box.run("setpriv", "--reuid=libwatch", "--regid=libwatch", "--clear-groups",
                          "/opt/libwatch/bin/libwatch", "library", "list", check=False,
                          env={"LIBWATCH_CONFIG": "/etc/libwatch/config.toml", "PATH": "/usr/bin:/bin"})
    assert as_libwatch.returncode == 0, as_libwatch.stderr

    # 1. The timer's scan runs while the worker runs (before: the worker held the embedded store, and
    #    every scan exited 75, counted as success).
    assert active_state(box, "libwatch-worker.service") == "active"
    wait_for("a timer-driven scan", lambda: finished_runs(box, SCAN) >= 1)
    box.run("systemctl", "stop", f"libwatch-scan@{LIBRARY}.timer")  # so path runs are unambiguous
    wait_for("the timer's scan to end", lambda: active_state(box, SCAN) != "activating")
    started = time.monotonic()
    status = json.loads(shell(box, f"libwatch status {LIBRARY} --json").stdout)
    assert time.monotonic() - started < 10  # before: 30 s waiting for the store the worker held, then 75
    last_scan = status["libraries"][0]["last_scan"]
    assert (last_scan["trigger"], last_scan["status"]) == ("timer", "succeeded"), last_scan

    # 2. A new image in a watched folder, and a new album inside an intermediate folder (2024 holds
    #    no image itself, only trip/): both start a path scan.
    image(lib / "2024" / "trip" / "b.png", "green")
    wait_for("a path scan of b.png", lambda: finished_runs(box, WATCH) >= 1)
    image(lib / "2024" / "party" / "c.png", "blue")
    wait_for("a path scan of the new album", lambda: finished_runs(box, WATCH) >= 2)
    paths_conf = box.run("cat", f"/etc/systemd/system/libwatch-watch@{LIBRARY}.path.d/paths.conf").stdout
    assert f"PathChanged={ROOT}/2024/party\n" in paths_conf, box.journal(WATCH)[-3000:]  # refreshed after the scan
    image(lib / "2024" / "party" / "d.png", "white")
    wait_for("a path scan started by the new album", lambda: finished_runs(box, WATCH) >= 3)
    written = snapshot(lib)  # all four images, as this test wrote them

    # 3. The worker renders every image, from the shared catalog.
    def rendered() -> bool:
        states = catalog(box, "print(json.dumps([{k: f['rebuild'].get(k) for k in ('cache', 'thumbnail')} "
                              "for f in db.files.find({'library': 'photos'})]))")
        return len(states) == 4 and all(s.get("cache") == "done" and s.get("thumbnail") == "done" for s in states)
    wait_for("the worker to render the four images", rendered)
    runs = catalog(box, "print(json.dumps([[r['trigger'], r['status']] for r in db.runs.find("
                        "{'library': 'photos', 'job': 'scan'})]))")
    assert ["timer", "succeeded"] in runs and ["path", "succeeded"] in runs, runs
    events = catalog(box, "print(json.dumps(sorted(e['path'] for e in db.events.find({'type': 'added'}))))")
    assert events == ["2024/party/c.png", "2024/party/d.png", "2024/trip/a.png", "2024/trip/b.png"]
    cached = box.run("find", "/var/cache/libwatch", "-type", "f", "-user", "libwatch").stdout.split()
    assert len(cached) >= 8, cached

    # 4. Unprivileged, and the library out of reach: the worker is the libwatch user and cannot
    #    write into the root (world-writable as it is) because its sandbox mounts it read-only.
    pid = box.run("systemctl", "show", "-p", "MainPID", "--value", "libwatch-worker.service").stdout.strip()
    uid = box.run("awk", "/^Uid:/ {print $2}", f"/proc/{pid}/status").stdout.strip()
    assert box.run("id", "-u", "libwatch").stdout.strip() == uid != "0"
    def as_worker(*command: str) -> subprocess.CompletedProcess[str]:
        """``command`` as the worker's user in the worker's mount namespace (its sandbox's view)."""
        return box.run("nsenter", "-t", pid, "-m", "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                       *command, check=False)
    for folder in (ROOT, "/var/lib/libwatch"):  # the library, and the state: the worker writes only the cache
        probe = as_worker("touch", f"{folder}/written-by-the-worker")
        assert probe.returncode != 0 and "Read-only file system" in probe.stderr, (folder, probe.stderr)
    assert as_worker("touch", "/var/cache/libwatch/written-by-the-worker").returncode == 0
    box.run("rm", "/var/cache/libwatch/written-by-the-worker")
    owners = set(box.run("find", "/var/lib/libwatch", "-printf", "%u\\n").stdout.split())
    assert owners == {"libwatch"}, owners
    assert snapshot(lib) == written  # nothing added, changed or touched by any service
    assert sorted(written) == ["2024/party/c.png", "2024/party/d.png", "2024/trip/a.png", "2024/trip/b.png"]

    # 5. A scan that gives up for another reason than another scan fails its unit: here the library's
    #    disk is unmounted, leaving an empty folder (exit 74; before, every give-up counted as success).
    box.run("umount", ROOT)
    started = box.run("systemctl", "start", SCAN, check=False, timeout=120)
    assert box.run("systemctl", "show", "-p", "Result", "--value", SCAN).stdout.strip() == "exit-code", \
        started.stderr + box.journal(SCAN)[-2000:]
    assert "status=74" in box.journal(SCAN), box.journal(SCAN)[-2000:]
