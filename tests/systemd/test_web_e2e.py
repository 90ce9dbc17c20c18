"""The management page under a real systemd (harness.sh): `units install --web`, socket activation,
the unprivileged service, "run now" and the metrics step after each scan, as the README describes."""
from __future__ import annotations

import json
import shlex
from typing import Any, Final

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_e2e import ROOT, image, install_libwatch, shell, wait_for

from systemd_box import Container

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

WEB: Final = "libwatch-web.service"
TEXTFILE: Final = "/var/lib/node-exporter"


def http(box: Container, method: str, path: str) -> Any:
    """A request from inside the container to the page on its loopback; the JSON document answered."""
    done = box.run("curl", "-sS", "--max-time", "60", "-X", method, f"http://127.0.0.1:8470{path}", timeout=90)
    return json.loads(done.stdout)


def test_the_management_page_under_systemd(container: Container) -> None:
    box = container
    lib = box.share / "photos"
    image(lib / "2024" / "trip" / "a.png", "red")
    box.run("sh", "-c", f"mkdir -p {ROOT} && mount --bind {box.inside(lib)} {ROOT}")
    install_libwatch(box)
    shell(box, "ln -s /opt/libwatch/bin/libwatch /usr/local/bin/libwatch")
    shell(box, f"mkdir -p {TEXTFILE} && chown libwatch {TEXTFILE} || (useradd -r libwatch; chown libwatch {TEXTFILE})")
    done = shell(box, f"libwatch units install --web --metrics-textfile {TEXTFILE}", check=False)
    assert done.returncode == 0 and "enabled libwatch-web.socket" in done.stdout, done.stdout + done.stderr
    shell(box, f"libwatch library add photos {ROOT}")
    shell(box, "libwatch units install photos")
    assert box.run("systemctl", "is-active", "libwatch-web.socket").stdout.strip() == "active"
    assert box.run("systemctl", "is-active", WEB, check=False).stdout.strip() == "inactive"  # until a connection

    # The first connection starts the service, which answers with `status --json`'s document.
    api = http(box, "GET", "/api/v1/libraries/photos")
    cli = json.loads(shell(box, "libwatch status photos --json").stdout)
    assert api["libraries"][0]["schedule"] == cli["libraries"][0]["schedule"], (api, cli)
    assert ({k: v for k, v in api.items() if k != "generated_at"}
            == {k: v for k, v in cli.items() if k != "generated_at"})
    assert api["libraries"][0]["schedule"]["state"] == "scheduled"  # next run from systemd
    pid = box.run("systemctl", "show", "-p", "MainPID", "--value", WEB).stdout.strip()
    uid = box.run("awk", "/^Uid:/ {print $2}", f"/proc/{pid}/status").stdout.strip()
    assert box.run("id", "-u", "libwatch").stdout.strip() == uid != "0"
    exposure = box.run("systemd-analyze", "security", "--no-pager", WEB).stdout
    assert float(exposure.rsplit("Overall exposure level for libwatch-web.service: ", 1)[1].split()[0]) <= 2.5

    # Run now: the library's scan unit (polkit lets the service user start it), or a child scan
    # of the web service where systemd refused; either way a manual scan lands in history, and the
    # metrics step writes the textfile after a unit's scan.
    # (the scan unit records its runs with its own trigger word, `timer`)
    before = len(http(box, "GET", "/api/v1/libraries/photos/history?job=scan")["runs"])
    started = http(box, "POST", "/api/v1/libraries/photos/run")
    assert started["via"] in ("unit", "process"), started

    def scanned() -> bool:
        runs = http(box, "GET", "/api/v1/libraries/photos/history?job=scan")["runs"]
        return len(runs) > before and runs[0]["status"] == "succeeded"
    wait_for("the scan started from the page", scanned, timeout=60)
    if started["via"] == "process":
        assert started["problem"], started
        shell(box, "systemctl start libwatch-scan@photos.service")  # a unit scan, for the metrics step
    wait_for("the metrics textfile", lambda: box.run("test", "-s", f"{TEXTFILE}/libwatch.prom",
                                                     check=False).returncode == 0, timeout=60)
    text = box.run("cat", f"{TEXTFILE}/libwatch.prom").stdout
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("libwatch_files", (("library", "photos"), ("state", "present")))] == 1
    assert shlex.quote(TEXTFILE) in box.run("systemctl", "cat", "libwatch-scan@photos.service").stdout
