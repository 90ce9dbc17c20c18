"""The cache layout and atomic writes, on real folders (and a real full tmpfs)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from libwatch import cachefiles

from .images import leftovers

HEX = "0f" * 16
HASH = f"xxh3-128:{HEX}"


def test_layout_is_kind_shard_hex_without_the_colon(tmp_path: Path) -> None:
    assert cachefiles.cache_path(tmp_path, "thumbnail", HASH, "jpg") == tmp_path / "thumbnail" / "0f" / f"{HEX}.jpg"


@pytest.mark.parametrize("bad", ["", HEX, "xxh3-128:" + "0F" * 16, "xxh3-128:../../etc", "sha1:" + HEX])
def test_malformed_hashes_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        cachefiles.cache_path(tmp_path, "cache", bad, "jpg")


def test_write_atomic_creates_replaces_and_leaves_nothing_behind(tmp_path: Path) -> None:
    dest = cachefiles.cache_path(tmp_path, "cache", HASH, "jpg")
    old_umask = os.umask(0o022)
    try:
        cachefiles.write_atomic(dest, b"first")
        cachefiles.write_atomic(dest, b"second")
    finally:
        os.umask(old_umask)
    assert dest.read_bytes() == b"second"
    assert dest.stat().st_mode & 0o777 == 0o644  # readable by a viewer running as another user
    assert leftovers(tmp_path) == []


def test_a_failed_write_removes_its_temp_file_and_keeps_the_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "0f" / f"{HEX}.jpg"
    cachefiles.write_atomic(dest, b"old")
    with pytest.raises(TypeError):
        cachefiles.write_atomic(dest, "not bytes")  # type: ignore[arg-type]
    assert dest.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_enospc_is_raised_and_no_temp_file_is_left(full_disk: Path) -> None:
    dest = cachefiles.cache_path(full_disk, "cache", HASH, "jpg")
    with pytest.raises(OSError) as caught:
        cachefiles.write_atomic(dest, os.urandom(200_000))
    assert caught.value.errno == errno.ENOSPC
    assert leftovers(full_disk) == []
    assert not dest.exists()


def test_existing_finds_any_format_but_never_a_temp_file(tmp_path: Path) -> None:
    assert cachefiles.existing(tmp_path, "thumbnail", HASH) is None
    shard = tmp_path / "thumbnail" / "0f"
    shard.mkdir(parents=True)
    (shard / f".{HEX}.jpg.abc.tmp").write_bytes(b"half")
    assert cachefiles.existing(tmp_path, "thumbnail", HASH) is None
    webp = cachefiles.cache_path(tmp_path, "thumbnail", HASH, "webp")
    cachefiles.write_atomic(webp, b"w")
    assert cachefiles.existing(tmp_path, "thumbnail", HASH) == webp
    assert cachefiles.existing(tmp_path, "cache", HASH) is None


def test_discard_other_formats_keeps_only_the_given_one(tmp_path: Path) -> None:
    jpg = cachefiles.cache_path(tmp_path, "cache", HASH, "jpg")
    webp = cachefiles.cache_path(tmp_path, "cache", HASH, "webp")
    other = cachefiles.cache_path(tmp_path, "cache", "xxh3-128:" + "0f" + "1" * 30, "jpg")
    for path in (jpg, webp, other):
        cachefiles.write_atomic(path, b"x")
    cachefiles.discard_other_formats(webp)
    assert (jpg.exists(), webp.exists(), other.exists()) == (False, True, True)


def test_iter_cache_files_lists_renderings_and_skips_temp_files_and_strangers(tmp_path: Path) -> None:
    other_hash = "xxh3-128:" + "ab" * 16
    a = cachefiles.cache_path(tmp_path, "cache", HASH, "jpg")
    b = cachefiles.cache_path(tmp_path, "thumbnail", other_hash, "webp")
    for path in (a, b):
        cachefiles.write_atomic(path, b"x")
    temp = a.parent / f".{a.name}.123.tmp"
    temp.write_bytes(b"half")
    (a.parent / "notes.txt").write_text("hello")
    (a.parent / f"{'cd' * 16}.jpg").write_bytes(b"in the wrong shard")
    assert list(cachefiles.iter_cache_files(tmp_path)) == [("cache", HASH, a), ("thumbnail", other_hash, b)]
    assert list(cachefiles.iter_temp_files(tmp_path)) == [temp]
    assert list(cachefiles.iter_cache_files(tmp_path / "absent")) == []
