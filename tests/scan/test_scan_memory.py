"""Memory bounded by the batch, not the library: a first scan of 4x the files peaks within a few MB,
and a huge report is summarised with --limit (issue 17)."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pymongo
import pytest

from .conftest import NAME

FEW: Final = 5_000
MANY: Final = 4 * FEW
# Before the scan streamed its changes it grew by about 1.9 KB a file: 28 MB from FEW to MANY.
GROWTH_MB: Final = 8
# The scan runs under this small launcher: a process started by the test (whose RSS holds the
# session's store) would inherit the test's peak RSS in ru_maxrss, which exec does not reset.
LAUNCH: Final = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""
# A store of the test's own in a process of its own: killed at the end instead of dropping 25,000 records
# (the session store takes a minute for that).
SERVER: Final = """
import sys, time
from pathlib import Path
from libwatch.catalog.store import embedded_server
with embedded_server(Path(sys.argv[1])) as server:
    print(server.uri, flush=True)
    time.sleep(3600)
"""


@pytest.fixture
def own_store(tmp_path: Path) -> Iterator[str]:
    """The URI of a SecantusDB server started for this test alone."""
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp_path / "store")], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.kill()
        process.wait()


def _library(root: Path, files: int) -> None:
    """``files`` one-byte .jpg files in folders of 100 (their probe fails: each is also an error to report)."""
    for i in range(files):
        folder = root / f"{i // 100:04d}"
        if i % 100 == 0:
            folder.mkdir(parents=True)
        (folder / f"{i:06d}.jpg").write_bytes(b"x")


def _peak_rss_kb(root: Path, name: str, env: dict[str, str]) -> int:
    done = subprocess.run([sys.executable, "-c", LAUNCH, sys.executable, "-m", "libwatch", "scan", str(root),
                           "--name", name, "--no-publish", "--json"], env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    code, peak = map(int, done.stdout.split())
    assert code == 0, done
    return peak


@pytest.mark.slow
def test_first_scan_memory_does_not_grow_with_the_number_of_added_files(tmp_path: Path, cli_env: dict[str, str],
                                                                          own_store: str) -> None:
    env = {**cli_env, "LIBWATCH_MONGO_URI": own_store, "LIBWATCH_DATABASE": "memory"}
    peaks = {}
    with pymongo.MongoClient(own_store) as client:
        for files in (FEW, MANY):
            root = tmp_path / f"lib{files}"
            _library(root, files)
            peaks[files] = _peak_rss_kb(root, f"lib{files}", env)
            assert client.memory.files.count_documents({"library": f"lib{files}"}) == files
    growth_mb = (peaks[MANY] - peaks[FEW]) / 1024
    assert growth_mb < GROWTH_MB, f"peak RSS {peaks[FEW] // 1024} MB at {FEW:,} files, {peaks[MANY] // 1024} MB " \
                                  f"at {MANY:,}"


def test_limit_summarises_the_report_and_keeps_the_counts_whole(root: Path, cli: Any, cli_env: dict[str, str]) -> None:
    _library(root, 250)
    done = cli("scan", str(root), "--name", NAME, "--no-publish", "--limit", "10")
    assert done.code == 0, done.stderr
    doc = done.doc
    assert doc["counts"]["added"] == 250 and doc["counts"]["errors"] == 250
    assert len(doc["changes"]) == 10 and len(doc["errors"]) == 10 and len(doc["problems"]) == 10
    # the file changes come first, in path order; the three new folders follow them
    assert [c["path"] for c in doc["changes"]] == [f"0000/{i:06d}.jpg" for i in range(10)]
    assert doc["omitted"] == {"changes": 250 + 3 - 10, "skipped": 0, "errors": 240, "problems": 240}
    (root / "0000" / "000000.jpg").unlink()
    text = subprocess.run([sys.executable, "-m", "libwatch", "-v", "diff", NAME, "--limit", "0"], env=cli_env,
                          capture_output=True, text=True, check=True).stdout
    assert "... and 1 more change (--limit)" in text and "000000.jpg" not in text, text


def test_a_whole_report_is_one_json_document_with_every_change(root: Path, cli: Any) -> None:
    _library(root, 1_050)  # more than one spilled batch
    done = cli("scan", str(root), "--name", NAME, "--no-publish")
    assert done.code == 0, done.stderr
    paths = [c["path"] for c in done.doc["changes"] if c["type"] == "added"]
    assert paths == sorted(paths) and len(paths) == 1_050
    assert [e["path"] for e in done.doc["errors"]] == paths
    assert "omitted" not in done.doc
