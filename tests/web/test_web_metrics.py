"""/metrics and `libwatch metrics --textfile`, read back by prometheus_client's own parser."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from support import write_image


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _expected(status: dict[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What the metrics must say, read from the `status --json` document."""
    from datetime import datetime

    lib = status["libraries"][0]
    name = ("library", lib["name"])
    scan = lib["last_scan"]
    expected = {
        ("libwatch_files", (name, ("state", "present"))): lib["counts"]["files"],
        ("libwatch_files", (name, ("state", "missing"))): lib["counts"]["missing"],
        ("libwatch_last_scan_timestamp_seconds", (name,)):
            datetime.fromisoformat(scan["started_at"].replace("Z", "+00:00")).timestamp(),
        ("libwatch_last_scan_duration_seconds", (name,)): scan["duration_s"],
        ("libwatch_last_scan_result", (name, ("result", scan["status"]))): 1.0,
        ("libwatch_failed_renders", (name,)): lib["rebuilds"]["failed"],
    }
    expected |= {("libwatch_last_scan_changes", (name, ("type", kind))): count
                 for kind, count in lib["last_changes"].items()}
    expected |= {("libwatch_rebuilds", (name, ("state", state))): count for state, count in lib["rebuilds"].items()}
    return expected


def test_metrics_equal_what_status_reports(web: Any, photos: Path, libwatch: Any) -> None:
    (photos / "e.jpg").unlink()
    write_image(photos / "2025/new.jpg", (70, 40))
    write_image(photos / "2025/other.jpg", (20, 40))
    assert libwatch("scan", "photos").code == 0
    status = json.loads(libwatch("status", "photos", "--json").stdout)
    assert status["libraries"][0]["last_changes"]["added"] == 2
    assert status["libraries"][0]["counts"]["missing"] == 1

    reply = web().get("/metrics")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = _samples(reply.text)
    for key, value in _expected(status).items():
        assert samples[key] == value, key  # ms precision of the JSON timestamp is exact in a float
    others = [key for key in samples if key[0] == "libwatch_last_scan_result" and samples[key] == 1.0]
    assert len(others) == 1


def test_textfile_holds_the_same_metrics_written_atomically(tmp_path: Path, photos: Path, libwatch: Any,
                                                            web: Any) -> None:
    folder = tmp_path / "textfile"
    folder.mkdir()
    (folder / "libwatch.prom").write_text("stale\n")
    done = libwatch("metrics", "--textfile", str(folder))
    assert done.code == 0, done.stderr
    assert done.stdout == ""
    assert os.listdir(folder) == ["libwatch.prom"]  # no temporary file left behind
    written = _samples((folder / "libwatch.prom").read_text())
    status = json.loads(libwatch("status", "photos", "--json").stdout)
    assert all(written[key] == value for key, value in _expected(status).items())
    assert written == _samples(web().get("/metrics").text) == _samples(libwatch("metrics").stdout)

    missing = libwatch("metrics", "--textfile", str(tmp_path / "nowhere"))
    assert missing.code == 2 and missing.stderr.strip().endswith("no such folder")

    said = libwatch("--json", "metrics", "--textfile", str(folder))  # --json: one document on every path
    assert said.code == 0 and json.loads(said.stdout) == {"textfile": str(folder / "libwatch.prom"),
                                                          "status": "success", "problems": []}
    refused = libwatch("metrics", "--json")
    assert refused.code == 2 and json.loads(refused.stdout)["error"]["kind"] == "UsageError"
    assert "status --json" in refused.stderr and "# HELP" not in refused.stdout


def test_queue_depths_in_metrics(web: Any, photos: Path, libwatch: Any, amqp_url: str, topology: Any) -> None:
    env = {"LIBWATCH_AMQP_URL": amqp_url, "LIBWATCH_AMQP_PREFIX": topology.exchange.removesuffix("libwatch")}
    assert libwatch("rebuild", "photos", env=env).code == 0
    samples = _samples(web(env=env).get("/metrics").text)
    assert samples[("libwatch_broker_up", ())] == 1.0
    assert samples[("libwatch_queue_messages", (("queue", "cache"),))] == 5
    assert samples[("libwatch_queue_messages", (("queue", "thumbnail"),))] == 5
    assert samples[("libwatch_queue_messages", (("queue", "dead"),))] == 0
    assert samples[("libwatch_rebuilds", (("library", "photos"), ("state", "queued")))] == 10


def test_metrics_with_the_broker_down_answer_and_flag_it(web: Any, photos: Path, libwatch: Any,
                                                         tmp_path: Path) -> None:
    down = {"LIBWATCH_AMQP_URL": "amqp://guest:s3cret-pass@127.0.0.1:1/%2F"}  # nothing listens on port 1
    status = json.loads(libwatch("status", "photos", "--json").stdout)
    server = web(env=down)
    reply = server.get("/metrics")
    assert reply.status == 200, reply.text
    samples = _samples(reply.text)
    assert samples[("libwatch_broker_up", ())] == 0.0  # flagged: the broker did not answer
    assert not [key for key in samples if key[0] in ("libwatch_queue_messages", "libwatch_queue_consumers")]
    assert all(samples[key] == value for key, value in _expected(status).items())  # the catalog's metrics stay
    assert "s3cret-pass" not in reply.text

    folder = tmp_path / "textfile"
    folder.mkdir()
    done = libwatch("metrics", "--textfile", str(folder), env=down)
    assert done.code == 0, done.stderr
    assert "Traceback" not in done.stderr and "s3cret-pass" not in done.stderr
    assert _samples((folder / "libwatch.prom").read_text()) == samples
    printed = libwatch("metrics", env=down)
    assert printed.code == 0 and _samples(printed.stdout) == samples
    log = "".join(server.log)
    assert "Traceback" not in log and "s3cret-pass" not in log
