"""Hashing on real files: the digest, odd files, files changing under the reader, hard links, order."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import xxhash

from libwatch.core.hashing import HASH_PREFIX, Fingerprint, hash_file, hash_files, hash_tagged
from libwatch.core.walk import NOT_REGULAR, UNSTABLE, VANISHED, DiskEntry, Skip, WalkOptions, walk

from support import unavailable

Tree = Callable[[Mapping[str | bytes, bytes | None]], bytes]


def entries(root: bytes) -> list[DiskEntry]:
    return [e for e in walk(root) if isinstance(e, DiskEntry)]


def expected(data: bytes) -> str:
    return HASH_PREFIX + xxhash.xxh3_128(data).hexdigest()


def test_digest_and_stat_of_open_file(tree: Tree, jpeg: bytes) -> None:
    root = tree({"a.jpg": jpeg, "zero.jpg": b"", "big.jpg": os.urandom(3 << 20)})
    for entry in entries(root):
        result = hash_file(root, entry)
        assert isinstance(result, Fingerprint)
        assert result.hash == expected(Path(os.fsdecode(root + b"/" + entry.raw)).read_bytes())
        assert result.entry == entry
    assert hash_file(root, entries(root)[2]).hash == HASH_PREFIX + "99aa06d3014798d86001c324468d497f"  # type: ignore[union-attr]


def test_digest_equals_xxh128sum(tree: Tree, jpeg: bytes) -> None:
    xxh128sum = shutil.which("xxh128sum") or unavailable("xxh128sum is not installed (apt-get install xxhash)",
                                                          "LIBWATCH_REQUIRE_XXHSUM")
    root = tree({"a.jpg": jpeg})
    out = subprocess.run([xxh128sum, os.fsdecode(root + b"/a.jpg")], capture_output=True, text=True, check=True)
    assert hash_file(root, entries(root)[0]).hash == HASH_PREFIX + out.stdout.split()[0]  # type: ignore[union-attr]


def test_fifo_is_refused_without_blocking(jpeg: bytes) -> None:
    root = tempfile.mkdtemp(prefix="lwc").encode()
    try:
        Path(os.fsdecode(root + b"/x.jpg")).write_bytes(jpeg)
        [entry] = entries(root)
        os.unlink(root + b"/x.jpg")
        os.mkfifo(root + b"/x.jpg")  # replaced by a FIFO after the walk: no writer, a blocking open would hang
        result = hash_file(root, entry)
    finally:
        shutil.rmtree(root)
    assert isinstance(result, Skip) and result.reason == NOT_REGULAR


def test_symlink_refused_unless_following(tree: Tree, jpeg: bytes) -> None:
    root = tree({"real.jpg": jpeg})
    os.symlink(b"real.jpg", root + b"/link.jpg")
    link = [e for e in walk(root, WalkOptions(follow_symlinks=True)) if e.path == "link.jpg"][0]
    assert isinstance(link, DiskEntry)
    refused = hash_file(root, link)
    assert isinstance(refused, Skip) and refused.reason == NOT_REGULAR
    followed = hash_file(root, link, follow_symlinks=True)
    assert isinstance(followed, Fingerprint) and followed.hash == expected(jpeg)


def test_vanished_file(tree: Tree, jpeg: bytes) -> None:
    root = tree({"a.jpg": jpeg})
    [entry] = entries(root)
    os.unlink(root + b"/a.jpg")
    result = hash_file(root, entry)
    assert isinstance(result, Skip) and (result.path, result.reason) == ("a.jpg", VANISHED)


def test_replaced_between_walk_and_hash_reports_new_state(tree: Tree, jpeg: bytes) -> None:
    root = tree({"a.jpg": jpeg})
    [entry] = entries(root)
    tmp = root + b"/.tmp"
    Path(os.fsdecode(tmp)).write_bytes(b"new content")
    os.rename(tmp, root + b"/a.jpg")  # another inode now
    result = hash_file(root, entry)
    assert isinstance(result, Fingerprint)
    assert result.hash == expected(b"new content")
    assert result.entry.inode != entry.inode and result.entry.size == len(b"new content")


@pytest.mark.parametrize("retries", [0, 1])
def test_file_rewritten_while_hashed_is_unstable(tree: Tree, retries: int, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tree({"big.jpg": os.urandom(4 << 20)})
    [entry] = entries(root)
    real_read = os.read

    def read_then_append(fd: int, n: int) -> bytes:
        # Every read of the file is followed by a writer appending to it: deterministic,
        # unlike a racing thread that a loaded machine may not schedule in time.
        data = real_read(fd, n)
        with open(root + b"/big.jpg", "ab") as writer:
            writer.write(b"x")
        return data

    monkeypatch.setattr("libwatch.core.hashing.os.read", read_then_append)
    result = hash_file(root, entry, retries=retries)
    assert isinstance(result, Skip) and result.reason == UNSTABLE


def test_hard_links_hashed_once(tree: Tree, jpeg: bytes) -> None:
    root = tree({"a/one.jpg": jpeg, "b.jpg": jpeg})
    os.link(root + b"/a/one.jpg", root + b"/a/two.jpg")
    os.link(root + b"/a/one.jpg", root + b"/c.jpg")
    read: list[int] = []
    results = list(hash_files(root, entries(root), workers=1, progress=read.append))
    assert [r.entry.path for r in results] == ["a/one.jpg", "a/two.jpg", "b.jpg", "c.jpg"]  # type: ignore[union-attr]
    assert {r.hash for r in results} == {expected(jpeg)}  # type: ignore[union-attr]
    assert read == [len(jpeg), len(jpeg)]  # the three links once, b.jpg once


def test_pool_keeps_input_order_and_agrees_with_in_process(tree: Tree) -> None:
    spec: dict[str | bytes, bytes | None] = {f"d{i % 7}/f{i:04d}.jpg": os.urandom(i % 5000) for i in range(400)}
    spec["big.jpg"] = os.urandom(17 << 20)  # read in-process while the pool works
    spec["d3/gone.jpg"] = b"soon gone"
    root = tree(spec)
    todo = entries(root)
    os.unlink(root + b"/d3/gone.jpg")
    todo.reverse()  # any order is kept, not just sorted
    pooled = list(hash_tagged(root, ((i, e) for i, e in enumerate(todo)), workers=2))
    local = list(hash_files(root, todo, workers=1))
    assert [tag for tag, _ in pooled] == list(range(len(todo)))
    assert [r for _, r in pooled] == local
    skips = [r for r in local if isinstance(r, Skip)]
    assert [(s.path, s.reason) for s in skips] == [("d3/gone.jpg", VANISHED)]
    for entry, result in zip(todo, local, strict=True):
        if isinstance(result, Fingerprint):
            assert result.entry.path == entry.path
            assert result.hash == expected(Path(os.fsdecode(root + b"/" + entry.raw)).read_bytes())
