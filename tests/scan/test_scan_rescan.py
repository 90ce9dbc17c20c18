"""Scanning until quiet (`scan --rescan-on-change`): a change made while a scan runs is not lost."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from libwatch.catalog import libraries as catalog_libraries
from libwatch.services import rescan
from libwatch.services import scan as service
from libwatch.services.scan import ScanOptions
from libwatch.services.scan_result import ScanResult

from .conftest import NAME, age, changes_of, files_by_path, flip_a_byte_keeping_size_and_mtime, tree, write_image


def test_an_image_written_during_the_scan_is_recorded_by_another_round(
        db: Any, settings: Any, root: Path, register: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(root, {"a/first.jpg": (20, 20)})
    age(root)
    register()
    real_scan = service.scan
    rounds = []

    def scan_then_write(*args: Any, **kwargs: Any) -> ScanResult:
        report = real_scan(*args, **kwargs)
        rounds.append(report)
        if len(rounds) == 1:  # written while the first round ran: systemd would raise no event for it
            write_image(root / "a/during.jpg", (30, 20))
        return report

    monkeypatch.setattr(rescan, "scan", scan_then_write)
    report = rescan.scan_until_quiet(db, settings, catalog_libraries.get(db, NAME), ScanOptions(trigger="path"))
    assert len(rounds) == 2 and report.document["rounds"] == 2
    assert changes_of(report.document) >= {("added", "a/first.jpg"), ("added", "a/during.jpg")}
    assert files_by_path(db)["a/during.jpg"]["status"] == "present"


def test_a_quiet_library_is_scanned_once(db: Any, settings: Any, root: Path, register: Any) -> None:
    tree(root, {"b.jpg": (20, 20)})
    age(root)
    register()
    report = rescan.scan_until_quiet(db, settings, catalog_libraries.get(db, NAME), ScanOptions(trigger="path"))
    assert report.document["rounds"] == 1 and ("added", "b.jpg") in changes_of(report.document)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_rewritten_in_place_in_any_folder_counts_as_a_change(
        db: Any, root: Path, register: Any, workers: int) -> None:
    # Rewritten in place with its mtime put back: no folder's times move, only the file's ctime.
    tree(root, {f"f{i}/x{j}.jpg": (20, 20) for i in range(6) for j in range(3)})
    age(root)
    register()
    library = catalog_libraries.get(db, NAME)
    since = time.time_ns()
    assert not rescan.changed_since(db, library, since, workers=workers)
    flip_a_byte_keeping_size_and_mtime(root / "f4/x1.jpg")
    assert rescan.changed_since(db, library, since, workers=workers)
