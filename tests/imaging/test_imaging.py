"""Rendering and probing with Pillow, on images made by the tests (the image factory in images.py)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageOps, ImageStat

from libwatch.imaging import DEFAULT_SPECS, ImageError, ImageInfo, RenderSpec, probe, render

from .images import write_samples

THUMB = DEFAULT_SPECS["thumbnail"]


def rendered(path: Path | str, spec: RenderSpec) -> bytes:
    """``render`` of the file's content, read once as the render pool's children read it."""
    return render(Path(path).read_bytes(), spec)


def decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def reference(path: Path, edge: int) -> Image.Image:
    """What a careful, slow renderer shows: full decode, exif_transpose first, then the thumbnail."""
    with Image.open(path) as im:
        upright = ImageOps.exif_transpose(im).convert("RGB")
    upright.thumbnail((edge, edge))
    return upright


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return max(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean)


def test_a_12_megapixel_jpeg_gives_a_320_px_thumbnail_and_a_1920_px_cache_image(
    make_jpeg: Callable[..., Path],
) -> None:
    path = make_jpeg("big.jpg", (4000, 3000))
    thumb = decoded(rendered(path, THUMB))
    cache = decoded(rendered(path, DEFAULT_SPECS["cache"]))
    assert (thumb.format, thumb.mode, thumb.size) == ("JPEG", "RGB", (320, 240))
    assert cache.size == (1920, 1440)
    assert mean_difference(thumb, reference(path, 320)) < 6


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_after_the_draft_decode(make_jpeg: Callable[..., Path], orientation: int) -> None:
    path = make_jpeg(f"o{orientation}.jpg", (4000, 3000), orientation=orientation)
    thumb = decoded(rendered(path, THUMB))
    expected = reference(path, 320)
    assert thumb.size == expected.size == ((240, 320) if orientation >= 5 else (320, 240))
    assert mean_difference(thumb, expected) < 6  # a wrong rotation or flip moves the red block: > 40
    upright = (3000, 4000) if orientation >= 5 else (4000, 3000)
    assert probe(path) == ImageInfo(*upright, "JPEG")


def test_small_images_are_not_enlarged(make_jpeg: Callable[..., Path]) -> None:
    assert decoded(rendered(make_jpeg("small.jpg", (200, 100)), THUMB)).size == (200, 100)


def test_alpha_is_flattened_on_white_for_jpeg_and_kept_for_webp(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    im = Image.new("RGBA", (100, 50), (0, 0, 255, 255))
    im.paste((0, 0, 0, 0), (0, 0, 50, 50))
    im.save(path)
    jpeg = decoded(rendered(path, THUMB))
    assert jpeg.mode == "RGB"
    assert jpeg.getpixel((10, 25)) >= (250, 250, 250)
    assert jpeg.getpixel((90, 25))[2] > 200
    webp = decoded(rendered(path, RenderSpec(320, "webp", 80)))
    assert (webp.format, webp.mode) == ("WEBP", "RGBA")
    assert webp.getpixel((10, 25))[3] == 0


@pytest.mark.parametrize(
    "name",
    ["cmyk.jpg", "palette.gif", "grey16.tif", "grey16.png", "g4.tif", "palette_transparent.gif", "palette_alpha.png",
     "bilevel_trns.png", "la.png", "rgba.png", "lab.tif", "animated.webp", "photo.heif", "photo.avif"],
)
def test_every_colour_mode_ends_as_rgb(tmp_path: Path, name: str) -> None:
    [path] = write_samples(tmp_path, [name]).values()
    assert decoded(rendered(path, THUMB)).mode == "RGB"


def test_16_bit_images_are_scaled_not_clipped_to_white(tmp_path: Path) -> None:
    path = tmp_path / "grey16.png"
    Image.linear_gradient("L").resize((256, 256)).convert("I").point(lambda v: v * 256).convert("I;16").save(path)
    out = decoded(rendered(path, THUMB)).convert("L")
    low, high = out.getextrema()
    assert low < 20 and high > 230


def test_animated_images_give_their_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "blue")]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    r, g, b = decoded(rendered(path, THUMB)).getpixel((32, 32))
    assert r > 200 and b < 50


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "cannot identify image"), (b"this is a text file, not a JPEG\n" * 20, "cannot identify image")],
)
def test_empty_and_non_image_jpgs_fail_with_a_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    for call in (lambda: rendered(path, THUMB), lambda: probe(path)):
        with pytest.raises(ImageError) as caught:
            call()
        assert caught.value.reason == reason


def test_a_truncated_jpeg_fails_and_never_loads_partially(make_jpeg: Callable[..., Path]) -> None:
    path = make_jpeg("cut.jpg", (800, 600))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageError, match="truncated"):
        rendered(path, THUMB)


def test_the_pixel_limit_warning_is_treated_as_a_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (40, 40)).save(path)
    # Pillow warns between MAX_IMAGE_PIXELS and twice that, and raises above; both must fail.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match=r"^decompression bomb \("):
        rendered(path, THUMB)


def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        probe(fifo)


def test_a_missing_file_is_an_os_error_not_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe(os.fsencode(tmp_path / "gone.jpg"))


def test_probe_reads_the_header_of_a_tiff_that_pillow_rotates_itself(tmp_path: Path) -> None:
    samples = write_samples(tmp_path, ["orientation_6.tif", "photo.jpg"])
    assert probe(samples["orientation_6.tif"]) == ImageInfo(64, 96, "TIFF")  # stored 96 x 64, turned by its tag
    assert probe(samples["photo.jpg"]) == ImageInfo(128, 128, "JPEG")


@pytest.mark.parametrize("bad", [{"max_edge": 0}, {"format": "png"}, {"quality": 0}, {"quality": 101}])
def test_render_spec_refuses_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RenderSpec(**{"max_edge": 320, **bad})  # type: ignore[arg-type]


def test_spec_extensions() -> None:
    assert (RenderSpec(1).ext, RenderSpec(1, "webp").ext) == ("jpg", "webp")


def test_only_imaging_imports_pillow() -> None:
    code = (
        "import sys, libwatch.renderpool, libwatch.messages, libwatch.cachefiles; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('PIL', 'pillow_heif')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_heif_and_avif_are_readable(tmp_path: Path) -> None:
    for path in write_samples(tmp_path, ["photo.heif", "photo.avif"]).values():
        assert decoded(rendered(path, THUMB)).size == (128, 128)
