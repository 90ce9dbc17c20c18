"""The disk walk on real temp trees: order, filters, odd files, unreadable places."""
from __future__ import annotations

import fnmatch
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libwatch.core.paths import key_of
from libwatch.core.walk import (
    DEFAULT_OPTIONS,
    MOUNT_POINT,
    NAME_TOO_LONG,
    NOT_REGULAR,
    PERMISSION_DENIED,
    SYMLINK_LOOP,
    VANISHED,
    DiskEntry,
    Exclusions,
    Skip,
    WalkOptions,
    sort_key,
    walk,
)
from libwatch.errors import RootNotListable

Tree = Callable[[Mapping[str | bytes, bytes | None]], bytes]


def paths(root: bytes, options: WalkOptions = DEFAULT_OPTIONS) -> list[str]:
    return [item.path for item in walk(root, options) if type(item) is DiskEntry]


def test_order_matches_str_order_of_full_paths(tree: Tree, jpeg: bytes) -> None:
    nfc = unicodedata.normalize("NFC", "é.jpg")
    nfd = unicodedata.normalize("NFD", "é.jpg")
    names = ["a-b.jpg", "a/b.jpg", "a.b.jpg", "A.jpg", "a/b/c.jpg", "a b.jpg", "ä/x.jpg", "z.jpg", nfc, nfd, "日本.png"]
    root = tree({n: jpeg for n in names} | {b"bad\xff.jpg": jpeg, b"sub\xfe/x.jpg": jpeg})
    got = paths(root)
    expected = sorted(names + ["bad\\xff.jpg", "sub\\xfe/x.jpg"])
    assert got == expected
    assert nfc in got and nfd in got and nfc != nfd


def test_non_utf8_name_round_trips(tree: Tree, jpeg: bytes) -> None:
    root = tree({b"dir\xe9/caf\xe9.JPG": jpeg})
    [entry] = list(walk(root))
    assert isinstance(entry, DiskEntry)
    assert entry.raw == b"dir\xe9/caf\xe9.JPG"
    assert entry.path == "dir\\xe9/caf\\xe9.JPG" == key_of(entry.raw)
    assert os.path.exists(root + b"/" + entry.raw)


def test_entry_carries_stat(tree: Tree, jpeg: bytes) -> None:
    root = tree({"x.jpg": jpeg, "empty.jpg": b""})
    entries = {e.path: e for e in walk(root)}
    st = os.stat(root + b"/x.jpg")
    x = entries["x.jpg"]
    assert isinstance(x, DiskEntry)
    assert (x.size, x.mtime_ns, x.ctime_ns, x.inode, x.dev, x.nlink) == (
        len(jpeg), st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, 1)
    assert entries["empty.jpg"].size == 0  # type: ignore[union-attr]


def test_only_images_by_extension_case_insensitive(tree: Tree, jpeg: bytes) -> None:
    root = tree({"a.JPG": jpeg, "b.Png": jpeg, "c.txt": b"x", "jpg": b"x", "d.heic": b"x", "e.jpg.bak": b"x"})
    assert paths(root) == ["a.JPG", "b.Png", "d.heic"]


def test_hidden_files_and_folders(tree: Tree, jpeg: bytes) -> None:
    root = tree({".h.jpg": jpeg, ".thumbs/a.jpg": jpeg, "v/.x.jpg": jpeg, "v/y.jpg": jpeg})
    assert paths(root) == ["v/y.jpg"]
    assert paths(root, WalkOptions(hidden=True)) == [".h.jpg", ".thumbs/a.jpg", "v/.x.jpg", "v/y.jpg"]


def test_include_and_exclude_globs(tree: Tree, jpeg: bytes) -> None:
    root = tree({"a.jpg": jpeg, "raw/b.jpg": jpeg, "raw/deep/c.jpg": jpeg, "x/thumbs/d.jpg": jpeg,
                 "e.xmp": b"raw", "f.png": jpeg})
    assert paths(root, WalkOptions(exclude=("raw/*", "*/thumbs"))) == ["a.jpg", "f.png"]
    assert paths(root, WalkOptions(include=("*.xmp", "*.jpg"))) == [
        "a.jpg", "e.xmp", "raw/b.jpg", "raw/deep/c.jpg", "x/thumbs/d.jpg"]
    assert paths(root, WalkOptions(extensions=frozenset({"png"}))) == ["f.png"]


