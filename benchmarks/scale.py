"""Scale: a first scan, rescans and their memory at up to a million files, against baselines of the same run.

Builds a library of --files files in folders of 100 (1 KiB files, or --sizes photo: a
log-normal mix of sizes shaped like a photo library's, scaled down so that a million of them
fit on a disk), starts one SecantusDB server in a process of its own (as `libwatch store
serve` runs it, so the scans' RSS is theirs alone), then measures in one run:

  find         `find ROOT -type f -printf '%s %T@\\n'`, best of --repeat (the rescans' baseline)
  insert_many  plain pymongo `insert_many` of the documents a first scan writes (one file record
               and one event per file, libwatch's indexes, `w=majority, j=True`, batches of 1,000)
               into a server of the same store started for it alone (the first scan's baseline)
  first scan   `libwatch scan --json` of the new library (its report goes to /dev/null)
  rescan       the no-change rescan, best of --repeat
  1 % changed  a rescan after rewriting the content of 1 % of the files
  empty scan   a scan of an empty library, best of --repeat: what every scan costs besides its walk,
               against `libwatch --version` (best of --repeat), the floor of any libwatch command

Peak RSS is each `libwatch` process's own (`os.wait4`), not the server's. Goals (issue 17): first
scan <= 1.5x insert_many; rescan <= 1.5x find; empty scan <= 0.1 s beyond --version; first-scan RSS < 300 MB and
rescan RSS < 150 MB.

    .venv/bin/python benchmarks/scale.py --files 200000
    .venv/bin/python benchmarks/scale.py --files 1000000 --dir /var/tmp --keep   # then, after a change:
    .venv/bin/python benchmarks/scale.py --reuse /var/tmp/libwatch-scale-XXXX     # the rescans again
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pymongo
import xxhash

NAME: Final = "scale"
EMPTY: Final = "empty"
FOLDER_SIZE: Final = 100
DAY_NS: Final = 86_400 * 10**9
BATCH: Final = 1000
GOALS: Final = {"first scan": 1.5, "no-change rescan": 1.5}
RSS_GOALS_MB: Final = {"first scan": 300, "no-change rescan": 150}
EMPTY_GOAL_S: Final = 0.1  # beyond the floor: `libwatch --version` (Python, the CLI's imports, exit)
VERSION: Final = "libwatch --version"
LAUNCH: Final = """
import os, sys
fd, command = int(sys.argv[1]), sys.argv[2:]
pid = os.posix_spawn(command[0], command, os.environ)
_, status, usage = os.wait4(pid, 0)
os.write(fd, str(usage.ru_maxrss).encode())
sys.exit(os.waitstatus_to_exitcode(status))
"""
SERVER: Final = """
import sys, signal, threading
from pathlib import Path
from libwatch.catalog.store import embedded_server
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
with embedded_server(Path(sys.argv[1])) as server:
    print(server.uri, flush=True)
    stop.wait()
"""


@dataclass(frozen=True, slots=True)
class Row:
    """One measured step: wall seconds, peak RSS in MB (None for a baseline) and the scan's counts."""

    step: str
    seconds: float
    rss_mb: float | None = None
    counts: dict[str, int] | None = None


def sizes(count: int, profile: str, seed: int) -> Iterator[int]:
    """File sizes in bytes: 1 KiB each, or a photo library's log-normal shape divided by 64 (median 40 KiB)."""
    rng = random.Random(seed)
    for _ in range(count):
        yield 1024 if profile == "small" else max(1024, min(int(rng.lognormvariate(10.6, 0.6)), 1 << 20))


