"""Hostile libraries: odd file kinds and names, folders vanishing mid-walk, mounts, an unmounted root."""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import time
import unicodedata
from contextlib import chdir
from pathlib import Path
from typing import Any, Final

import bson
from hypothesis import given
from hypothesis import strategies as st

from libwatch.catalog import files as files_module
from libwatch.catalog import libraries as catalog_libraries
from libwatch.services import scan as service
from libwatch.services.scan import ScanOptions
from libwatch.services.scan_detect import NoProgress

from .conftest import NAME, age, file_hash, files_by_path, one_clear_line, unmount
from support import sample, tree

JPEG: Final = sample("photo.jpg")
DEEP: Final = b"d" * 200


def _deep_file(root: Path) -> None:
    """An image whose path is longer than PATH_MAX (4096 bytes), built with relative opens."""
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(25):
            os.mkdir(DEEP, dir_fd=fd)
            deeper = os.open(DEEP, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        with open(os.open(b"deep.jpg", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as stream:
            stream.write(JPEG)
    finally:
        os.close(fd)


def _hostile(root: Path) -> dict[str, bytes]:
    """Every odd thing a library may hold; returns the images that must be recorded, by catalog path."""
    raw = os.fsencode(root)
    nfc, nfd = unicodedata.normalize("NFC", "café.jpg"), unicodedata.normalize("NFD", "café.jpg")
    images = {"plain.jpg": JPEG, nfc: JPEG + b"1", nfd: JPEG + b"2", "linked.jpg": JPEG + b"3"}
    for name, data in images.items():
        (root / name).write_bytes(data)
    os.link(root / "linked.jpg", root / "hardlink.jpg")
    images["hardlink.jpg"] = images["linked.jpg"]
    with open(raw + b"/bad\xff.jpg", "wb") as stream:
        stream.write(JPEG + b"4")
    images["bad\\xff.jpg"] = JPEG + b"4"
    os.mkfifo(root / "fifo.jpg")
    os.mknod(root / "device.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero: reading never ends
    with chdir(root), socket.socket(socket.AF_UNIX) as server:
        server.bind("socket.jpg")
    os.symlink("loop.jpg", root / "loop.jpg")
    (root / "sub").mkdir()
    os.symlink("../sub", root / "sub" / "up")  # followed (the library follows links): its own ancestor
    _deep_file(root)
    return images


def test_a_hostile_library_is_scanned_file_by_file_with_one_line_per_problem(
        db: Any, root: Path, register: Any, libwatch: Any) -> None:
    images = _hostile(root)
    register(follow_symlinks=True)
    try:
        done = libwatch("scan", NAME, timeout=120)  # opening the FIFO or the device would hang: the timeout fails it
        again = libwatch("diff", NAME, "--exit-code")
    finally:
        subprocess.run(["rm", "-rf", os.fsdecode(os.fsencode(root) + b"/" + DEEP)], check=True)
    assert done.code == 0, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    skipped = sorted(line.strip() for line in done.stdout.splitlines() if line.startswith("  skipped "))
    deep = [line for line in skipped if line.startswith(f"skipped {DEEP.decode()}/")]
    assert len(deep) == 1 and deep[0].endswith(": name-too-long")  # the folder past PATH_MAX, one line
    assert [line for line in skipped if line not in deep] == [
        "skipped device.jpg: not-regular",
        "skipped fifo.jpg: not-regular",
        "skipped loop.jpg: symlink-loop",
        "skipped socket.jpg: not-regular",
        "skipped sub/up: symlink-loop",
    ], done.stdout
    records = files_by_path(db)
    assert {path: doc["size"] for path, doc in records.items()} == {p: len(d) for p, d in images.items()}
    raw = os.fsencode(root)
    assert records["bad\\xff.jpg"]["hash"] == file_hash(raw + b"/bad\xff.jpg")
    nfc, nfd = unicodedata.normalize("NFC", "café.jpg"), unicodedata.normalize("NFD", "café.jpg")
    assert records[nfc]["hash"] != records[nfd]["hash"]  # two names, two records, each its own content
    assert records["hardlink.jpg"]["hash"] == records["linked.jpg"]["hash"]
    run = db.runs.find_one({"library": NAME, "job": "scan"})
    hashed_once = sum(len(d) for p, d in images.items() if p != "hardlink.jpg")
    assert run["counts"]["hashed_bytes"] == hashed_once  # the hard link was read once
    assert again.code == 0, again.stdout + again.stderr


def test_a_folder_vanishing_between_listing_and_entering_is_kept_then_deleted(
        db: Any, settings: Any, root: Path, register: Any) -> None:
    png = sample("tiny.png")
    (root / "a").mkdir()
    for i in range(1000):  # the walk reports progress every 1,000 files: the hook below runs mid-walk
        (root / "a" / f"{i:04d}.png").write_bytes(png + i.to_bytes(2, "big"))
    tree(root, {"b/x.jpg": JPEG, "b/y.jpg": JPEG + b"y"})
    age(root)
    library = register()
    service.scan(db, settings, library, ScanOptions())

    class RemoveB(NoProgress):
        def advance(self, items: int = 1) -> None:
            if (root / "b").exists():  # the first advance comes from the walk
                shutil.rmtree(root / "b")  # the root was listed with b in it; b is entered later

    doc = service.scan(db, settings, catalog_libraries.get(db, NAME), ScanOptions(), progress=RemoveB()).document
    assert doc["changes"] == []
    assert [(s["path"], s["reason"]) for s in doc["skipped"]] == [("b", "vanished")]
    assert {files_by_path(db)[p]["status"] for p in ("b/x.jpg", "b/y.jpg")} == {"present"}
    final = service.scan(db, settings, catalog_libraries.get(db, NAME), ScanOptions()).document
    assert {(c["type"], c["path"]) for c in final["changes"]} == {
        ("deleted", "b/x.jpg"), ("deleted", "b/y.jpg"), ("collection_removed", "b")}


def test_a_mount_inside_the_library_is_not_crossed_and_hides_nothing(
        db: Any, root: Path, register: Any, libwatch: Any, tmpfs: Any) -> None:
    tree(root, {"a.jpg": JPEG, "nas/old.jpg": JPEG + b"old"})
    age(root)
    register()
    assert libwatch("scan", NAME).code == 0
    tmpfs(root / "nas", "1m")  # mounted over a folder that holds recorded images
    (root / "nas" / "new.jpg").write_bytes(JPEG + b"new")
    done = libwatch("--json", "scan", NAME)
    assert done.code == 0, done.stderr
    assert "skipped" in done.stdout and '"mount-point"' in done.stdout
    assert {p: d["status"] for p, d in files_by_path(db).items()} == {"a.jpg": "present", "nas/old.jpg": "present"}


def test_an_unmounted_or_missing_root_is_exit_74_and_nothing_is_marked_deleted(
        db: Any, tmp_path: Path, libwatch: Any, tmpfs: Any) -> None:
    share = tmpfs(tmp_path / "share", "4m")
    tree(share, {"a.jpg": JPEG, "x/b.jpg": JPEG + b"b"})
    assert libwatch("library", "add", NAME, str(share)).code == 0
    assert libwatch("scan", NAME).code == 0
    unmount(share)  # the NAS went away: its mount point is an empty folder
    empty = libwatch("scan", NAME)
    assert empty.code == 74, empty.stderr
    one_clear_line(empty.stderr, str(share), "nothing was marked deleted")
    share.rmdir()
    missing = libwatch("scan", NAME)
    assert missing.code == 74, missing.stderr
    one_clear_line(missing.stderr, str(share), "nothing was changed")
    assert {d["status"] for d in files_by_path(db).values()} == {"present"}
    assert db.events.count_documents({"type": "deleted"}) == 0


def test_a_file_dated_2300_is_recorded_with_the_new_image_and_its_next_change_is_seen(
        db: Any, root: Path, register: Any, libwatch: Any) -> None:
    (root / "a.jpg").write_bytes(JPEG)
    register()
    assert libwatch("scan", NAME).code == 0
    (root / "new.jpg").write_bytes(JPEG + b"new")
    (root / "odd.jpg").write_bytes(JPEG + b"odd")
    subprocess.run(["touch", "-d", "2300-01-01", str(root / "odd.jpg")], check=True)
    exact = (root / "odd.jpg").stat().st_mtime_ns
    assert exact > files_module.INT64_MAX  # the case: past 2262 in nanoseconds

    done = libwatch("scan", NAME, "--json")
    assert done.code == 0, done.stderr
    assert {(c["type"], c["path"]) for c in json.loads(done.stdout)["changes"]} == {
        ("added", "new.jpg"), ("added", "odd.jpg")}
    odd = files_by_path(db)["odd.jpg"]
    assert (odd["mtime_ns"], odd["exact"]) == (files_module.INT64_MAX, {"mtime_ns": str(exact)})

    assert libwatch("diff", NAME, "--exit-code").code == 0  # the exact value compares equal: no change
    subprocess.run(["touch", "-d", "2300-01-02", str(root / "odd.jpg")], check=True)
    moved = libwatch("scan", NAME, "--json")
    assert moved.code == 0, moved.stderr
    assert [(c["type"], c["path"]) for c in json.loads(moved.stdout)["changes"]] == [("touched", "odd.jpg")]
    assert files_by_path(db)["odd.jpg"]["exact"] == {"mtime_ns": str((root / "odd.jpg").stat().st_mtime_ns)}


_STAT = st.integers(min_value=-(1 << 70), max_value=1 << 70)


@given(size=st.integers(min_value=0, max_value=1 << 66), mtime=_STAT, ctime=_STAT,
       inode=st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_every_stat_value_is_stored_as_bson_and_read_back_exactly(size: int, mtime: int, ctime: int,
                                                                  inode: int) -> None:
    fields = files_module.stat_fields(size, mtime, ctime, inode)
    stored = bson.decode(bson.encode(fields))  # raises OverflowError for an int that BSON cannot hold
    read = {**stored, **files_module.exact_values(stored["exact"])}
    assert (read["size"], read["mtime_ns"], read["ctime_ns"], read["inode"]) == (size, mtime, ctime, inode)
    assert all(files_module.INT64_MIN <= stored[key] <= files_module.INT64_MAX for key in files_module.STAT_FIELDS)


def test_a_50_mb_file_dated_2031_is_not_hashed_again_by_the_third_no_change_scan(
        root: Path, register: Any, libwatch: Any) -> None:
    (root / "a.jpg").write_bytes(JPEG)
    with open(root / "big.jpg", "wb") as stream:
        stream.write(os.urandom(50 << 20))
    subprocess.run(["touch", "-d", "2031-06-01", str(root / "big.jpg")], check=True)
    register()
    hashed = []
    for _ in range(3):
        done = libwatch("scan", NAME, "--json")
        assert done.code == 0, done.stderr
        hashed.append(json.loads(done.stdout)["counts"]["hashed_bytes"])
        time.sleep(2.1)  # past the 2 s granularity window of the run before
    assert hashed[0] >= 50 << 20
    assert hashed[2] == 0, hashed
