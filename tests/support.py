"""Plain helpers shared by every test folder: real images and trees of them.

A module of its own (not conftest.py) so that any test can `from support import ...`;
`tests/` is on sys.path because the top-level conftest lives there. Sample files of every
kind (hostile ones included) come from the image factory, `imaging/images.py`: `sample(name)`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import pytest

from imaging.images import HOSTILE, sample  # noqa: F401  (the image factory, for every test folder)


def unavailable(reason: str, variable: str) -> NoReturn:
    """Skip the test with `reason`, or fail it when the environment sets `variable`=1 (as `.ci/run`
    does for everything CI must not skip: the broker, systemd, the browser, namespaces, the corpus)."""
    if os.environ.get(variable) == "1":
        pytest.fail(f"{reason} and {variable}=1")
    pytest.skip(f"{reason} ({variable}=1 makes this a failure)")


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
