"""Human views in plain words and units, one number format and plural everywhere (issue 15).

Piped at COLUMNS=80, as a log or `grep` sees them: no Python values (True/False/None, dicts,
raw datetimes), no table borders, "1 library" not "1 libraries", settings in their units.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from libwatch.cli import output

from support import tree

NARROW = {"COLUMNS": "80"}
PYTHON_VALUES = re.compile(r"\b(True|False|None)\b|[{}]|\d{2}:\d{2}:\d{2}\.\d|\+00:00|_")
BORDERS = re.compile("[│┃━─┏┓┗┛┌┐└┘╇┡┩]")


def test_number_count_counted_percent_and_words() -> None:
    assert (output.number(1234567), output.count(1, "library"), output.count(2, "library")) \
        == ("1,234,567", "1 library", "2 libraries")
    assert output.count(12_345, "file") == "12,345 files" and output.count(0, "day") == "0 days"
    assert output.counted({"added": 4, "errors": 1, "collections_added": 1, "modified": 0, "scanned": 9},
                          leave_out=("scanned",)) == "4 added, 1 error, 1 collection added"
    assert output.counted({"orphan_files": 2_000, "old_runs": 1}) == "2,000 orphan files, 1 old run"
    assert output.counted({"added": 0}) == ""
    assert (output.percent(0.5), output.percent(0.05), output.percent(1)) == ("50 %", "5 %", "100 %")
    assert (output.words(True), output.words(None), output.words([]), output.words(["a", "b"]),
            output.words(12_000)) == ("yes", "not set", "none", "a, b", "12,000")


def test_library_show_prints_plain_words_and_units(libwatch: Callable[..., Any], tmp_path: Path) -> None:
    root = tree(tmp_path / "photos", {"2024/a.jpg": (8, 8), "b.jpg": (9, 9)})
    assert libwatch("library", "add", "photos", str(root)).code == 0
    assert libwatch("scan", "photos").code == 0

    shown = libwatch("library", "show", "photos", env=NARROW)

    assert shown.code == 0, shown.stderr
    facts = dict(re.split(r"  +", line, maxsplit=1) for line in shown.stdout.splitlines())
    assert facts["library"] == "photos" and facts["root"] == str(root)
    assert facts["state"] == "enabled" and facts["watch"] == "on"
    assert facts["rebuilds"] == "cache images and thumbnails"
    assert facts["tracked files"] == "image extensions (the default)"
    assert facts["compared"] == "size, mtime, ctime, inode"
    assert facts["missing files kept"] == "30 days (the default)"
    assert facts["max delete"] == "50 % of the files in one scan"
    assert facts["files"] == "2 present, 0 missing, 2 collections"
    assert facts["last scan found"] == "2 added, 2 collections added"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", facts["created"]), facts["created"]
    assert re.fullmatch(r"\d+ patterns applied", facts["default exclusions"])
    for key, value in facts.items():
        if key != "default exclusion patterns":  # the patterns themselves hold '_' and '*'
            assert not PYTHON_VALUES.search(value.replace(str(root), "ROOT")), (key, value)
    assert not BORDERS.search(shown.stdout)

    changed = libwatch("library", "set", "photos", "--max-delete", "0.25", "--retention-days", "1", "--pause")
    assert changed.code == 0, changed.stderr
    assert changed.stdout.splitlines() == ["photos: paused no -> yes", "photos: retention-days not set -> 1",
                                           "photos: max-delete 50 % -> 25 %"]
    again = libwatch("library", "show", "photos", env=NARROW).stdout
    assert re.search(r"^missing files kept +1 day$", again, re.M) and re.search(r"^state +paused$", again, re.M)


def test_other_views_piped_have_no_borders_and_count_in_words(libwatch: Callable[..., Any], tmp_path: Path) -> None:
    root = tree(tmp_path / "photos", {"a.jpg": (8, 8)})
    assert libwatch("library", "add", "photos", str(root)).code == 0

    scan = libwatch("scan", "photos", env=NARROW)
    assert scan.code == 0, scan.stderr
    assert not BORDERS.search(scan.stdout), scan.stdout
    assert re.search(r"^scan +photos \(" + re.escape(str(root)) + r"\)$", scan.stdout, re.M), scan.stdout
    assert re.search(r"^rebuilds +2 requested, 0 published, 2 pending$", scan.stdout, re.M), scan.stdout

    doctor = libwatch("doctor", env=NARROW)
    assert not BORDERS.search(doctor.stdout), doctor.stdout
    assert "1 library, roots present" in doctor.stdout and "1 libraries" not in doctor.stdout

    units = libwatch("units", "status", "--user", env=NARROW)
    assert not BORDERS.search(units.stdout + units.stderr), units.stdout
    rebuilt = libwatch("rebuild", "photos", "--run", "--processes", "1", env=NARROW)
    assert rebuilt.code == 0, rebuilt.stderr
    assert rebuilt.stdout.splitlines() == ["rebuilt pending of photos here: 2 renderings (2 done)"]
    status = libwatch("status", "photos", env=NARROW).stdout
    assert re.search(r"^rebuilds +0 pending, 0 queued, 0 failed$", status, re.M), status
    assert re.search(r"^last changes +1 added$", status, re.M), status
