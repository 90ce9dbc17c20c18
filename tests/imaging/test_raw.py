"""Camera RAW files (issue 13.7): probed and rendered from their embedded preview with rawpy (LibRaw).

The test DNGs are written here with tifffile: a 16-bit CFA raw image (RGGB) in a SubIFD
and an 8-bit RGB preview in IFD0, the layout of camera DNGs. tifffile cannot write a
JPEG-compressed preview without imagecodecs, so the preview is uncompressed (LibRaw's
``BITMAP`` thumbnail); camera files mostly carry a JPEG one, which takes the other branch
of ``imaging._open_raw`` (Pillow decoding LibRaw's JPEG bytes).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
import xxhash
from PIL import Image

from libwatch import imaging
from libwatch.imaging import DEFAULT_SPECS, ImageInfo, RenderSpec
from libwatch.renderpool import DONE, FAILED, RenderJob, RenderPool

PREVIEW = (120, 160)  # rows, columns
RED, BLUE = (200, 20, 20), (20, 20, 200)


def write_dng(path: Path, *, orientation: int = 1, preview: bool = True) -> Path:
    """A minimal DNG: left half red, right half blue in the preview; random raw data."""
    rows, cols = PREVIEW
    picture = np.zeros((rows, cols, 3), np.uint8)
    picture[:, : cols // 2] = RED
    picture[:, cols // 2:] = BLUE
    cfa = np.random.default_rng(7).integers(0, 4000, size=(240, 320)).astype(np.uint16)
    dng_tags = [(50706, "B", 4, (1, 4, 0, 0), True), (50708, "s", 0, "libwatch test camera", True),
                (274, "H", 1, orientation, True)]
    cfa_tags = [(33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True)]
    with tifffile.TiffWriter(path) as tif:
        if preview:
            tif.write(picture, photometric="rgb", subfiletype=1, subifds=1, extratags=dng_tags)
            tif.write(cfa, photometric=32803, subfiletype=0, extratags=cfa_tags)
        else:
            tif.write(cfa, photometric=32803, subfiletype=0, extratags=dng_tags + cfa_tags)
    return path


def rendered(path: Path, spec: RenderSpec = DEFAULT_SPECS["thumbnail"]) -> Image.Image:
    out = Image.open(io.BytesIO(imaging.render(path.read_bytes(), spec, camera_raw=True)))
    out.load()
    return out.convert("RGB")


def test_a_dng_is_rendered_from_its_preview(tmp_path: Path) -> None:
    out = rendered(write_dng(tmp_path / "a.dng"))
    assert out.size == (160, 120)
    left, right = out.getpixel((20, 60)), out.getpixel((140, 60))
    assert left[0] > 150 > left[2] and right[2] > 150 > right[0]


def test_the_raw_orientation_is_applied(tmp_path: Path) -> None:
    assert rendered(write_dng(tmp_path / "a.dng", orientation=6)).size == (120, 160)
    assert imaging.probe(tmp_path / "a.dng") == ImageInfo(240, 320, "DNG")


def test_a_raw_without_a_preview_is_developed_at_half_size(tmp_path: Path) -> None:
    out = rendered(write_dng(tmp_path / "a.dng", preview=False))
    assert out.size == (160, 120)  # the 320 x 240 sensor at half size


def test_probe_reads_the_raw_size(tmp_path: Path) -> None:
    assert imaging.probe(write_dng(tmp_path / "a.DNG")) == ImageInfo(320, 240, "DNG")


def test_the_render_pool_renders_raw_by_extension_and_fails_a_broken_one(tmp_path: Path) -> None:
    good = write_dng(tmp_path / "good.nef")  # any RAW extension goes to LibRaw, which reads the content
    broken = tmp_path / "broken.cr3"
    broken.write_bytes(b"not a raw file" * 100)

    def job(path: Path) -> RenderJob:
        digest = "xxh3-128:" + xxhash.xxh3_128_hexdigest(path.read_bytes())
        return RenderJob(path.name, str(path), "thumbnail", digest, DEFAULT_SPECS["thumbnail"])

    with RenderPool(tmp_path / "cache", processes=1) as pool:
        done, failed = pool.render_one(job(good)), pool.render_one(job(broken))
    assert done.status == DONE and done.path is not None
    assert Image.open(done.path).size == (160, 120)
    assert failed.status == FAILED and "LibRaw" in failed.error


@pytest.mark.parametrize("name", ["a.dng", "b.CR2", "c.cr3", "d.NEF", "e.arw", "f.raf", "g.orf", "h.rw2"])
def test_raw_extensions_are_recognised(name: str) -> None:
    assert imaging.is_camera_raw(name) and imaging.is_camera_raw(name.encode())
    assert not imaging.is_camera_raw(name.rsplit(".")[0] + ".jpg")