def test_fifo_socket_device_are_skipped_not_opened(jpeg: bytes) -> None:
    # A short root: AF_UNIX paths are limited to 108 bytes.
    root = tempfile.mkdtemp(prefix="lwc")
    try:
        os.mkfifo(f"{root}/fifo.jpg")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(f"{root}/sock.jpg")
        os.mknod(f"{root}/dev.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        Path(f"{root}/ok.jpg").write_bytes(jpeg)
        items = list(walk(root))  # would hang if the FIFO were opened for reading
        sock.close()
    finally:
        shutil.rmtree(root)
    assert [(type(i).__name__, i.path) for i in items] == [
        ("Skip", "dev.jpg"), ("Skip", "fifo.jpg"), ("DiskEntry", "ok.jpg"), ("Skip", "sock.jpg")]
    skips = {i.path: i for i in items if isinstance(i, Skip)}
    assert {p: (s.reason, s.detail) for p, s in skips.items()} == {
        "dev.jpg": (NOT_REGULAR, "character device"), "fifo.jpg": (NOT_REGULAR, "fifo"),
        "sock.jpg": (NOT_REGULAR, "socket")}


def test_symlinks_not_followed_by_default(tree: Tree, jpeg: bytes) -> None:
    root = tree({"real/a.jpg": jpeg})
    os.symlink(b"real/a.jpg", root + b"/link.jpg")
    os.symlink(b"real", root + b"/linkdir")
    items = list(walk(root))
    assert [(type(i).__name__, i.path) for i in items] == [("Skip", "link.jpg"), ("DiskEntry", "real/a.jpg")]
    assert items[0].reason == NOT_REGULAR  # type: ignore[union-attr]


def test_followed_symlinks_and_loops(tree: Tree, jpeg: bytes) -> None:
    root = tree({"real/a.jpg": jpeg})
    os.symlink(b"real/a.jpg", root + b"/link.jpg")
    os.symlink(b"..", root + b"/real/up")  # loop back to the root
    os.symlink(b"self.jpg", root + b"/self.jpg")  # ELOOP
    os.symlink(b"nowhere.jpg", root + b"/dangling.jpg")
    items = list(walk(root, WalkOptions(follow_symlinks=True)))
    summary = [(type(i).__name__, i.path, getattr(i, "reason", "")) for i in items]
    assert summary == [
        ("Skip", "dangling.jpg", NOT_REGULAR),
        ("DiskEntry", "link.jpg", ""),
        ("DiskEntry", "real/a.jpg", ""),
        ("Skip", "real/up", SYMLINK_LOOP),
        ("Skip", "self.jpg", SYMLINK_LOOP),
    ]
    assert items[3].subtree  # type: ignore[union-attr]
    assert items[1].inode == items[2].inode  # type: ignore[union-attr]


def test_missing_or_non_folder_root_raises(tmp_path: Path) -> None:
    with pytest.raises(RootNotListable):
        walk(tmp_path / "absent")
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(RootNotListable):
        walk(tmp_path / "file")
    assert isinstance(RootNotListable(), OSError)


def test_folder_vanishing_mid_walk_is_a_subtree_skip(tree: Tree, jpeg: bytes) -> None:
    root = tree({"a/1.jpg": jpeg, "b/2.jpg": jpeg, "c/3.jpg": jpeg})
    it = walk(root)
    first = next(it)
    shutil.rmtree(root + b"/b")
    rest = list(it)
    assert first.path == "a/1.jpg"
    assert rest[0] == Skip("b", b"b", VANISHED, rest[0].detail, subtree=True)
    assert rest[1].path == "c/3.jpg"


def test_path_longer_than_path_max_is_skipped(tree: Tree, jpeg: bytes) -> None:
    root = tree({"ok.jpg": jpeg})
    name = b"d" * 200
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(25):  # 25 * 201 bytes > PATH_MAX (4096)
            os.mkdir(name, dir_fd=fd)
            nxt = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        os.close(os.open(b"deep.jpg", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    finally:
        os.close(fd)
    items = list(walk(root))
    skips = [i for i in items if isinstance(i, Skip)]
    assert [s.reason for s in skips] == [NAME_TOO_LONG] and skips[0].subtree
    assert items[-1].path == "ok.jpg"
    subprocess.run(["rm", "-rf", os.fsdecode(root + b"/" + name)], check=True)


UNREADABLE_SNIPPET = """
import json, sys
from libwatch.core.walk import walk
print(json.dumps([[type(i).__name__, i.path, getattr(i, 'reason', ''), getattr(i, 'subtree', False)]
                  for i in walk(sys.argv[1])]))
"""


def test_unreadable_folder_as_unprivileged_user(jpeg: bytes) -> None:
    """Root reads everything, so the walk runs as nobody (setpriv) over a folder it may not list."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not installed")
    root = tempfile.mkdtemp(prefix="lwc")
    try:
        os.chmod(root, 0o755)
        for rel in ("a/1.jpg", "private/2.jpg", "private-x.jpg", "z.jpg"):
            os.makedirs(os.path.dirname(f"{root}/{rel}"), mode=0o755, exist_ok=True)
            Path(f"{root}/{rel}").write_bytes(jpeg)
            os.chmod(f"{root}/{rel}", 0o644)
        os.chmod(f"{root}/a", 0o755)
        os.chmod(f"{root}/private", 0o700)
        out = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-c", UNREADABLE_SNIPPET, root],
            capture_output=True, text=True, timeout=60, cwd="/", env={"PYTHONPATH": str(Path(__file__).parents[2])},
        )
    finally:
        shutil.rmtree(root)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [
        ["DiskEntry", "a/1.jpg", "", False],
        ["DiskEntry", "private-x.jpg", "", False],
        ["Skip", "private", PERMISSION_DENIED, True],
        ["DiskEntry", "z.jpg", "", False],
    ]


def test_mount_point_not_crossed_by_default(tree: Tree, jpeg: bytes) -> None:
    root = tree({"a.jpg": jpeg, "mnt": None})
    mnt = os.fsdecode(root + b"/mnt")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        Path(mnt, "inside.jpg").write_bytes(jpeg)
        items = list(walk(root))
        crossed = paths(root, WalkOptions(cross_mounts=True))
    finally:
        subprocess.run(["umount", mnt], check=True)
    assert items[1] == Skip("mnt", b"mnt", MOUNT_POINT, "another filesystem", subtree=True)
    assert crossed == ["a.jpg", "mnt/inside.jpg"]


def test_sort_key_puts_skipped_folders_at_their_children() -> None:
    assert sort_key(Skip("a", b"a", VANISHED, subtree=True)) == "a/"
    assert sort_key(Skip("a", b"a", VANISHED)) == "a"


def test_names_that_escape_to_the_same_key_do_not_crash_the_walk(tmp_path) -> None:
    import os

    from libwatch.core.diff import match
    from libwatch.core.walk import walk

    root = os.fsencode(tmp_path)
    for name in (b"a\\xff.jpg", b"a\xff.jpg"):
        with open(os.path.join(root, name), "wb") as stream:
            stream.write(b"x")
    items = list(walk(tmp_path))
    assert [item.raw for item in items] == [b"a\\xff.jpg"]
    assert len(list(match(items, []))) == 1


def test_an_exclude_glob_without_a_slash_is_a_name_at_any_depth_with_one_a_path(tree: Tree, jpeg: bytes) -> None:
    root = tree({"a.jpg": jpeg, "@eaDir/IMG_1.jpg/SYNOPHOTO_THUMB_XL.jpg": jpeg, "y/@eaDir/t.jpg": jpeg,
                 "y/._b.jpg": jpeg, "y/b.jpg": jpeg, "#recycle/old.jpg": jpeg, "raw/c.jpg": jpeg, "z/raw/d.jpg": jpeg})
    options = WalkOptions(exclude=("@eaDir", "#recycle", "._*", "raw/*"), hidden=True)
    assert paths(root, options) == ["a.jpg", "y/b.jpg", "z/raw/d.jpg"]
    rules = Exclusions(options.exclude)
    assert [rules.covers(p) for p in ("@eaDir", "y/@eaDir/t.jpg", "raw", "z/raw", "y", "y/._b.jpg")] == [
        True, True, True, False, False, True]


_NAME_CHARS = st.sampled_from(list("ab.*?_~!@#-"))


@given(patterns=st.lists(st.text(_NAME_CHARS, min_size=1, max_size=5), max_size=4),
       name=st.text(st.sampled_from(list("ab._~!@#-")), min_size=1, max_size=8))
def test_a_name_is_excluded_exactly_when_fnmatch_matches_it_to_a_glob(patterns: list[str], name: str) -> None:
    expected = any(fnmatch.fnmatchcase(name, p) for p in patterns)
    assert Exclusions(tuple(patterns)).name(name.encode()) == expected
