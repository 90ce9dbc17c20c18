"""The cache layout, atomic writes and a cache folder others may write, on real folders (and a real full tmpfs)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from libwatch import cachefiles
from libwatch.errors import EXIT_REFUSED, CacheUnsafe

from .images import leftovers

HEX = "0f" * 16
HASH = f"xxh3-128:{HEX}"
NOBODY = 65534


def test_layout_is_kind_shard_hex_without_the_colon(tmp_path: Path) -> None:
    assert cachefiles.cache_path(tmp_path, "thumbnail", HASH, "jpg") == tmp_path / "thumbnail" / "0f" / f"{HEX}.jpg"


@pytest.mark.parametrize("bad", ["", HEX, "xxh3-128:" + "0F" * 16, "xxh3-128:../../etc", "sha1:" + HEX])
def test_malformed_hashes_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        cachefiles.cache_path(tmp_path, "cache", bad, "jpg")


def test_write_atomic_creates_replaces_and_leaves_nothing_behind(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    old_umask = os.umask(0o077)  # the modes are the setting's, whatever the umask
    try:
        cachefiles.write_atomic(cache, "cache", HASH, "jpg", b"first")
        dest = cachefiles.write_atomic(cache, "cache", HASH, "jpg", b"second")
    finally:
        os.umask(old_umask)
    assert dest == cachefiles.cache_path(cache, "cache", HASH, "jpg")
    assert dest.read_bytes() == b"second"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640  # the service's group may read, others not
    for folder in (cache, cache / "cache", dest.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    assert leftovers(tmp_path) == []


def test_the_modes_are_a_setting(tmp_path: Path) -> None:
    dest = cachefiles.write_atomic(tmp_path / "cache", "cache", HASH, "jpg", b"x", file_mode=0o644)
    assert (stat.S_IMODE(dest.stat().st_mode), stat.S_IMODE(dest.parent.stat().st_mode)) == (0o644, 0o755)
    assert cachefiles.dir_mode(0o600) == 0o700


def test_a_failed_write_removes_its_temp_file_and_keeps_the_old_file(tmp_path: Path) -> None:
    dest = cachefiles.write_atomic(tmp_path, "cache", HASH, "jpg", b"old")
    with pytest.raises(TypeError):
        cachefiles.write_atomic(tmp_path, "cache", HASH, "jpg", "not bytes")  # type: ignore[arg-type]
    assert dest.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_enospc_is_raised_and_no_temp_file_is_left(full_disk: Path) -> None:
    with pytest.raises(OSError) as caught:
        cachefiles.write_atomic(full_disk, "cache", HASH, "jpg", os.urandom(200_000))
    assert caught.value.errno == errno.ENOSPC
    assert leftovers(full_disk) == []
    assert not cachefiles.cache_path(full_disk, "cache", HASH, "jpg").exists()


def test_existing_finds_any_format_but_never_a_temp_file(tmp_path: Path) -> None:
    assert cachefiles.existing(tmp_path / "absent", "thumbnail", HASH) is None
    assert not (tmp_path / "absent").exists()  # looking creates nothing
    assert cachefiles.existing(tmp_path, "thumbnail", HASH) is None
    shard = tmp_path / "thumbnail" / "0f"
    shard.mkdir(parents=True)
    (shard / f".{HEX}.jpg.abc.tmp").write_bytes(b"half")
    assert cachefiles.existing(tmp_path, "thumbnail", HASH) is None
    webp = cachefiles.write_atomic(tmp_path, "thumbnail", HASH, "webp", b"w")
    assert cachefiles.existing(tmp_path, "thumbnail", HASH) == webp
    assert cachefiles.existing(tmp_path, "cache", HASH) is None


def test_only_regular_jpg_and_webp_files_count_as_renderings(tmp_path: Path) -> None:
    shard = tmp_path / "thumbnail" / "0f"
    shard.mkdir(parents=True)
    (shard / f"{HEX}.txt").write_bytes(b"not a rendering")
    (shard / f"{HEX}.jpg").symlink_to(tmp_path / "elsewhere.jpg")
    (tmp_path / "elsewhere.jpg").write_bytes(b"x")
    assert cachefiles.existing(tmp_path, "thumbnail", HASH) is None
    assert list(cachefiles.iter_cache_files(tmp_path)) == []


def test_writing_one_format_removes_the_other_and_nothing_else(tmp_path: Path) -> None:
    jpg = cachefiles.write_atomic(tmp_path, "cache", HASH, "jpg", b"x")
    other = cachefiles.write_atomic(tmp_path, "cache", "xxh3-128:" + "0f" + "1" * 30, "jpg", b"x")
    stranger = jpg.with_suffix(".x")
    stranger.write_bytes(b"root's own file")
    os.chown(stranger, 0, 0)
    webp = cachefiles.write_atomic(tmp_path, "cache", HASH, "webp", b"x")
    assert (jpg.exists(), webp.exists(), other.exists(), stranger.read_bytes()) == (False, True, True,
                                                                                   b"root's own file")


def test_iter_cache_files_lists_renderings_and_skips_temp_files_and_strangers(tmp_path: Path) -> None:
    other_hash = "xxh3-128:" + "ab" * 16
    a = cachefiles.write_atomic(tmp_path, "cache", HASH, "jpg", b"x")
    b = cachefiles.write_atomic(tmp_path, "thumbnail", other_hash, "webp", b"x")
    temp = a.parent / f".{a.name}.123.tmp"
    temp.write_bytes(b"half")
    (a.parent / "notes.txt").write_text("hello")
    (a.parent / f"{HEX}.txt").write_text("hello")
    (a.parent / f"{'cd' * 16}.jpg").write_bytes(b"in the wrong shard")
    assert list(cachefiles.iter_cache_files(tmp_path)) == [("cache", HASH, a), ("thumbnail", other_hash, b)]
    assert list(cachefiles.iter_temp_files(tmp_path)) == [temp]
    assert list(cachefiles.iter_cache_files(tmp_path / "absent")) == []


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777, 0o1777])
def test_a_cache_folder_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(mode)
    for attempt in (lambda: cachefiles.open_root(cache),
                    lambda: cachefiles.write_atomic(cache, "cache", HASH, "jpg", b"x"),
                    lambda: cachefiles.existing(cache, "cache", HASH)):
        with pytest.raises(CacheUnsafe, match=r"^the cache folder .* is writable by .*chmod go-w\)$"):
            attempt()
    assert CacheUnsafe.exit_code == EXIT_REFUSED == 65
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("level", ["kind", "shard"])
def test_symlinked_kind_and_shard_folders_are_never_followed(tmp_path: Path, level: str) -> None:
    """Another user's link in the cache must not make the worker write or delete outside it (issue 12.7)."""
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    outside.mkdir()
    victim = outside / ("0f" if level == "kind" else "") / f"{HEX}.x"
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_bytes(b"root-only")
    os.chown(victim, 0, 0)
    victim.chmod(0o600)
    (outside / ("0f" if level == "kind" else "") / f"{HEX}.webp").write_bytes(b"planted")
    (cache / "cache").mkdir(parents=True)
    if level == "kind":
        (cache / "cache").rmdir()
        (cache / "cache").symlink_to(outside)
    else:
        (cache / "cache" / "0f").symlink_to(outside)
    with pytest.raises(CacheUnsafe, match="is not a folder"):
        cachefiles.write_atomic(cache, "cache", HASH, "jpg", b"x")
    with pytest.raises(CacheUnsafe, match="is not a folder"):
        cachefiles.existing(cache, "cache", HASH)
    assert victim.read_bytes() == b"root-only"
    assert sorted(p.name for p in outside.rglob("*") if p.is_file()) == sorted([f"{HEX}.x", f"{HEX}.webp"])
    assert list(cachefiles.iter_cache_files(cache)) == []


def test_a_folder_of_another_user_in_the_cache_is_refused(tmp_path: Path) -> None:
    shard = tmp_path / "cache" / "0f"
    shard.mkdir(parents=True)
    os.chown(shard, NOBODY, NOBODY)
    (shard / f"{HEX}.jpg").write_bytes(b"planted by nobody")
    with pytest.raises(CacheUnsafe, match=f"belongs to user {NOBODY}"):
        cachefiles.write_atomic(tmp_path, "cache", HASH, "jpg", b"x")
    with pytest.raises(CacheUnsafe):
        cachefiles.existing(tmp_path, "cache", HASH)
    assert list(cachefiles.iter_cache_files(tmp_path)) == []