def tiny_png() -> bytes:
    """A real 8x8 PNG (about 70 bytes): bytes appended after its end leave it readable."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


def build(root: Path, count: int, profile: str) -> int:
    """`count` real images with distinct contents and day-old mtimes, 100 a folder; returns the bytes written."""
    old = time.time_ns() - DAY_NS
    total = 0
    png = tiny_png()
    block = os.urandom(1 << 20)
    for i, size in enumerate(sizes(count, profile, seed=count)):
        folder = root / f"{i // FOLDER_SIZE // 100:04d}" / f"{i // FOLDER_SIZE:06d}"
        if i % FOLDER_SIZE == 0:
            folder.mkdir(parents=True)
        path = folder / f"img{i:07d}.png"
        start = (i * 7919) % (len(block) - size) if size < len(block) else 0
        path.write_bytes(png + i.to_bytes(8, "big") + block[start:start + size - 8 - len(png)])
        os.utime(path, ns=(old + i, old + i))
        total += size
    return total


def change_share(root: Path, share: float) -> int:
    """Rewrite the first bytes of every 1/share-th file (same size, new mtime); returns how many."""
    step = round(1 / share)
    changed = 0
    header = len(tiny_png())
    for i, path in enumerate(sorted(root.rglob("*.png"))):
        if i % step == 0:
            with path.open("r+b") as handle:
                handle.seek(header)
                handle.write((i + 2**62).to_bytes(8, "big"))  # still unique: no file becomes another's copy
            changed += 1
    later = time.time_ns() - DAY_NS // 2
    for i, path in enumerate(sorted(root.rglob("*.png"))):
        if i % step == 0:
            os.utime(path, ns=(later, later))
    return changed


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a process; (wall seconds, its own peak RSS in MB, stdout).

    The process is started by a small launcher (LAUNCH): a child of this process would carry
    this process's RSS (grown by the insert_many baseline) in its ru_maxrss, which exec keeps.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as usage:
        start = time.perf_counter()
        code = subprocess.run([sys.executable, "-c", LAUNCH, str(usage.fileno()), *command], env=env, stdout=out,
                              stderr=err, pass_fds=(usage.fileno(),)).returncode
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if code != 0:
            raise SystemExit(f"{' '.join(command[2:])} exited {code}: {err.read().decode()[-2000:]}")
        usage.seek(0)
        return seconds, int(usage.read()) / 1024, out.read().decode()


class Libwatch:
    """The real `libwatch` command against the benchmark's server."""

    def __init__(self, home: Path, uri: str) -> None:
        # Without PYTHONDONTWRITEBYTECODE, as installed: an editable install's modules are compiled at the
        # first run and read from __pycache__ after (0.1 s a process otherwise), a wheel's at install.
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("LIBWATCH_") and k != "PYTHONDONTWRITEBYTECODE"}
        self.env.update(LIBWATCH_CONFIG=os.devnull, LIBWATCH_HOME=str(home), LIBWATCH_DATABASE="scale",
                        LIBWATCH_MONGO_URI=uri, LIBWATCH_CACHE_DIR=str(home / "cache"))

    def run(self, *args: str) -> tuple[float, float, str]:
        return run_measured([sys.executable, "-m", "libwatch", *args], self.env)

    def scan(self, step: str, name: str = NAME) -> Row:
        seconds, rss, out = self.run("scan", name, "--json", "--no-publish")
        return Row(step, seconds, rss, json.loads(out)["counts"])

    def best_scan(self, step: str, repeat: int, name: str = NAME) -> Row:
        return min((self.scan(step, name) for _ in range(repeat)), key=lambda row: row.seconds)


