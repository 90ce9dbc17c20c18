"""The test image factory: every kind of image (and non-image) a library can hold, made on the spot.

The tests make their own files, so `make test` needs nothing beside the checkout. `SAMPLES` names
one file per case that Pillow's own test corpus gave the tests before: plain photos, every colour
mode, EXIF orientations, animations, HEIF/AVIF, and the hostile ones (truncated, corrupt, bombs).
`EXPECTED` says how rendering each one ends: None (rendered) or the start of the failure reason.
Pillow's corpus (``../shared/corpus``) stays an extra pass: see the ``corpus`` fixture.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

import xxhash
from PIL import Image, ImageDraw, PngImagePlugin

EXIF_ORIENTATION: Final = 0x0112


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


def encoded(im: Image.Image, fmt: str, **options: object) -> bytes:
    """``im`` saved in ``fmt`` (a Pillow format name) as bytes."""
    out = io.BytesIO()
    im.save(out, fmt, **options)
    return out.getvalue()


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return exif.tobytes()


def _oriented_jpeg(orientation: int) -> Callable[[], bytes]:
    # 96 x 64 so that a missed rotation shows in the output's size.
    return lambda: encoded(photo((96, 64)), "JPEG", quality=90, exif=_exif(orientation))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with(width: int, height: int, idat: bytes) -> bytes:
    """A PNG (8-bit greyscale) with the given header size and raw IDAT payload."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _gif_bomb(*, screen: bool) -> bytes:
    """A tiny GIF that claims 65535 x 65535 pixels in its screen descriptor, or (screen=False) a
    two-frame GIF whose second frame does, which only a renderer looking at every frame sees."""
    frames = [Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")]
    data = bytearray(encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    huge = struct.pack("<HH", 0xFFFF, 0xFFFF)
    at = 6 if screen else _gif_descriptors(bytes(data))[1] + 5
    data[at:at + 4] = huge
    return bytes(data)


def _gif_descriptors(data: bytes) -> list[int]:
    """The offsets of a GIF's image descriptors (',' left top width height flags)."""
    def table(flags: int) -> int:
        return 3 << ((flags & 7) + 1) if flags & 0x80 else 0

    def sub_blocks(at: int) -> int:
        while data[at]:
            at += data[at] + 1
        return at + 1

    found, at = [], 13 + table(data[10])
    while data[at] != 0x3B:  # the trailer
        if data[at] == 0x21:  # an extension: introducer, label, sub-blocks
            at = sub_blocks(at + 2)
        else:
            found.append(at)
            at = sub_blocks(at + 10 + table(data[at + 9]) + 1)  # + the LZW minimum code size
    return found


def _text_bomb_png() -> bytes:
    """A PNG whose compressed text chunk inflates past Pillow's limit (MAX_TEXT_CHUNK, 1 MiB)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "0" * (PngImagePlugin.MAX_TEXT_CHUNK * 4), zip=True)
    return encoded(Image.new("L", (16, 16), 128), "PNG", pnginfo=info)


def _corrupt_strip_tiff() -> bytes:
    """An uncompressed TIFF whose strip offset points far past the end of the file."""
    data = bytearray(encoded(photo((64, 64)), "TIFF"))
    offset_of_first_ifd = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[offset_of_first_ifd:offset_of_first_ifd + 2])[0]
    for i in range(entries):
        at = offset_of_first_ifd + 2 + 12 * i
        tag, kind, count = struct.unpack("<HHI", data[at:at + 8])
        if tag == 273 and count == 1:  # StripOffsets, held in the entry itself
            data[at + 8:at + 12] = struct.pack("<I" if kind == 4 else "<HH",
                                               *((1 << 30,) if kind == 4 else (0xFFFF, 0)))
    return bytes(data)


def _corrupt_lzw_tiff() -> bytes:
    """An LZW TIFF whose compressed strip is noise: libtiff's decoder fails on it."""
    data = bytearray(encoded(photo((64, 64)), "TIFF", compression="tiff_lzw"))
    data[8:200] = bytes(range(192))
    return bytes(data)


def _palette_alpha_png() -> bytes:
    im = photo((64, 64)).quantize(16)
    return encoded(im, "PNG", transparency=bytes([0, 128] + [255] * 14))


def _bilevel_trns_png() -> bytes:
    im = Image.new("1", (64, 64), 1)
    ImageDraw.Draw(im).rectangle((0, 0, 31, 63), fill=0)
    return encoded(im, "PNG", transparency=0)


def _transparent_gif() -> bytes:
    im = photo((64, 64)).quantize(32)
    return encoded(im, "GIF", transparency=0)


def _grey16(fmt: str) -> bytes:
    im = Image.linear_gradient("L").resize((64, 64)).convert("I").point(lambda v: v * 257).convert("I;16")
    return encoded(im, fmt)


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "blue", "green")]
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _heif() -> bytes:
    import pillow_heif

    out = io.BytesIO()
    pillow_heif.from_pillow(photo((128, 128))).save(out, quality=80)
    return out.getvalue()


