"""Every `--json` document's keys, pinned (issue 15: "contract tests pin each document's keys").

The scan, status, history, events, failed, doctor and error documents are pinned beside
their features (tests/scan, tests/admin, tests/cli/test_views.py, test_errors_json.py);
these are the rest: the library commands, a skipped scan, `scan --all`, cleanup, rebuild,
the worker, `units status`, and a broker that is down on every command that needs it.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support import tree

SETTINGS_KEYS = {"name", "path", "link", "include", "exclude", "default_excludes", "dropped_excludes", "compare",
                 "hidden", "follow_symlinks", "cross_mounts", "schedule", "watch", "rebuild", "retention_days",
                 "max_delete", "created_at", "state", "applied_default_excludes"}
RESULT_KEYS = {"status", "problems"}
SKIPPED_SCAN_KEYS = {"library", "root", "run_id", "dry_run", "skipped_run", "counts", "changes", "skipped", "errors",
                     "rebuild", *RESULT_KEYS}
DOWN = {"LIBWATCH_AMQP_URL": "amqp://guest:s3cret@127.0.0.1:1/%2F"}  # nothing listens on port 1


def _json(libwatch: Callable[..., Any], *args: str, code: int = 0, env: dict[str, str] | None = None) -> Any:
    done = libwatch("--json", *args, env=env)
    assert done.code == code, (args, done.stdout, done.stderr)
    return json.loads(done.stdout)  # exactly one document: json.loads refuses anything after it


@pytest.fixture
def photos(libwatch: Callable[..., Any], tmp_path: Path) -> Path:
    root = tree(tmp_path / "photos", {"2024/a.jpg": (8, 8), "b.jpg": (9, 9)})
    assert set(_json(libwatch, "library", "add", "photos", str(root))) == SETTINGS_KEYS | RESULT_KEYS
    return root


def test_library_documents(libwatch: Callable[..., Any], photos: Path) -> None:
    shown = _json(libwatch, "library", "show", "photos")
    assert set(shown) == SETTINGS_KEYS | {"counts"} | RESULT_KEYS
    assert set(shown["counts"]) == {"files", "missing", "collections"}
    assert set(shown["schedule"]) == {"on_calendar", "enabled", "paused"} and set(shown["watch"]) == {"enabled"}
    assert set(shown["rebuild"]) == {"cache", "thumbnails"}
    listed = _json(libwatch, "library", "list")
    assert set(listed) == {"libraries"} | RESULT_KEYS
    assert [set(lib) for lib in listed["libraries"]] == [SETTINGS_KEYS | {"counts"}]
    changed = _json(libwatch, "library", "set", "photos", "--max-delete", "0.2")
    assert set(changed) == SETTINGS_KEYS | {"changes"} | RESULT_KEYS
    assert changed["changes"] == [{"setting": "max-delete", "old": 0.5, "new": 0.2}]
    assert _json(libwatch, "library", "set", "photos", "--max-delete", "0.2")["changes"] == []
    removed = _json(libwatch, "library", "remove", "photos")
    assert set(removed) == {"library", "removed"} | RESULT_KEYS and removed["library"] == "photos"


def test_a_paused_or_disabled_library_says_so_in_its_scan_document(libwatch: Callable[..., Any], photos: Path,
                                                                   db: Any) -> None:
    assert libwatch("library", "set", "photos", "--pause").code == 0
    paused = _json(libwatch, "scan", "photos")
    assert set(paused) == SKIPPED_SCAN_KEYS
    assert (paused["skipped_run"], paused["status"], paused["problems"]) == ("paused", "success", [])
    assert isinstance(paused["run_id"], str) and paused["changes"] == []
    run = db.runs.find_one({"_id": paused["run_id"]})
    assert run["status"] == "skipped" and run["error"] == "paused"
    text = libwatch("scan", "photos")
    assert (text.code, text.stdout) == (0, "photos: scan skipped (paused)\n")

    assert libwatch("library", "set", "photos", "--resume", "--disable").code == 0
    disabled = _json(libwatch, "scan", "photos", "--trigger", "timer")
    assert set(disabled) == SKIPPED_SCAN_KEYS and disabled["skipped_run"] == "disabled"
    assert _json(libwatch, "scan", "photos")["counts"]["added"] == 2  # a manual scan of a disabled library runs


def test_scan_all_cleanup_and_units_status_documents(libwatch: Callable[..., Any], photos: Path,
                                                     tmp_path: Path) -> None:
    tree(tmp_path / "more", {"c.jpg": (8, 8)})
    assert libwatch("library", "add", "more", str(tmp_path / "more")).code == 0
    assert libwatch("library", "set", "more", "--pause").code == 0
    scans = _json(libwatch, "scan", "--all")
    assert set(scans) == {"scans"} and [doc["library"] for doc in scans["scans"]] == ["more", "photos"]
    assert set(scans["scans"][0]) == SKIPPED_SCAN_KEYS and scans["scans"][1]["counts"]["added"] == 2

    cleanup = _json(libwatch, "cleanup", "--dry-run")
    assert set(cleanup) == {"library", "run_id", "dry_run", "started_at", "finished_at", "counts", "orphans",
                            "missing_files", "missing_collections", "stale_runs", "skipped", *RESULT_KEYS}
    assert set(cleanup["counts"]) == {"orphan_files", "orphan_bytes", "temp_files", "missing_files",
                                      "missing_collections", "events_processed", "old_events", "old_runs",
                                      "stale_runs", "locks_released", "requeued"}
    units = _json(libwatch, "units", "status", "--user")
    assert set(units) == {"unit_dir", "libraries"} | RESULT_KEYS
    assert [set(row) for row in units["libraries"]] == [{"library", "installed", "timer", "watch", "next_run",
                                                         "last_run"}] * 2


def test_rebuild_and_worker_documents(libwatch: Callable[..., Any], photos: Path, amqp_url: str,
                                      topology: Any) -> None:
    assert libwatch("scan", "photos").code == 0
    rebuilt = _json(libwatch, "rebuild", "photos", "--run", "--processes", "1")
    assert set(rebuilt) == {"run_id", "mode", "selection", "libraries", "started_at", "finished_at", "counts",
                            "failures", *RESULT_KEYS}
    assert set(rebuilt["counts"]) == {"selected", "done", "failed", "skipped", "changed", "retry", "requeued_stale"}
    broker = {"LIBWATCH_AMQP_URL": amqp_url, "LIBWATCH_AMQP_PREFIX": topology.exchange.removesuffix("libwatch")}
    published = _json(libwatch, "rebuild", "photos", "--all", env=broker)
    assert set(published) == set(rebuilt) and set(published["counts"]) == {"selected", "published", "pending",
                                                                           "requeued_stale"}
    worker = _json(libwatch, "worker", "--idle-exit", "1", "--processes", "1", env=broker)
    assert set(worker) == {"run_id", "counts", *RESULT_KEYS} and worker["status"] == "success"
    assert worker["counts"]["done"] + worker["counts"].get("duplicate", 0) + worker["counts"].get("skipped", 0) == 4


@pytest.mark.parametrize("args", [["worker", "--idle-exit", "1"], ["rebuild", "photos"],
                                  ["rebuild", "photos", "--all"]])
def test_a_broker_that_is_down_is_one_error_document_and_exit_69(libwatch: Callable[..., Any], photos: Path,
                                                                 args: list[str]) -> None:
    document = _json(libwatch, *args, code=69, env=DOWN)
    assert set(document) == {"status", "error"} and document["status"] == "error"
    assert document["error"]["exit_code"] == 69 and "127.0.0.1:1" in document["error"]["message"]
    plain = libwatch(*args, env=DOWN)
    assert plain.code == 69 and plain.stdout == "" and len(plain.stderr.strip().splitlines()) == 1
    assert "s3cret" not in plain.stderr + json.dumps(document) and "Traceback" not in plain.stderr


def test_a_scan_whose_publish_fails_prints_its_scan_document_with_exit_69(libwatch: Callable[..., Any],
                                                                         photos: Path) -> None:
    document = _json(libwatch, "scan", "photos", code=69, env=DOWN)
    assert "error" not in document and document["counts"]["added"] == 2  # recorded: the scan's own document
    assert document["status"] == "partial" and [p["kind"] for p in document["problems"]] == ["publish"]


def test_units_render_and_dry_run_documents(libwatch: Callable[..., Any], photos: Path, tmp_path: Path) -> None:
    rendered = _json(libwatch, "units", "render", "photos", "--user", "--output", str(tmp_path / "units"))
    assert set(rendered) == {"unit_dir", "written", "removed", "enabled", "disabled", "warnings", "notice",
                             *RESULT_KEYS}
    assert rendered["status"] == "success" and rendered["written"]
    planned = _json(libwatch, "units", "install", "photos", "--user", "--dry-run")
    assert set(planned) == {"files", "diff", "warnings", *RESULT_KEYS} and planned["files"]
