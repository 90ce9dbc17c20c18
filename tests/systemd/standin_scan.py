"""Stand-in for `libwatch scan` in the end-to-end test, used while the real scan lacks
`--wait-lock` and `--rescan-on-change`. It honours the same command line as the units
(`scan NAME --trigger T [--settle S] [--wait-lock] [--rescan-on-change]`) and logs each
pass to $LIBWATCH_HOME/standin-runs.jsonl. The test installs it with a shebang naming
the venv's interpreter.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Final

from libwatch.systemd import LibraryUnits, refresh_watch

IMAGE_SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".tiff"})
MAX_PASSES: Final = 3
EXIT_LOCKED: Final = 75


def main(argv: list[str]) -> int:
    """Run the stand-in scan; exit 75 when the lock is held and --wait-lock is absent."""
    parser = argparse.ArgumentParser(prog="libwatch")
    parser.add_argument("command", choices=["scan"])
    parser.add_argument("name")
    parser.add_argument("--trigger", required=True)
    parser.add_argument("--settle", type=float, default=0.0)
    parser.add_argument("--wait-lock", action="store_true")
    parser.add_argument("--rescan-on-change", action="store_true")
    args = parser.parse_args(argv)
    home = Path(os.environ["LIBWATCH_HOME"])
    library = json.loads((home / "standin-libraries.json").read_text())[args.name]
    with open(home / f"{args.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if args.wait_lock else fcntl.LOCK_NB))
        except BlockingIOError:
            return EXIT_LOCKED
        time.sleep(args.settle)
        folders = scan(home, args, Path(library["root"]))
    new = sorted(folders - set(library.get("collections", [])))
    if new:
        lib = LibraryUnits(args.name, library["root"], library["on_calendar"], watch=True,
                           watch_dirs=tuple(sorted(folders)))
        result = refresh_watch(lib)
        library["collections"] = sorted(folders)
        all_libraries = json.loads((home / "standin-libraries.json").read_text())
        (home / "standin-libraries.json").write_text(json.dumps({**all_libraries, args.name: library}))
        progress(home, f"refresh {args.name} written={len(result.written)} problems={list(result.problems)}")
    return 0


def scan(home: Path, args: argparse.Namespace, root: Path) -> set[str]:
    """Record new images, pass after pass while a watched folder changed during the last one."""
    known_file = home / f"standin-known-{args.name}.json"
    known = set(json.loads(known_file.read_text())) if known_file.exists() else set()
    for number in range(1, MAX_PASSES + 1):
        started_ns = time.time_ns()
        images, folders = walk(root)
        progress(home, f"walked {os.getpid()} {number}")
        time.sleep(float(os.environ.get("LIBWATCH_STANDIN_DELAY", "0")))  # stands for hashing time
        added = sorted(images - known)
        known |= images
        known_file.write_text(json.dumps(sorted(known)))
        record = {"library": args.name, "trigger": args.trigger, "pass": number, "pid": os.getpid(),
                  "started_ns": started_ns, "finished_ns": time.time_ns(), "added": added}
        with open(home / "standin-runs.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        changed = any((root / f).stat().st_mtime_ns >= started_ns for f in folders)
        if not (args.rescan_on_change and changed):
            return folders
    return folders


def walk(root: Path) -> tuple[set[str], set[str]]:
    """Image paths and the folders holding them ('' = the root), relative to root."""
    images: set[str] = set()
    folders: set[str] = {""}
    for folder, _dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        rel = "" if rel == "." else rel
        hits = {os.path.join(rel, f) for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES}
        if hits:
            images |= hits
            folders.add(rel)
    return images, folders


def progress(home: Path, line: str) -> None:
    """Append a line the test waits on."""
    with open(home / "standin-progress.log", "a") as log:
        log.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
