"""Transparency in every mode (issue 13.3): the JPEG looks as Pillow's own RGBA conversion over white, WebP keeps alpha.

Each image has an opaque left half and a right half that is transparent (a tRNS key,
a palette entry with alpha 0) or partly so (alpha 60-100). The reference is Pillow's
``convert("RGBA")`` composed over white; for high bit depth grey, whose own conversion
Pillow gets wrong (``I;16`` with a key converts to fully transparent), the reference is
the same picture at 8 bits as libwatch scales it (16-bit by /256, 32-bit stretched to its
range). Images PNG can hold go through a real file; ``I``, ``La``, ``PA`` and ``RGBa``,
which no format here stores, are rendered from memory.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image, ImageStat

from libwatch import imaging
from libwatch.imaging import RenderSpec

W, H = 64, 32
JPEG, WEBP = RenderSpec(64, "jpeg", 95), RenderSpec(64, "webp", 95)
PALETTE = [0, 0, 0, 200, 30, 30, 10, 10, 200] + [0] * 759
# JPEG's chroma subsampling and quantisation move the mean of a flat two-colour image by about 1.
TOLERANCE = 3.0


def halves(mode: str, left: Any, right: Any) -> Image.Image:
    im = Image.new(mode, (W, H), left)
    im.paste(right, (W // 2, 0, W, H))
    return im


def palette(mode: str, left: Any, right: Any) -> Image.Image:
    im = halves(mode, left, right)
    im.putpalette(PALETTE)
    return im


# name -> (image, info["transparency"] or None, in a PNG file?, reference image when not Pillow's own conversion)
Case = tuple[Callable[[], Image.Image], Any, bool, Callable[[], Image.Image] | None]
CASES: dict[str, Case] = {
    "1 tRNS key": (lambda: halves("1", 1, 0), 0, True, None),
    "L tRNS key": (lambda: halves("L", 100, 30), 30, True, None),
    "I;16 tRNS key": (lambda: halves("I;16", 30000, 65535), 65535, True,
                      lambda: halves("L", 30000 // 256, 255)),
    "I tRNS key": (lambda: halves("I", 30000, 65535), 65535, False, lambda: halves("L", 0, 255)),
    "RGB tRNS key": (lambda: halves("RGB", (200, 30, 30), (0, 0, 0)), (0, 0, 0), True, None),
    "P tRNS index": (lambda: palette("P", 1, 2), 2, True, None),
    "P palette alpha": (lambda: palette("P", 1, 2), bytes([255, 255, 100]), True, None),
    "PA": (lambda: palette("PA", (1, 255), (2, 80)), None, False, None),
    "LA": (lambda: halves("LA", (100, 255), (30, 60)), None, True, None),
    "La": (lambda: halves("LA", (100, 255), (30, 60)).convert("La"), None, False,
           lambda: halves("LA", (100, 255), (30, 60)).convert("La").convert("LA")),
    "RGBA": (lambda: halves("RGBA", (200, 30, 30, 255), (10, 10, 200, 60)), None, True, None),
    "RGBa": (lambda: halves("RGBA", (200, 30, 30, 255), (10, 10, 200, 60)).convert("RGBa"), None, False,
             lambda: halves("RGBA", (200, 30, 30, 255), (10, 10, 200, 60)).convert("RGBa").convert("RGBA")),
}


def made(name: str) -> Image.Image:
    make, key, _, _ = CASES[name]
    im = make()
    if key is not None:
        im.info["transparency"] = key
    return im


def stored(name: str) -> bytes:
    """The case as a PNG file's content."""
    buffer = io.BytesIO()
    _, key, _, _ = CASES[name]
    made(name).save(buffer, "PNG", **({"transparency": key} if key is not None else {}))
    return buffer.getvalue()


def source(name: str) -> Image.Image:
    """The image as libwatch meets it: decoded from its file, or made in memory."""
    if not CASES[name][2]:
        return made(name)
    im = Image.open(io.BytesIO(stored(name)))
    im.load()
    return im


def render(name: str, spec: RenderSpec) -> Image.Image:
    data = imaging.render(stored(name), spec) if CASES[name][2] else imaging._render_opened(made(name), spec)
    out = Image.open(io.BytesIO(data))
    out.load()
    return out


def reference(name: str) -> Image.Image:
    """RGBA: Pillow's own conversion of the picture (see the module docstring for the exceptions)."""
    _, key, _, own = CASES[name]
    if own is None:
        return source(name).convert("RGBA")
    im = own()
    if key is not None:
        im.info["transparency"] = 255
    return im.convert("RGBA")


def mean(im: Image.Image) -> list[float]:
    return ImageStat.Stat(im).mean


@pytest.mark.parametrize("name", CASES)
def test_jpeg_looks_as_pillows_rgba_over_white(name: str) -> None:
    expected = Image.new("RGBA", (W, H), (255, 255, 255, 255))
    expected.alpha_composite(reference(name))
    got = render(name, JPEG)
    assert got.mode == "RGB"
    differences = [abs(a - b) for a, b in zip(mean(got), mean(expected.convert("RGB")), strict=True)]
    assert max(differences) <= TOLERANCE, (name, mean(got), mean(expected.convert("RGB")))


@pytest.mark.parametrize("name", CASES)
def test_webp_keeps_the_alpha(name: str) -> None:
    got = render(name, WEBP)
    assert got.mode == "RGBA", name
    alpha, expected_alpha = mean(got.getchannel("A"))[0], mean(reference(name).getchannel("A"))[0]
    assert abs(alpha - expected_alpha) <= TOLERANCE, (name, alpha, expected_alpha)
    assert expected_alpha < 250  # the case has transparency to keep


def test_the_16_bit_grey_png_of_the_issue_keeps_its_right_half_white() -> None:
    got = render("I;16 tRNS key", JPEG).convert("L")
    assert got.getpixel((W // 4, H // 2)) == pytest.approx(30000 // 256, abs=3)
    assert got.getpixel((3 * W // 4, H // 2)) >= 250
