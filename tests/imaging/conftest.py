"""Fixtures for the rendering tests: real images made on the spot, a full disk."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from .images import photo


@pytest.fixture
def make_jpeg(tmp_path: Path) -> Callable[..., Path]:
    """Write a JPEG of ``size`` (with an EXIF orientation when given) and return its path."""

    def make(name: str, size: tuple[int, int], orientation: int | None = None, quality: int = 90) -> Path:
        path = tmp_path / name
        exif = Image.Exif()
        if orientation is not None:
            exif[0x0112] = orientation
        photo(size).save(path, "JPEG", quality=quality, exif=exif.tobytes())
        return path

    return make


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: writes of more than that fail with ENOSPC. Skips when mounting is refused."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up: {result.stderr.strip() or result.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)

