"""Every skip reason, odd files, and names that are not UTF-8."""
from __future__ import annotations

import base64
import os
import threading
from pathlib import Path
from typing import Any

from libwatch.services import scan as service
from libwatch.services.scan import ScanOptions
from libwatch.services.scan_detect import HASHING, NoProgress

from .conftest import (
    NAME,
    WITHOUT_DAC,
    age,
    changes_of,
    file_hash,
    files_by_path,
    sample,
    tree,
)


def _skips(doc: dict[str, Any]) -> dict[str, str]:
    return {item["path"]: item["reason"] for item in doc["skipped"]}


def test_files_written_within_settle_are_unstable(db: Any, root: Path, register: Any, cli: Any) -> None:
    tree(root, {"old.jpg": (10, 10), "fresh.jpg": (12, 12)})
    age(root)
    register()
    assert cli("scan", NAME).code == 0
    tree(root, {"fresh.jpg": (30, 30), "new.jpg": (14, 14)})  # written just now
    done = cli("scan", NAME, "--settle", "60")
    assert done.code == 0, done.stderr
    assert (done.doc["changes"], _skips(done.doc)) == ([], {"fresh.jpg": "unstable", "new.jpg": "unstable"})
    assert done.doc["counts"]["skipped"] == 2
    assert set(files_by_path(db)) == {"old.jpg", "fresh.jpg"}  # the settling record is kept as it was
    later = cli("scan", NAME)
    assert changes_of(later.doc) == {("modified", "fresh.jpg"), ("added", "new.jpg")}


def test_a_fifo_named_like_an_image_is_never_opened(root: Path, register: Any, cli: Any) -> None:
    tree(root, {"ok.jpg": (10, 10)})
    os.mkfifo(root / "x.jpg")
    register()
    done = cli("scan", NAME, timeout=60)  # opening the FIFO for reading would block forever
    assert done.code == 0, done.stderr
    assert changes_of(done.doc) == {("added", "ok.jpg"), ("collection_added", "")}
    assert _skips(done.doc) == {"x.jpg": "not-regular"}


def test_a_symlink_loop_is_skipped_when_following_links(db: Any, root: Path, register: Any, cli: Any) -> None:
    tree(root, {"real/a.jpg": (10, 10)})
    os.symlink("..", root / "real" / "up")
    os.symlink("real/a.jpg", root / "link.jpg")
    register(follow_symlinks=True)
    done = cli("scan", NAME, timeout=60)
    assert done.code == 0, done.stderr
    assert _skips(done.doc) == {"real/up": "symlink-loop"}
    assert {c[1] for c in changes_of(done.doc) if c[0] == "added"} == {"real/a.jpg", "link.jpg"}
    assert cli("diff", NAME, "--exit-code").code == 0


def test_unreadable_files_and_folders_are_reported_and_kept(db: Any, root: Path, register: Any, cli: Any) -> None:
    tree(root, {"ok.jpg": (10, 10), "secret.jpg": (11, 11), "locked/inside.jpg": (12, 12)})
    age(root)
    register()
    assert cli("scan", NAME).code == 0
    (root / "secret.jpg").chmod(0)
    (root / "locked").chmod(0)
    try:
        done = cli("scan", NAME, prefix=WITHOUT_DAC)  # root ignores permissions unless it drops these
        again = cli("diff", NAME, "--exit-code", prefix=WITHOUT_DAC)
    finally:
        (root / "locked").chmod(0o755)
        (root / "secret.jpg").chmod(0o644)
    assert done.code == 0, done.stderr
    assert done.doc["changes"] == []  # neither is taken for deleted
    # chmod changed the file's ctime, so it is read again, and that fails
    assert _skips(done.doc) == {"locked": "permission-denied", "secret.jpg": "permission-denied"}
    assert again.code == 0
    assert {p: r["status"] for p, r in files_by_path(db).items()} == {
        "ok.jpg": "present", "secret.jpg": "present", "locked/inside.jpg": "present"}


def test_a_file_that_vanishes_before_it_is_hashed(db: Any, settings: Any, root: Path, register: Any) -> None:
    tree(root, {"a.jpg": (10, 10), "b.jpg": (11, 11), "c.jpg": (12, 12)})
    library = register()

    class RemoveC(NoProgress):
        def start_phase(self, phase: str, total: int | None = None, *, unit: str = "file") -> None:
            if phase == HASHING:
                (root / "c.jpg").unlink()  # after the walk saw it, before it is read

    doc = service.scan(db, settings, library, ScanOptions(), progress=RemoveC()).document
    assert changes_of(doc) == {("added", "a.jpg"), ("added", "b.jpg"), ("collection_added", "")}
    assert _skips(doc) == {"c.jpg": "vanished"}


def test_a_file_changing_while_it_is_read_is_unstable_until_it_holds_still(
        db: Any, settings: Any, root: Path, register: Any) -> None:
    tree(root, {"small.jpg": (10, 10)})
    big = root / "big.jpg"
    with big.open("wb") as stream:
        stream.truncate(256 << 20)  # sparse: takes a while to read, no disk
    library = register()
    stop = threading.Event()

    def keep_touching() -> None:
        tick = 0
        while not stop.is_set():
            tick += 1
            os.utime(big, ns=(tick, tick))

    writer = threading.Thread(target=keep_touching)
    writer.start()
    try:
        doc = service.scan(db, settings, library, ScanOptions()).document
    finally:
        stop.set()
        writer.join()
    assert [(s["path"], s["reason"], s["detail"]) for s in doc["skipped"]] == [
        ("big.jpg", "unstable", "changed while being read")]
    assert changes_of(doc) == {("added", "small.jpg"), ("collection_added", "")}
    later = service.scan(db, settings, library, ScanOptions()).document
    assert changes_of(later) == {("added", "big.jpg")}


def test_non_utf8_names_round_trip(db: Any, root: Path, register: Any, cli: Any) -> None:
    raw_root = os.fsencode(root)
    folder, name = b"caf\xe9", b"bad\xff.jpg"
    os.mkdir(raw_root + b"/" + folder)
    with open(raw_root + b"/" + folder + b"/" + name, "wb") as stream:
        stream.write(sample("photo.jpg"))
    register()
    done = cli("scan", NAME)
    assert done.code == 0, done.stderr
    [added] = [c for c in done.doc["changes"] if c["type"] == "added"]
    assert added["path"] == "caf\\xe9/bad\\xff.jpg"
    assert base64.b64decode(added["path_b64"]) == folder + b"/" + name
    [record] = files_by_path(db).values()
    assert base64.b64decode(record["path_b64"]) == folder + b"/" + name
    assert record["hash"] == file_hash(raw_root + b"/" + folder + b"/" + name)
    again = cli("diff", NAME, "--exit-code")
    assert (again.code, again.doc["changes"]) == (0, [])
    db.libraries.update_one({"_id": NAME}, {"$inc": {"state.generation": 1}})  # and from the catalog itself
    assert cli("diff", NAME, "--exit-code").code == 0
