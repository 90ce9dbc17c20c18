"""Scan throughput: `find` against libwatch's first scan, no-change rescan and 1 % rescan, in one run.

Builds a synthetic library (small files of a few hundred bytes, mtimes a day old so no
record is racy) and measures, on a warm page cache:
  find       `find ROOT -type f -printf '%s %T@\\n'` (best of --repeat, after one untimed run)
  raw read   every file record of the same catalog read with plain pymongo (sorted, 5,000 a batch)
  first      `libwatch scan` of the new library (records everything)
  rescan     `libwatch scan` again, nothing changed: the first run right after the first scan
             (shown apart: it overlaps the store's and the kernel's writing back of that scan),
             then the best of --repeat runs, like find (target: at most 2x find)
  1 % touch  `libwatch scan` after changing the mtime of 1 % of the files (target: hashes only those)
  empty scan `libwatch scan` of an empty library (best of --repeat): what every scan costs
             besides its walk (start-up, argument parsing, catalog round trips)
  store open one start of SecantusDB on the catalog's data folder, after the runs (it reads
             every document at start-up, so the embedded store pays it in every process)
Each libwatch figure is a whole process (start-up, catalog open and close included; "process
start" is `libwatch --version`, the floor of every libwatch figure), against
the embedded store under a temporary LIBWATCH_HOME or, with --store server, a SecantusDB
server this script starts. The libwatch processes may write bytecode caches even when
PYTHONDONTWRITEBYTECODE is set, as an installed package has them (compiling libwatch's
modules at every start would add about 0.1 s to each figure).

    .venv/bin/python benchmarks/scan.py --files 20000 --folders 200
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pymongo

from libwatch.catalog.store import embedded_server

NAME: Final = "bench"
EMPTY: Final = "empty"
DAY_NS: Final = 86_400 * 10**9
RESCAN_TARGET: Final = 2.0
BATCH: Final = 5000


@dataclass(frozen=True, slots=True)
class Row:
    """One measured step: wall time and, for scans, the JSON document's counts."""

    step: str
    seconds: float
    counts: dict[str, int] | None = None


def tiny_png() -> bytes:
    """A real 8x8 PNG (about 70 bytes): bytes appended after its end leave it readable."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


def build_library(root: Path, files: int, folders: int, size: int) -> None:
    """`files` real images of about `size` bytes over `folders` folders, each with distinct content and mtime."""
    png = tiny_png()
    filler = os.urandom(max(0, size - len(png) - 8))
    old = time.time_ns() - DAY_NS
    for i in range(files):
        folder = root / f"{i % folders:05d}"
        if i < folders:
            folder.mkdir(parents=True)
        path = folder / f"img{i:07d}.png"
        path.write_bytes(png + i.to_bytes(8, "big") + filler)
        os.utime(path, ns=(old + i, old + i))


def touch_share(root: Path, share: float) -> tuple[int, int]:
    """Give every 1/share-th file a new (still old) mtime; returns (files, bytes) touched."""
    step = round(1 / share)
    touched = nbytes = 0
    new = time.time_ns() - DAY_NS // 2
    for i, path in enumerate(sorted(root.rglob("*.png"))):
        if i % step == 0:
            os.utime(path, ns=(new, new))
            touched += 1
            nbytes += path.stat().st_size
    return touched, nbytes


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def best_find(root: Path, repeat: int) -> float:
    command = ["find", str(root), "-type", "f", "-printf", "%s %T@\n"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)  # warm the page cache
    return min(timed(lambda: subprocess.run(command, check=True, stdout=subprocess.DEVNULL))[0]
               for _ in range(repeat))


class Libwatch:
    """Runs the real `libwatch` command against one catalog."""

    def __init__(self, home: Path, mongo_uri: str | None) -> None:
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("LIBWATCH_") and k != "PYTHONDONTWRITEBYTECODE"}
        self.env.update(LIBWATCH_CONFIG=os.devnull, LIBWATCH_HOME=str(home), LIBWATCH_DATABASE="bench")
        if mongo_uri:
            self.env["LIBWATCH_MONGO_URI"] = mongo_uri

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "libwatch", *args], env=self.env, capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise SystemExit(f"libwatch {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def scan(self, step: str, name: str = NAME) -> Row:
        seconds, done = timed(lambda: self.run("scan", name, "--json", "--no-publish"))
        return Row(step, seconds, json.loads(done.stdout)["counts"])

    def best_scan(self, step: str, repeat: int, name: str = NAME) -> Row:
        return min((self.scan(step, name) for _ in range(repeat)), key=lambda row: row.seconds)


@contextlib.contextmanager
def catalog_uri(home: Path, store: str) -> Iterator[str | None]:
    """None for the embedded store (each libwatch process opens it), else a server's URI."""
    if store == "embedded":
        yield None
        return
    with embedded_server(home / "server-db") as server:
        yield server.uri


