"""The default extension list against Pillow's own registered extensions (issue 13.7)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from libwatch import imaging  # noqa: F401  registers pillow-heif's openers, as the renders do
from libwatch.core.walk import IMAGE_EXTENSIONS, RAW_EXTENSIONS, WalkOptions, walk

# Registered by Pillow but not tracked, and why (the README's list).
NOT_TRACKED = {
    **dict.fromkeys(("ico", "cur", "icns", "xbm", "xpm"), "icons and cursors"),
    **dict.fromkeys(("dds", "blp", "ftc", "ftu", "gbr"), "game textures and paint brushes"),
    **dict.fromkeys(("fli", "flc", "heics", "heifs", "avifs"), "animations and image sequences"),
    **dict.fromkeys(("eps", "ps"), "PostScript, which Pillow decodes by running Ghostscript on it"),
    **dict.fromkeys(("pdf", "palm"), "Pillow writes these, it does not read them"),
    **dict.fromkeys(("wmf", "emf"), "Pillow decodes them on Windows only"),
    **dict.fromkeys(("bufr", "grib", "h5", "hdf", "mpeg", "mpg"), "stubs without a decoder in Pillow"),
    "iim": "IPTC metadata, not a picture",
}


def test_every_still_image_extension_pillow_decodes_is_tracked() -> None:
    registered = {ext.lstrip(".") for ext in Image.registered_extensions()}
    assert registered - IMAGE_EXTENSIONS == set(NOT_TRACKED), "a new Pillow extension: track it or say why not"
    assert IMAGE_EXTENSIONS - registered == RAW_EXTENSIONS  # nothing tracked that Pillow does not know, but RAW
    for ext in IMAGE_EXTENSIONS - RAW_EXTENSIONS:  # Pillow can open it, not only save it
        fmt = Image.registered_extensions()["." + ext]
        assert fmt in Image.OPEN or fmt == "MPO" and "JPEG" in Image.OPEN, ext  # MPO opens through the JPEG plugin


def test_jfif_jpe_and_raw_files_are_walked(tmp_path: Path) -> None:
    names = ["a.jpg", "b.jfif", "c.jpe", "d.JPE", "e.dng", "f.NEF", "g.cr3", "h.txt", "i.pdf"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    found: list[Any] = [e.path for e in walk(tmp_path, WalkOptions()) if hasattr(e, "size")]
    assert sorted(found) == sorted(names[:7])
