"""Scanning until quiet: what a path-triggered scan does so that systemd's blind window loses nothing.

systemd removes a path unit's inotify watches while the service it started runs, and
does not look again when it ends: changes made during a scan raise no new event. So the
watch service scans, checks whether anything changed since that scan started (a stat
walk, no hashing), and scans again while it did (bounded).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from typing import Any, Final

from pymongo.database import Database

from libwatch.catalog import files as catalog_files
from libwatch.config import Settings
from libwatch.core.parallel_walk import walk
from libwatch.core.paths import collection_of
from libwatch.core.walk import DiskEntry
from libwatch.library import Library
from libwatch.result import Listing
from libwatch.services.scan import Publish, scan
from libwatch.services.scan_detect import Progress, ScanOptions, no_progress, walk_options, walk_workers, within
from libwatch.services.scan_result import ScanResult

log = logging.getLogger("libwatch.scan")

MAX_ROUNDS: Final = 5

Db = Database[dict[str, Any]]


def _watched_folders(db: Db, library: Library, subtree: str) -> set[str]:
    """The scanned folder, every collection folder below it and their ancestors up to it:
    where a change shows in a folder's times."""
    folders = {subtree}
    for path in catalog_files.collection_documents(db, library.name):
        while within(path, subtree) and path != subtree:
            folders.add(path)
            path = collection_of(path)
    return folders


def changed_since(db: Db, library: Library, since_ns: int, *, workers: int = 1, subtree: str = "") -> bool:
    """Whether any watched folder or any image (below ``subtree`` if given) changed after `since_ns`
    (a stat walk, no hashing).

    The walk folds every folder with nothing newer into one item, so that its (parallel)
    workers send back only the folders that changed.
    """
    root = os.fsencode(library.path)
    for folder in _watched_folders(db, library, subtree):
        try:
            st = os.stat(os.path.join(root, os.fsencode(folder)) if folder else root)
        except OSError:
            return True
        if max(st.st_mtime_ns, st.st_ctime_ns) >= since_ns:
            return True

    def older(_folder: str, files: list[DiskEntry]) -> bool:
        return all(max(f.mtime_ns, f.ctime_ns) < since_ns for f in files)

    with contextlib.closing(walk(library.path, walk_options(library), unchanged=older, under=subtree,
                                 workers=workers)) as items:
        return any(type(item) is DiskEntry for item in items)


def scan_until_quiet(db: Db, settings: Settings, library: Library, options: ScanOptions, *,
                     progress: Progress = no_progress, publish: Publish | None = None, subtree: str = "") -> ScanResult:
    """Scan, and scan again while files were still settling or something changed during the run.

    The result is the last round's, with every round's changes and a `rounds` count.
    """
    earlier: Listing[dict[str, Any]] = Listing.of()
    for round_number in range(1, MAX_ROUNDS + 1):
        started_ns = time.time_ns()
        result = scan(db, settings, library, options, publish=publish, progress=progress, subtree=subtree)
        if result.exit_code or result.skipped_run or options.dry_run:
            return result
        settling = any(item["reason"] == "unstable" for item in result.skipped)
        quiet = not (settling or changed_since(db, library, started_ns, workers=walk_workers(result.counts["scanned"]),
                                               subtree=subtree))
        result = dataclasses.replace(result, rounds=round_number, changes=earlier + result.changes)
        if quiet or round_number == MAX_ROUNDS:
            return result
        log.info("%s changed during the scan; scanning again", library.name)
        earlier = result.changes
        time.sleep(max(options.settle_s, 1.0) if settling else 0.5)
    return result
