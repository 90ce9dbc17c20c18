"""The JSON API's documents are the CLI's `--json` documents, over real HTTP against the real store."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from .conftest import until
from support import write_image


def _cli(libwatch: Any, *args: str) -> Any:
    done = libwatch(*args, "--json")
    assert done.code == 0, done.stderr
    return json.loads(done.stdout)


def _without_clock(document: dict[str, Any]) -> dict[str, Any]:
    # `generated_at` is the moment each document was made: the one field that must differ.
    return {key: value for key, value in document.items() if key != "generated_at"}


def test_status_history_events_equal_the_cli_documents(web: Any, photos: Path, libwatch: Any) -> None:
    (photos / "e.jpg").unlink()
    write_image(photos / "2025/new.jpg", (70, 40))
    assert libwatch("scan", "photos").code == 0
    server = web()

    api = server.get("/api/v1/libraries/photos")
    assert api.status == 200 and api.headers["content-type"] == "application/json"
    cli = _cli(libwatch, "status", "photos")
    assert _without_clock(api.json()) == _without_clock(cli)
    assert api.json()["libraries"][0]["counts"]["files"] == 5

    assert _without_clock(server.get("/api/v1/libraries").json()) == _without_clock(_cli(libwatch, "status"))
    assert server.get("/api/v1/libraries/photos/history").json() == _cli(libwatch, "history", "photos")
    assert server.get("/api/v1/libraries/photos/history?limit=1&job=scan&status=succeeded").json() \
        == _cli(libwatch, "history", "photos", "--limit", "1", "--job", "scan", "--status", "succeeded")
    assert server.get("/api/v1/libraries/photos/events").json() == _cli(libwatch, "events", "photos")
    deleted = server.get("/api/v1/libraries/photos/events?type=deleted&type=added&since=1h&limit=3").json()
    assert deleted == _cli(libwatch, "events", "photos", "--type", "deleted", "--type", "added",
                           "--since", "1h", "--limit", "3")
    assert {event["type"] for event in deleted["events"]} <= {"deleted", "added"}
    assert any(event["path"] == "e.jpg" and event["type"] == "deleted" for event in deleted["events"])


def test_history_pages_follow_each_other(web: Any, photos: Path, libwatch: Any) -> None:
    for _ in range(3):
        assert libwatch("scan", "photos").code == 0
    server = web()
    every = _cli(libwatch, "history", "photos", "--limit", "4")["runs"]
    pages = [server.get(f"/api/v1/libraries/photos/history?limit=2&page={page}").json()["runs"] for page in (1, 2, 3)]
    assert pages[0] + pages[1] == every
    assert pages[2] == []


def test_errors_are_json_documents_with_the_cli_exit_code(web: Any, photos: Path) -> None:
    server = web()
    missing = server.get("/api/v1/libraries/nope")
    assert missing.status == 404
    assert missing.json()["error"]["exit_code"] == 2 and "nope" in missing.json()["error"]["message"]
    bad_type = server.get("/api/v1/libraries/photos/events?type=exploded")
    assert bad_type.status == 400 and "exploded" in bad_type.json()["error"]["message"]
    bad_since = server.get("/api/v1/libraries/photos/events?since=yesterday-ish")
    assert bad_since.status == 400 and "bad time" in bad_since.json()["error"]["message"]


def test_openapi_document_lists_the_api(web: Any) -> None:
    document = web().get("/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert {"/api/v1/libraries", "/api/v1/libraries/{name}", "/api/v1/libraries/{name}/history",
            "/api/v1/libraries/{name}/events", "/api/v1/libraries/{name}/run",
            "/api/v1/libraries/{name}/schedule"} <= set(document["paths"])
    assert not any(path == "/" or path.startswith("/libraries") for path in document["paths"])


def test_broker_document_shows_the_real_queues_and_workers(web: Any, photos: Path, libwatch: Any, amqp_url: str,
                                                           topology: Any, cli_env: dict[str, str]) -> None:
    env = {"LIBWATCH_AMQP_URL": amqp_url, "LIBWATCH_AMQP_PREFIX": topology.exchange.removesuffix("libwatch")}
    assert libwatch("rebuild", "photos", env=env).code == 0  # publishes the ten pending requests
    server = web(env=env)
    document = server.get("/api/v1/broker").json()
    assert document["error"] is None
    assert document["broker"] == "amqp://guest:***@127.0.0.1:5672/%2F"
    assert document["queues"]["cache"] == {"messages": 5, "consumers": 0}
    assert document["queues"]["thumbnail"] == {"messages": 5, "consumers": 0}
    assert document["workers"] == []

    worker = subprocess.Popen([sys.executable, "-m", "libwatch", "worker", "--processes", "1"],
                              env={**cli_env, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def consuming() -> Any:
            seen = server.get("/api/v1/broker").json()
            return seen if seen["queues"]["cache"]["consumers"] == 1 and seen["workers"] else None

        seen = until(consuming)
        assert seen["queues"]["thumbnail"]["consumers"] == 1
        assert seen["workers"][0]["status"] == "running" and seen["workers"][0]["pid"] == worker.pid
        done = until(lambda: server.get("/api/v1/broker").json()["queues"]["cache"]["messages"] == 0 or None)
        assert done
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    after = server.get("/api/v1/broker").json()
    assert after["queues"]["cache"]["consumers"] == 0
    assert after["workers"][0]["status"] == "succeeded" and after["workers"][0]["pid"] == worker.pid


def test_failed_equals_the_cli_document_and_shows_on_the_page(web: Any, photos: Path, libwatch: Any) -> None:
    (photos / "2025" / "broken.jpg").write_bytes(b"this is no JPEG at all" * 10)
    assert libwatch("scan", "photos").code in (0, 3)
    server = web()
    api = server.get("/api/v1/libraries/photos/failed")
    assert api.status == 200
    cli = _cli_any(libwatch, "failed", "photos")
    assert api.json() == cli
    assert any(failure["path"] == "2025/broken.jpg" for failure in cli["failures"])
    assert server.get("/api/v1/libraries/photos/failed?limit=1").json() == _cli_any(libwatch, "failed", "photos",
                                                                                    "--limit", "1")
    page = server.get("/libraries/photos").text
    reason = next(f["reason"] for f in cli["failures"] if f["path"] == "2025/broken.jpg")
    assert "2025/broken.jpg" in page.split('id="failed"')[1] and reason.split("<")[0][:30] in page


def _cli_any(libwatch: Any, *args: str) -> Any:
    done = libwatch(*args, "--json")
    assert done.code in (0, 3), done.stderr
    return json.loads(done.stdout)