def best_find(root: Path, repeat: int) -> float:
    command = ["find", str(root), "-type", "f", "-printf", "%s %T@\n"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best


def documents(root: Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The file record and the event a first scan writes for each file (hash included: it is read too)."""
    now = datetime.now(UTC)
    for folder, _, names in sorted(os.walk(root)):
        collection = os.path.relpath(folder, root)
        for name in sorted(names):
            path = os.path.join(folder, name)
            info = os.stat(path)
            with open(path, "rb") as handle:
                digest = "xxh3-128:" + xxhash.xxh3_128(handle.read()).hexdigest()
            relative = f"{collection}/{name}"
            record = {"library": NAME, "path": relative, "collection": collection, "size": info.st_size,
                      "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns, "inode": info.st_ino,
                      "hash": digest, "status": "present", "first_seen": now, "updated_at": now,
                      "rebuild": {"cache": "pending", "thumbnail": "pending", "hash": digest}}
            event = {"library": NAME, "collection": collection, "path": relative, "type": "added",
                     "detected_at": now, "size": info.st_size, "hash": digest, "processed": False}
            yield record, event


def _insert(files: Any, events: Any, batch: list[tuple[dict[str, Any], dict[str, Any]]]) -> float:
    start = time.perf_counter()
    files.insert_many([record for record, _ in batch], ordered=False)
    events.insert_many([event for _, event in batch], ordered=False)
    return time.perf_counter() - start


def insert_many(uri: str, root: Path) -> float:
    """Seconds to insert the first scan's documents with plain insert_many, libwatch's indexes in place."""
    from pymongo.write_concern import WriteConcern

    from libwatch.catalog.schema import ensure_schema

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri)
    try:
        db = client["scale_baseline"]
        ensure_schema(db)
        concern = WriteConcern(w="majority", j=True)
        files, events = db["files"].with_options(write_concern=concern), db["events"].with_options(
            write_concern=concern)
        seconds = 0.0  # only the inserts are timed: building the documents (stat, hash) is not the baseline
        batch: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for pair in documents(root):
            batch.append(pair)
            if len(batch) == BATCH:
                seconds += _insert(files, events, batch)
                batch.clear()
        if batch:
            seconds += _insert(files, events, batch)
        return seconds
    finally:
        client.close()


def baseline_inserts(folder: Path, root: Path) -> float:
    """`insert_many` into a server of the same store started for it alone in ``folder`` (its data and
    credentials), stopped and removed after.

    Not a database of the scans' server dropped after: SecantusDB drops a database key by key
    in one call, which at a million files held the server for more than half an hour.
    """
    server, uri = start_server(folder / "db")
    try:
        return insert_many(uri, root)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=600)
        shutil.rmtree(folder, ignore_errors=True)


def start_server(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    """The embedded store as a server in its own process; (process, URI)."""
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(data_dir)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    uri = process.stdout.readline().strip()
    if not uri:
        raise SystemExit("the store server did not start")
    return process, uri


def report(rows: list[Row], baselines: dict[str, float]) -> None:
    print(f"{'step':<20} {'seconds':>9} {'x base':>7} {'RSS MB':>7}  counts")
    for name, seconds in baselines.items():
        print(f"{name:<20} {seconds:>9.2f} {1:>7.2f} {'':>7}")
    for row in rows:
        base = baselines["insert_many"] if row.step == "first scan" else baselines["find"]
        counts = "" if row.counts is None else ", ".join(
            f"{k}={v:,}" for k, v in row.counts.items() if v and k not in ("scanned", "unchanged"))
        rss = "" if row.rss_mb is None else f"{row.rss_mb:.0f}"
        print(f"{row.step:<20} {row.seconds:>9.2f} {row.seconds / base:>7.2f} {rss:>7}  {counts}")
    print()
    for row in rows:
        ratio_goal = GOALS.get(row.step)
        base = baselines["insert_many"] if row.step == "first scan" else baselines["find"]
        if ratio_goal is not None:
            ratio = row.seconds / base
            print(f"{row.step}: {ratio:.2f}x its baseline (goal <= {ratio_goal}x): "
                  f"{'met' if ratio <= ratio_goal else 'MISSED'}")
        rss_goal = RSS_GOALS_MB.get(row.step)
        if rss_goal is not None and row.rss_mb is not None:
            print(f"{row.step}: peak RSS {row.rss_mb:.0f} MB (goal < {rss_goal} MB): "
                  f"{'met' if row.rss_mb < rss_goal else 'MISSED'}")
    empty = next(r for r in rows if r.step == "empty scan")
    fixed = empty.seconds - baselines[VERSION]
    print(f"empty scan: {empty.seconds:.3f} s, {fixed:.3f} s beyond `libwatch --version` (goal <= {EMPTY_GOAL_S} s): "
          f"{'met' if fixed <= EMPTY_GOAL_S else 'MISSED'}")


def _clear(top: Path) -> None:
    """Remove all but the library from TOP: what a run that ended before its first scan did left."""
    for left in ("server-db", "home", "empty", "baseline"):
        shutil.rmtree(top / left, ignore_errors=True)
    (top / "store-credentials.json").unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1_000_000, help="number of files (default 1000000)")
    parser.add_argument("--sizes", choices=("small", "photo"), default="small",
                        help="1 KiB files (default), or a photo library's size mix scaled down 64x")
    parser.add_argument("--repeat", type=int, default=3, help="runs of find and the rescans; the best is kept")
    parser.add_argument("--dir", default=None, help="where to build the library (default: a temp dir, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the library, its home and the store's data")
    parser.add_argument("--reuse", default=None, metavar="TOP",
                        help="use the library an earlier --keep run built in TOP (no build): only the rescans when "
                             "its store holds the first scan, else every step on a new store")
    args = parser.parse_args()
    top = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="libwatch-scale-", dir=args.dir))
    server = None
    try:
        root, home = top / "library", top / "home"
        if not args.reuse:
            start = time.perf_counter()
            written = build(root, args.files, args.sizes)
            print(f"built {args.files:,} files ({written / 2**20:,.0f} MiB) in {time.perf_counter() - start:.0f} s "
                  f"under {top}", file=sys.stderr)
        scanned = (top / "scanned").exists()  # the first scan ended: its store and local index are in TOP
        if not scanned:
            _clear(top)
        server, uri = start_server(top / "server-db")
        libwatch = Libwatch(home, uri)
        if not scanned:
            libwatch.run("library", "add", NAME, str(root))
            (top / "empty").mkdir()
            libwatch.run("library", "add", EMPTY, str(top / "empty"))
        baselines = {"find": best_find(root, args.repeat),
                     VERSION: min(libwatch.run("--version")[0] for _ in range(args.repeat))}
        rows = []
        if not scanned:
            baselines["insert_many"] = baseline_inserts(top / "baseline", root)
            rows.append(libwatch.scan("first scan"))
            (top / "scanned").touch()
        else:  # the server has a new port, which the local stat index's catalog identity names: rebuild it
            libwatch.scan("warm-up")
        rows.append(libwatch.best_scan("no-change rescan", args.repeat))
        change_share(root, 0.01)
        rows += [libwatch.scan("1 % changed"), libwatch.best_scan("empty scan", args.repeat, EMPTY)]
        report(rows, baselines)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
        if not (args.keep or args.reuse):
            shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
