"""Helpers for the rendering tests: the Pillow corpus, hashes, a test picture, temp-file leftovers."""

from __future__ import annotations

from pathlib import Path

import xxhash
from PIL import Image, ImageDraw

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "pillow-images"


def content_hash(path: Path) -> str:
    """The catalog's hash of a file."""
    return "xxh3-128:" + xxhash.xxh3_128_hexdigest(path.read_bytes())


def photo(size: tuple[int, int]) -> Image.Image:
    """An asymmetric test picture: a gradient with a red block top-left, so any wrong rotation or flip shows."""
    im = Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").resize(size),
            Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize(size),
            Image.new("L", size, 90),
        ],
    )
    ImageDraw.Draw(im).rectangle((0, 0, size[0] // 4, size[1] // 3), fill=(230, 20, 20))
    return im


def leftovers(folder: Path) -> list[Path]:
    """Temp files (``.*.tmp``) anywhere under ``folder``."""
    return sorted(folder.rglob(".*.tmp"))
