"""Plain helpers shared by every test folder: real images and trees of them.

A module of its own (not conftest.py) so that any test can `from support import ...`;
`tests/` is on sys.path because the top-level conftest lives there. Sample files of every
kind (hostile ones included) come from the image factory, `imaging/images.py`: `sample(name)`.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imaging.images import HOSTILE, sample  # noqa: F401  (the image factory, for every test folder)


def write_image(path: Path, size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 40, 40),
                fmt: str | None = None) -> Path:
    """A real image file (tests use Pillow directly; libwatch's own code keeps it in one module)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def tree(root: Path, spec: Mapping[str, Any]) -> Path:
    """Build files from {"a/b.jpg": (w, h) | bytes | str}: tuples become real images."""
    for relative, content in spec.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple):
            write_image(target, content)
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return root
