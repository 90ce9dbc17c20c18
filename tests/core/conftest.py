"""Builders for real temp trees of real images."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from support import sample

Tree = Callable[[Mapping[str | bytes, bytes | None]], bytes]


@pytest.fixture(scope="session")
def jpeg() -> bytes:
    """A real JPEG from the image factory."""
    return sample("photo.jpg")


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """Build files (relative path -> content; None makes a folder) under tmp_path/lib, return the root as bytes."""
    root = os.fsencode(tmp_path / "lib")
    os.makedirs(root, exist_ok=True)

    def build(spec: Mapping[str | bytes, bytes | None]) -> bytes:
        for rel, content in spec.items():
            path = root + b"/" + os.fsencode(rel)
            if content is None:
                os.makedirs(path, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(content)
        return root

    return build
