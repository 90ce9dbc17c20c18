"""`libwatch library add/set/show`: validated settings, default exclusions, nested and symlinked roots."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from libwatch.catalog import libraries as repo
from libwatch.library import DEFAULT_EXCLUDES, Library
from libwatch.services import doctor
from libwatch.services import libraries as service

from support import tree


def _shown(libwatch: Any, name: str = "photos") -> dict[str, Any]:
    done = libwatch("library", "show", name, "--json")
    assert done.code == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def _one_line(stderr: str, *words: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert all(word in lines[0] for word in words), lines[0]


@pytest.fixture
def photos(libwatch: Any, tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    assert libwatch("library", "add", "photos", str(root)).code == 0
    return root


@pytest.mark.parametrize(("args", "words"), [
    (["--max-delete", "5"], ["--max-delete", "0 to 1"]),
    (["--max-delete", "-1"], ["--max-delete", "0 to 1"]),
    (["--max-delete", "nan"], ["--max-delete", "0 to 1"]),
    (["--retention-days", "-3"], ["--retention-days", "0 or more"]),
    (["--retention-days", "inf"], ["--retention-days", "0 or more"]),
    (["--include", ""], ["--include", "empty"]),
    (["--add-include", " "], ["--add-include", "empty"]),
    (["--exclude", ""], ["--exclude", "empty"]),
    (["--remove-exclude", "never-added"], ["--remove-exclude", "never-added"]),
    (["--remove-include", "*.jpg"], ["--remove-include", "*.jpg"]),
    (["--compare", "inode,size"], ["--compare", "ctime, inode"]),
    (["--pause", "--max-delete", "2"], ["--max-delete"]),  # nothing is written when one value is wrong
])
def test_out_of_range_settings_are_refused_with_one_line_and_nothing_changes(
        libwatch: Any, photos: Path, args: list[str], words: list[str]) -> None:
    before = _shown(libwatch)
    done = libwatch("library", "set", "photos", *args)
    assert done.code == 2
    _one_line(done.stderr, *words)
    assert _shown(libwatch) == before


def test_each_change_is_printed_old_to_new_and_no_option_is_nothing_changed(libwatch: Any, photos: Path) -> None:
    nothing = libwatch("library", "set", "photos")
    assert (nothing.code, nothing.stdout.strip()) == (0, "photos: nothing changed")
    done = libwatch("library", "set", "photos", "--max-delete", "0.05", "--retention-days", "0", "--pause")
    assert done.code == 0, done.stderr
    assert done.stdout.splitlines() == ["photos: paused no -> yes", "photos: retention-days not set -> 0",
                                        "photos: max-delete 50 % -> 5 %"]
    again = json.loads(libwatch("library", "set", "photos", "--max-delete", "0.05", "--json").stdout)
    assert again["changes"] == [] and again["max_delete"] == 0.05


def test_zero_is_a_value_not_a_missing_one(libwatch: Any, db: Any, photos: Path) -> None:
    assert libwatch("library", "set", "photos", "--retention-days", "0", "--max-delete", "0").code == 0
    stored = db.libraries.find_one({"_id": "photos"})
    assert (stored["retention_days"], stored["max_delete"]) == (0, 0)
    shown = _shown(libwatch)
    assert (shown["retention_days"], shown["max_delete"]) == (0, 0)


def test_excludes_and_includes_are_edited_one_pattern_at_a_time_and_reset_to_the_defaults(
        libwatch: Any, photos: Path) -> None:
    assert libwatch("library", "set", "photos", "--add-exclude", "scans/*", "--add-exclude", "tmp").code == 0
    assert libwatch("library", "set", "photos", "--exclude", "other/*").code == 0  # replaces the own list only
    assert libwatch("library", "set", "photos", "--add-exclude", "scans/*", "--remove-exclude", "@eaDir",
                    "--add-include", "*.jpg", "--add-include", "*.cr2").code == 0
    shown = _shown(libwatch)
    assert shown["exclude"] == ["other/*", "scans/*"] and shown["dropped_excludes"] == ["@eaDir"]
    assert "@eaDir" not in shown["applied_default_excludes"] and shown["include"] == ["*.jpg", "*.cr2"]
    assert libwatch("library", "set", "photos", "--remove-include", "*.cr2", "--add-exclude", "@eaDir").code == 0
    shown = _shown(libwatch)
    assert shown["include"] == ["*.jpg"] and shown["dropped_excludes"] == []
    assert libwatch("library", "set", "photos", "--reset-excludes", "--reset-includes").code == 0
    shown = _shown(libwatch)
    assert (shown["include"], shown["exclude"], shown["dropped_excludes"]) == ([], [], [])
    assert shown["applied_default_excludes"] == list(DEFAULT_EXCLUDES)


JUNK = {"@eaDir/IMG_1.jpg/SYNOPHOTO_THUMB_XL.jpg": (8, 8), "#recycle/old.jpg": (8, 8), "#snapshot/a.jpg": (8, 8),
        "@Recycle/q.jpg": (8, 8), "$RECYCLE.BIN/w.jpg": (8, 8), "System Volume Information/v.jpg": (8, 8),
        "y/.@__thumb/t.jpg": (8, 8), "y/._IMG_2.jpg": (8, 8), "y/.Trash-1000/files/x.jpg": (8, 8)}


def _recorded(libwatch: Any) -> list[str]:
    done = libwatch("scan", "photos", "--json")
    assert done.code == 0, done.stderr
    return sorted(c["path"] for c in json.loads(done.stdout)["changes"] if c["type"] == "added")


def test_nas_os_and_sync_junk_is_left_out_by_default_and_a_library_can_drop_the_defaults(
        libwatch: Any, photos: Path) -> None:
    tree(photos, {"a.jpg": (8, 8), "y/IMG_2.jpg": (8, 8), **JUNK})
    assert libwatch("library", "set", "photos", "--hidden").code == 0  # even with hidden files tracked
    assert _recorded(libwatch) == ["a.jpg", "y/IMG_2.jpg"]
    shown = libwatch("library", "show", "photos")
    assert "@eaDir" in shown.stdout and "#recycle" in shown.stdout
    assert libwatch("library", "set", "photos", "--remove-exclude", "#recycle").code == 0
    assert _recorded(libwatch) == ["#recycle/old.jpg"]
    assert libwatch("library", "set", "photos", "--no-default-excludes").code == 0
    assert len(_recorded(libwatch)) == len(JUNK) - 1


def test_a_library_registered_before_gets_the_defaults_and_loses_junk_records_only_through_the_guards(
        libwatch: Any, db: Any, photos: Path) -> None:
    tree(photos, {"a.jpg": (8, 8), "@eaDir/a.jpg/t.jpg": (8, 8), "#recycle/b.jpg": (8, 8)})
    assert libwatch("library", "set", "photos", "--no-default-excludes").code == 0
    assert len(_recorded(libwatch)) == 3  # as an old libwatch recorded them
    legacy = {"default_excludes", "dropped_excludes", "compare", "link"}  # fields added with the defaults
    db.libraries.update_one({"_id": "photos"}, {"$unset": dict.fromkeys(legacy, "")})  # as an old record reads
    assert "@eaDir" in _shown(libwatch)["applied_default_excludes"]

    refused = libwatch("scan", "photos")  # 2 of 3 records would go: more than max-delete 0.5
    assert refused.code not in (0, 70) and "--allow-mass-delete" in refused.stderr
    assert db.files.count_documents({"library": "photos", "status": "present"}) == 3
    done = libwatch("scan", "photos", "--allow-mass-delete", "--json")
    assert done.code == 0, done.stderr
    assert sorted((c["type"], c["path"]) for c in json.loads(done.stdout)["changes"] if c["type"] == "deleted") == [
        ("deleted", "#recycle/b.jpg"), ("deleted", "@eaDir/a.jpg/t.jpg")]


def test_a_root_inside_or_above_another_library_is_refused_unless_allowed_and_excluded(
        libwatch: Any, db: Any, settings: Any, photos: Path, tmp_path: Path) -> None:
    (photos / "2024").mkdir()
    inside = libwatch("library", "add", "y2024", str(photos / "2024"))
    assert inside.code == 2
    _one_line(inside.stderr, "photos", str(photos))
    above = libwatch("library", "add", "all", str(tmp_path))
    assert above.code == 2
    _one_line(above.stderr, "photos")
    assert libwatch("library", "add", "y2024", str(photos / "2024"), "--allow-nested").code == 2  # not excluded
    assert libwatch("library", "set", "photos", "--add-exclude", "2024").code == 0
    assert libwatch("library", "add", "y2024", str(photos / "2024")).code == 2  # excluded, but not asked for
    assert libwatch("library", "add", "y2024", str(photos / "2024"), "--allow-nested").code == 0
    taken_back = libwatch("library", "set", "photos", "--remove-exclude", "2024")
    assert taken_back.code == 2
    _one_line(taken_back.stderr, "y2024", "both")
    assert service.overlaps(repo.all_libraries(db)) == []
    assert libwatch("scan", "--all").code == 0

    repo.insert(db, Library(name="legacy", path=str(tmp_path)))  # an overlap from before the rule
    found = service.overlaps(repo.all_libraries(db))
    assert len(found) == 2 and all("legacy" in line for line in found)  # legacy holds photos and y2024
    check = {c.name: c for c in doctor.diagnose(settings).checks}["libraries"]
    assert check.status == doctor.WARN and "(library legacy)" in check.detail


@pytest.mark.parametrize("registered_by", [("library", "add", "photos", "{link}"),
                                           ("scan", "{link}", "--name", "photos")])
def test_a_symlinked_root_retargeted_is_refused_naming_both_paths_never_a_second_library(
        libwatch: Any, db: Any, tmp_path: Path, registered_by: tuple[str, ...]) -> None:
    for disk, size in (("disk1", (8, 8)), ("disk2", (9, 9))):
        tree(tmp_path / disk / "photos", {f"{disk}.jpg": size})
    link = tmp_path / "photos-link"
    link.symlink_to(tmp_path / "disk1" / "photos")
    assert libwatch(*(arg.format(link=link) for arg in registered_by)).code == 0
    assert libwatch("scan", "photos").code == 0
    link.unlink()
    link.symlink_to(tmp_path / "disk2" / "photos")

    for target in ("photos", str(link)):
        done = libwatch("scan", target)
        assert done.code == 2
        _one_line(done.stderr, str(link), str(tmp_path / "disk1" / "photos"), str(tmp_path / "disk2" / "photos"))
    assert libwatch("library", "add", "again", str(link)).code == 2
    assert [doc["_id"] for doc in db.libraries.find()] == ["photos"]
    assert db.files.count_documents({"status": "present"}) == 1  # disk1.jpg, kept

    assert libwatch("library", "set", "photos", "--path", str(link)).code == 0  # follow the link from now on
    done = libwatch("scan", "photos", "--allow-mass-delete", "--json")
    assert done.code == 0, done.stderr
    assert sorted(c["path"] for c in json.loads(done.stdout)["changes"]) == ["disk1.jpg", "disk2.jpg"]


def test_compare_none_ignores_a_new_inode_with_the_same_size_and_mtime(libwatch: Any, photos: Path) -> None:
    tree(photos, {"a.jpg": (8, 8)})
    os.utime(photos / "a.jpg", (1_700_000_000, 1_700_000_000))  # old: not racy, never hashed again for that
    assert libwatch("scan", "photos").code == 0
    st = (photos / "a.jpg").stat()
    copy = photos / "a.jpg.copy"
    copy.write_bytes((photos / "a.jpg").read_bytes())
    os.replace(copy, photos / "a.jpg")  # a new inode and ctime, as a remount of some network filesystems gives
    os.utime(photos / "a.jpg", ns=(st.st_atime_ns, st.st_mtime_ns))
    default = json.loads(libwatch("diff", "photos", "--json").stdout)
    assert default["counts"]["hashed_bytes"] > 0
    assert libwatch("library", "set", "photos", "--compare", "none").code == 0
    relaxed = json.loads(libwatch("diff", "photos", "--json").stdout)
    assert (relaxed["changes"], relaxed["counts"]["hashed_bytes"]) == ([], 0)