def raw_read(home: Path, mongo_uri: str | None) -> tuple[float, int]:
    """Read every file record of the library with plain pymongo; (seconds, documents)."""
    with contextlib.ExitStack() as stack:
        uri = mongo_uri or stack.enter_context(embedded_server(home / "db")).uri
        client: pymongo.MongoClient[dict[str, Any]] = stack.enter_context(pymongo.MongoClient(uri))
        files = client["bench"]["files"]
        fields = {"path": 1, "size": 1, "mtime_ns": 1, "ctime_ns": 1, "inode": 1, "hash": 1, "status": 1}
        return timed(lambda: sum(1 for _ in files.find({"library": NAME}, fields).sort("path", 1).batch_size(BATCH)))


def store_open(data_dir: Path) -> float:
    """Seconds to start SecantusDB on `data_dir` (and stop it)."""
    start = time.perf_counter()
    with embedded_server(data_dir):
        return time.perf_counter() - start


def report(rows: list[Row], find_s: float, files: int, touched: tuple[int, int]) -> None:
    print(f"{'step':<22} {'seconds':>8} {'x find':>7} {'files/s':>9}  counts")
    print(f"{'find -printf':<22} {find_s:>8.2f} {1:>7.2f} {files / find_s:>9,.0f}")
    for row in rows:
        shown = "" if row.counts is None else ", ".join(
            f"{k}={v:,}" for k, v in row.counts.items() if v and k != "scanned")
        print(f"{row.step:<22} {row.seconds:>8.2f} {row.seconds / find_s:>7.2f} {files / row.seconds:>9,.0f}  {shown}")
    rescan = next(r for r in rows if r.step == "no-change rescan")
    one_percent = next(r for r in rows if r.step.startswith("rescan after"))
    assert one_percent.counts is not None
    print(f"\nno-change rescan: {rescan.seconds / find_s:.2f}x find (target <= {RESCAN_TARGET:.0f}x): "
          f"{'met' if rescan.seconds <= RESCAN_TARGET * find_s else 'MISSED'}")
    hashed_ok = one_percent.counts["hashed_bytes"] == touched[1] and one_percent.counts["touched"] == touched[0]
    print(f"1 % rescan: touched {one_percent.counts['touched']:,} of {touched[0]:,} files, hashed "
          f"{one_percent.counts['hashed_bytes']:,} of {touched[1]:,} bytes: {'met' if hashed_ok else 'MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200_000, help="number of files (default 200000)")
    parser.add_argument("--folders", type=int, default=2_000, help="number of folders (default 2000)")
    parser.add_argument("--size", type=int, default=300, help="bytes per file (default 300)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed runs of find and of the no-change rescan; the best is kept")
    parser.add_argument("--store", choices=("embedded", "server"), default="embedded",
                        help="the embedded store per process (default) or one SecantusDB server for the run")
    parser.add_argument("--dir", default=None, help="where to build the library (default: a temp dir, removed after)")
    args = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="libwatch-scan-bench-", dir=args.dir))
    try:
        root, home = top / "library", top / "home"
        seconds, _ = timed(lambda: build_library(root, args.files, args.folders, args.size))
        print(f"built {args.files:,} files in {args.folders:,} folders in {seconds:.1f} s ({top})", file=sys.stderr)
        with catalog_uri(home, args.store) as uri:
            libwatch = Libwatch(home, uri)
            libwatch.run("library", "add", NAME, str(root))
            find_s = best_find(root, args.repeat)
            start_s, _ = timed(lambda: libwatch.run("--version"))
            rows = [Row("process start", start_s), libwatch.scan("first scan"),
                    libwatch.scan("rescan right after it"), libwatch.best_scan("no-change rescan", args.repeat)]
            touched = touch_share(root, 0.01)
            rows.append(libwatch.scan("rescan after 1 % touch"))
            (top / "empty").mkdir()
            libwatch.run("library", "add", EMPTY, str(top / "empty"))
            rows.append(libwatch.best_scan("empty scan", args.repeat, EMPTY))
            read_s, count = raw_read(home, uri)
        rows.insert(0, Row(f"raw pymongo read ({count:,})", read_s))
        rows.append(Row("store open", store_open(home / ("server-db" if uri else "db"))))
        report(rows, find_s, args.files, touched)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
