"""Human views piped (whole values, one record per line), the failed listing, status failures (issue 15)."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from admin.catalog_docs import add_library, event_doc, file_doc

FAILURE_KEYS = {"library", "path", "kind", "reason", "when"}
DEEP = "2024/broker/downloads/a-folder-name-long-enough-to-pass-eighty-columns/" + "x" * 40 + ".jpg"


def _failures(db: Any, root: Path) -> None:
    add_library(db, "photos", root)
    broken = file_doc("photos", DEEP, 1, cache="failed", thumbnail="done")
    broken["rebuild"].update(cache_error="truncated image: 120 bytes missing", cache_at=datetime.now(UTC))
    unreadable = {**file_doc("photos", "scans/notes.jpg", 2, cache=None, thumbnail=None),
                  "probe_error": "cannot identify image"}
    db.files.insert_many([broken, unreadable, file_doc("photos", "fine.jpg", 3)])


def test_failed_lists_unreadable_headers_and_failed_renders(libwatch: Callable[..., Any], db: Any,
                                                           tmp_path: Path) -> None:
    _failures(db, tmp_path / "photos")
    done = libwatch("failed", "photos", "--json")
    assert done.code == 0, done.stderr
    document = json.loads(done.stdout)
    assert set(document) == {"total", "failures", "status", "problems"} and document["total"] == 2
    assert all(set(item) == FAILURE_KEYS for item in document["failures"])
    found = {(item["path"], item["kind"], item["reason"]) for item in document["failures"]}
    assert found == {(DEEP, "cache", "truncated image: 120 bytes missing"),
                     ("scans/notes.jpg", "probe", "cannot identify image")}
    text = libwatch("failed")
    assert text.code == 0 and DEEP in text.stdout and "cannot identify image" in text.stdout
    assert libwatch("failed", "nope").code == 2


def test_status_shows_the_failed_count_and_latest_reasons(libwatch: Callable[..., Any], db: Any,
                                                         tmp_path: Path) -> None:
    _failures(db, tmp_path / "photos")
    [lib] = json.loads(libwatch("status", "--json").stdout)["libraries"]
    assert lib["failures"]["files"] == 2
    assert {item["reason"] for item in lib["failures"]["latest"]} == {"truncated image: 120 bytes missing",
                                                                      "cannot identify image"}
    text = libwatch("status", "photos").stdout
    assert re.search(r"^failed files +2; libwatch failed photos$", text, re.M), text
    assert f"{DEEP} (cache): truncated image: 120 bytes missing" in text


def test_piped_views_keep_every_value_whole(libwatch: Callable[..., Any], db: Any, tmp_path: Path) -> None:
    root = tmp_path / "a-root-folder-whose-name-alone-is-long" / "photos"
    _failures(db, root)
    db.events.insert_one({**event_doc("photos", DEEP, 1), "detected_at": datetime.now(UTC) - timedelta(minutes=1)})
    narrow = {"COLUMNS": "80"}
    for args in (["events"], ["failed"], ["status"], ["status", "photos"], ["history"]):
        done = libwatch(*args, env=narrow)
        assert done.code == 0, (args, done.stderr)
        assert "…" not in done.stdout and "┃" not in done.stdout and "│" not in done.stdout, (args, done.stdout)
    assert DEEP in libwatch("events", env=narrow).stdout
    assert str(root) in libwatch("status", "photos", env=narrow).stdout
    events = libwatch("events", env=narrow).stdout.splitlines()
    assert len(events) == 2 and events[1].split()[4] == DEEP  # a header and one record per line


def test_names_with_escape_sequences_are_escaped_in_views_and_json(libwatch: Callable[..., Any], db: Any,
                                                                  tmp_path: Path) -> None:
    add_library(db, "photos", tmp_path / "photos")
    evil = "\x1b]0;owned\x07\x1b[2J\nforged\u202egpj.jpg"
    db.events.insert_one(event_doc("photos", evil, 1))
    text = libwatch("events").stdout
    assert "\x1b" not in text and "\u202e" not in text and len(text.splitlines()) == 2
    assert '"\\x1b]0;owned\\x07\\x1b[2J\\nforged\\u202egpj.jpg"' in text
    dumped = libwatch("events", "--json").stdout
    assert "\u202e" not in dumped and "\\u202e" in dumped
    assert json.loads(dumped)["events"][0]["path"] == evil


def test_a_scan_with_unreadable_files_is_recorded_partial_with_its_counts(
        libwatch: Callable[..., Any], tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "photos"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "good.jpg")
    (root / "bad.jpg").write_bytes(b"not an image")
    assert libwatch("library", "add", "photos", str(root)).code == 0
    done = libwatch("scan", "photos", "--json")
    assert done.code == 0, done.stderr  # per-file problems keep exit 0 (README: exit codes)
    doc = json.loads(done.stdout)
    assert doc["status"] == "partial" and doc["errors"] == [{"path": "bad.jpg", "error": doc["problems"][0]["reason"]}]
    assert [(p["item"], p["kind"]) for p in doc["problems"]] == [("bad.jpg", "probe")]
    [run] = json.loads(libwatch("history", "--json").stdout)["runs"]
    assert run["status"] == "partial" and run["counts"]["added"] == 2 and run["counts"]["errors"] == 1, run
    assert run["error"] == "1 file could not be read or identified (libwatch failed lists them)"
    failures = json.loads(libwatch("failed", "--json").stdout)["failures"]
    assert {f["path"] for f in failures} == {"bad.jpg"} and "probe" in {f["kind"] for f in failures}
    [lib] = json.loads(libwatch("status", "photos", "--json").stdout)["libraries"]
    assert lib["last_changes"]["added"] == 2  # the partial run recorded its changes: they count
    assert re.search(r"^last changes +2 added$", libwatch("status", "photos").stdout, re.M)


def test_on_a_terminal_tables_fit_the_width_and_wrap_paths_instead_of_cutting(
        cli_env: dict[str, str], db: Any, tmp_path: Path) -> None:
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    add_library(db, "photos", tmp_path / "photos")
    db.events.insert_one(event_doc("photos", DEEP, 1))
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 70, 0, 0))  # 70 columns
    env = {k: v for k, v in cli_env.items() if k != "COLUMNS"}
    done = subprocess.run([sys.executable, "-m", "libwatch", "events"], env={**env, "TERM": "xterm"},
                          stdin=follower, stdout=follower, stderr=follower, timeout=60)
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn.decode())  # colours and cursor codes
    lines = text.replace("\r", "").splitlines()
    assert done.returncode == 0, text
    assert max(len(line) for line in lines) <= 70, text
    assert "…" not in text
    first = next(i for i, line in enumerate(lines) if "2024/broker/" in line)
    start = lines[first].index("2024/broker/")
    width = len(lines[first][start:].split(" ")[0])
    wrapped = "".join(line[start:start + width].strip() for line in lines[first:])
    assert wrapped == DEEP, text  # the whole path, wrapped in its cell