def _oriented_png() -> bytes:
    return encoded(photo((96, 64)), "PNG", exif=_exif(6))


def _oriented_tiff() -> bytes:
    return encoded(photo((96, 64)).convert("1"), "TIFF", compression="group4", tiffinfo={274: 6})


SAMPLES: Final[dict[str, Callable[[], bytes]]] = {
    # Plain images, one per format libwatch reads.
    "photo.jpg": lambda: encoded(photo((128, 128)), "JPEG", quality=90),
    "tiny.png": lambda: encoded(photo((7, 13)), "PNG"),
    "photo.webp": lambda: encoded(photo((128, 128)), "WEBP"),
    "photo.heif": _heif,
    "photo.avif": lambda: encoded(photo((128, 128)), "AVIF"),
    # Colour modes and transparency.
    "cmyk.jpg": lambda: encoded(photo((64, 64)).convert("CMYK"), "JPEG"),
    "grey16.png": lambda: _grey16("PNG"),
    "grey16.tif": lambda: _grey16("TIFF"),
    "lab.tif": lambda: encoded(photo((64, 64)).convert("LAB"), "TIFF"),
    "g4.tif": lambda: encoded(photo((64, 64)).convert("1"), "TIFF", compression="group4"),
    "palette.gif": lambda: encoded(photo((64, 64)).quantize(64), "GIF"),
    "palette_transparent.gif": _transparent_gif,
    "palette_alpha.png": _palette_alpha_png,
    "bilevel_trns.png": _bilevel_trns_png,
    "la.png": lambda: encoded(photo((64, 64)).convert("LA"), "PNG"),
    "rgba.png": lambda: encoded(photo((64, 64)).convert("RGBA"), "PNG"),
    # EXIF orientations (each of the eight in a JPEG, one in a PNG and one in a TIFF tag).
    **{f"orientation_{n}.jpg": _oriented_jpeg(n) for n in range(1, 9)},
    "orientation_6.png": _oriented_png,
    "orientation_6.tif": _oriented_tiff,
    # Animations: the first frame is rendered.
    "animated.gif": lambda: _animated("GIF"),
    "animated.webp": lambda: _animated("WEBP"),
    # Hostile files: nothing to decode, cut short, corrupt, bombs.
    "empty.jpg": lambda: b"",
    "text.jpg": lambda: b"this is a text file, not a JPEG\n",
    "corrupt.png": lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256))[:72],
    "corrupt_stream.png": lambda: _png_with(64, 64, b"\x78\x9c" + b"\xff" * 200),
    "corrupt_strip.tif": _corrupt_strip_tiff,
    "corrupt_lzw.tif": _corrupt_lzw_tiff,
    "truncated.jpg": lambda: _truncated(encoded(photo((400, 300)), "JPEG", quality=95)),
    "truncated.png": lambda: _truncated(encoded(photo((400, 300)), "PNG", compress_level=0)),
    "bomb.gif": lambda: _gif_bomb(screen=True),
    "bomb_frame.gif": lambda: _gif_bomb(screen=False),
    "bomb.png": lambda: _png_with(30000, 30000, zlib.compress(b"")),
    "text_bomb.png": _text_bomb_png,
}

# How rendering each sample ends: None when it renders, else the start of the failure reason.
FAILS: Final[dict[str, str]] = {
    "empty.jpg": "cannot identify",
    "text.jpg": "cannot identify",
    "corrupt.png": "cannot identify",
    "corrupt_stream.png": "cannot decode",
    "corrupt_strip.tif": "truncated",
    "corrupt_lzw.tif": "cannot decode",
    "truncated.jpg": "truncated",
    "truncated.png": "truncated",
    "bomb.gif": "decompression bomb",
    "bomb_frame.gif": "decompression bomb",
    "bomb.png": "decompression bomb",
    "text_bomb.png": "cannot decode",
}
EXPECTED: Final[dict[str, str | None]] = {name: FAILS.get(name) for name in SAMPLES}
RENDERABLE: Final = tuple(name for name, failure in EXPECTED.items() if failure is None)
HOSTILE: Final = tuple(FAILS)


@functools.cache
def sample(name: str) -> bytes:
    """The bytes of one sample (made once per test session)."""
    return SAMPLES[name]()


def write_samples(folder: Path, names: Iterable[str] = SAMPLES) -> dict[str, Path]:
    """Write the named samples into ``folder`` (created); returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        paths[name] = folder / name
        paths[name].write_bytes(sample(name))
    return paths
