"""Decoding and rendering images with Pillow: the only module of libwatch that imports PIL.

``render`` turns a source image's content into a cache image or a thumbnail;
``probe`` reads only a file's header. Every way Pillow can fail on a bad file becomes an
``ImageError`` with a one-line reason; an I/O error opening the source (it
vanished, permission denied) is left as the ``OSError`` it is, so that callers
can tell "this image is broken" from "this file is not there".
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Final

import pillow_heif
from PIL import ExifTags, Image, ImageMath, UnidentifiedImageError, features

from libwatch.core.walk import RAW_EXTENSIONS
from libwatch.errors import ImageError
from libwatch.messages import CACHE, THUMBNAIL

pillow_heif.register_heif_opener()
if not features.check("avif") and hasattr(pillow_heif, "register_avif_opener"):
    # Pillow < 11.2 has no AVIF plugin; pillow-heif < 0.22 can supply one.
    pillow_heif.register_avif_opener()

FORMATS: Final = {"jpeg": "jpg", "webp": "webp"}
# After a draft decode the remaining reduction is under 2x, where bicubic (Pillow's thumbnail
# default) looks like Lanczos at a fraction of the cost. Where it is under NEAR_SIZE (a 1920 px
# cache image from a 4000 px JPEG drafted to 2000 px), bilinear is as good: measured against
# a Lanczos resize of the full decode, 0.1 dB less PSNR than bicubic, in 60 % of the time.
RESAMPLE: Final = Image.Resampling.BICUBIC
NEAR_RESAMPLE: Final = Image.Resampling.BILINEAR
NEAR_SIZE: Final = 1.25
# Pillow's own default gap: reduce() by integer steps while at least 2x too large, then resample.
REDUCING_GAP: Final = 2.0
WHITE: Final = (255, 255, 255)
# A rendering serves as the source of a smaller one when it is at least this much larger.
DERIVE_MARGIN: Final = 2
MAX_REASON: Final = 200
UNIDENTIFIED: Final = "cannot identify image"
BOMB: Final = "decompression bomb"

# EXIF orientation → the transpose that displays the image upright (as ImageOps.exif_transpose does).
_TRANSPOSE: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES: Final = frozenset({5, 6, 7, 8})
# LibRaw's flip of a RAW file → the transpose that shows it upright; 5 and 6 swap the axes.
_RAW_FLIP: Final = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}
_RAW_SWAPS: Final = frozenset({5, 6})
# Premultiplied alpha modes and the plain ones Pillow converts them to.
_PREMULTIPLIED: Final = {"La": "LA", "RGBa": "RGBA"}


@dataclass(frozen=True, slots=True)
class RenderSpec:
    """How to render: longest edge in pixels (never enlarged), output format and quality."""

    max_edge: int
    format: str = "jpeg"  # "jpeg" | "webp"
    quality: int = 85

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        if self.max_edge < 1:
            raise ValueError(f"max_edge must be at least 1, not {self.max_edge}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be 1-100, not {self.quality}")

    @property
    def ext(self) -> str:
        """The file extension of this format (``jpg``, ``webp``)."""
        return FORMATS[self.format]


DEFAULT_SPECS: Final = {CACHE: RenderSpec(1920, "jpeg", 85), THUMBNAIL: RenderSpec(320, "jpeg", 80)}


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """An image's size as displayed (EXIF orientation applied) and its format as Pillow names it."""

    width: int
    height: int
    format: str




def probe(path: str | bytes) -> ImageInfo:
    """Size and format from the header alone (the pixels are not decoded).

    Raises ImageError for a file that is not a decodable image, OSError when it cannot be opened.
    """
    if is_camera_raw(path):
        return _probe_raw(path)
    with _open_regular(path) as fp, _pillow_errors():
        with Image.open(fp) as im:
            # The PNG plugin's getexif() decodes the whole image to look for a late
            # eXIf chunk; the base class reads only what the header already gave.
            orientation = Image.Image.getexif(im).get(ExifTags.Base.Orientation, 1)
            width, height = im.size
            # The TIFF plugin already reports the upright size (it rotates while loading).
            if orientation in _SWAPS_AXES and im.format != "TIFF":
                width, height = height, width
            return ImageInfo(width, height, im.format or "unknown")


def hopeless(error: ImageError) -> bool:
    """Whether a ``probe`` failure means that no render of the same bytes can succeed.

    The render opens the file as the probe does, so a file Pillow cannot identify, or one
    whose header declares a decompression bomb, fails every render: the scan records it
    ``failed`` at once instead of asking for two renders that must fail (200,000
    unreadable ``.jpg`` once made 400,000 requests). Any other probe failure (e.g. odd
    metadata) leaves the render to decide.
    """
    return error.reason.startswith((UNIDENTIFIED, BOMB))


def is_camera_raw(name: str | bytes) -> bool:
    """Whether ``name`` (a file name or path) has a camera RAW extension (``core.walk.RAW_EXTENSIONS``)."""
    ext = os.fsdecode(name).rpartition(".")[2].lower()
    return ext in RAW_EXTENSIONS


def _probe_raw(path: str | bytes) -> ImageInfo:
    """A RAW file's size as shown (LibRaw's flip applied) from its header; LibRaw reads it by the open descriptor."""
    import rawpy  # numpy and LibRaw only where a RAW file is met

    with _open_regular(path) as fp, _pillow_errors():
        # /proc/self/fd: LibRaw opens the file this process opened without following links.
        with rawpy.imread(f"/proc/self/fd/{fp.fileno()}") as raw:
            sizes = raw.sizes
            width, height = (sizes.height, sizes.width) if sizes.flip in _RAW_SWAPS else (sizes.width, sizes.height)
            return ImageInfo(width, height, os.fsdecode(path).rpartition(".")[2].upper())


def _open_raw(data: bytes) -> Image.Image:
    """The embedded preview of a camera RAW file, upright; a half-size development when it has none.

    Camera files carry a full-size or near full-size JPEG preview, which decodes in a
    fraction of the time of developing the raw data and shows the camera's own rendering.
    LibRaw does not rotate previews: its ``flip`` is applied here.
    """
    import rawpy

    with rawpy.imread(io.BytesIO(data)) as raw:
        flip = raw.sizes.flip
        try:
            thumb = raw.extract_thumb()
        except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
            picture = Image.fromarray(raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8))
        else:
            if isinstance(thumb.data, bytes):  # ThumbFormat.JPEG
                with Image.open(io.BytesIO(thumb.data)) as preview:
                    picture = preview.convert("RGB")
            else:  # ThumbFormat.BITMAP: an RGB array
                picture = Image.fromarray(thumb.data)
    return picture.transpose(_RAW_FLIP[flip]) if flip in _RAW_FLIP else picture


def render(data: bytes, spec: RenderSpec, *, camera_raw: bool = False) -> bytes:
    """The encoded ``spec`` rendering of the image file content ``data``.

    Upright, RGB, longest edge at most ``max_edge``.

    The caller reads the file once and checks its hash, so what is decoded is exactly
    what was hashed. JPEGs are decoded at a reduced scale (``draft``) and EXIF
    orientation is applied to the small result, so a 12 MP photo is never decoded at
    full size. Animated images give their first frame. Raises ImageError for any
    decoding problem (decompression bombs and truncated files included).
    ``camera_raw`` (see ``is_camera_raw``): the content is a camera RAW file, rendered from its preview.
    """
    with _pillow_errors():
        if camera_raw:
            return _render_opened(_open_raw(data), spec)
        with Image.open(io.BytesIO(data)) as im:
            return _render_opened(im, spec)


def derive(rendition: str | bytes, spec: RenderSpec) -> bytes | None:
    """``spec`` rendered from a larger rendering of the same image (a cache image), or None if it cannot serve.

    A 1920 px cache image decodes in a fraction of the time of a camera original, and a
    thumbnail at a sixth of its size shows nothing of its JPEG compression. It serves
    when it is a readable image at least DERIVE_MARGIN times the wanted edge; anything
    else (gone, truncated, too small) leaves the caller to render from the original.
    """
    try:
        with _open_regular(rendition) as fp, _pillow_errors():
            with Image.open(fp) as im:
                if max(im.size) < DERIVE_MARGIN * spec.max_edge:
                    return None
                return _render_opened(im, spec)
    except (OSError, ImageError):
        return None


def _render_opened(im: Image.Image, spec: RenderSpec) -> bytes:
    im.draft("RGB", _fitted(im.size, spec.max_edge))
    im.load()
    # Read after load(): the TIFF plugin applies and removes the orientation while loading.
    orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    icc = _rgb_icc_profile(im)
    small = _to_rgb(im)
    near = max(small.size) < NEAR_SIZE * spec.max_edge
    small.thumbnail((spec.max_edge, spec.max_edge), NEAR_RESAMPLE if near else RESAMPLE, reducing_gap=REDUCING_GAP)
    if orientation in _TRANSPOSE:
        small = small.transpose(_TRANSPOSE[orientation])
    data = _encode(small, spec, icc)
    _check_gif_frames(im)  # after encoding: seeking replaces im's pixels, which small may share
    return data


def _open_regular(path: str | bytes) -> IO[bytes]:
    # O_NONBLOCK: opening a FIFO named *.jpg must not hang; it is refused below.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    fp = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        fp.close()
        raise ImageError("not a regular file")
    return fp


def _check_gif_frames(im: Image.Image) -> None:
    """Seek through a GIF's later frames, so one that declares a bomb-sized canvas fails the file.

    Only the first frame is rendered, but a GIF frame may grow the canvas beyond
    the header's size, and any viewer that animates the file would decode it.
    """
    if im.format == "GIF":
        for frame in range(1, getattr(im, "n_frames", 1)):
            im.seek(frame)


def _fitted(size: tuple[int, int], max_edge: int) -> tuple[int, int]:
    """The size ``size`` shrinks to inside a ``max_edge`` square (at least 1x1)."""
    width, height = size
    scale = min(1.0, max_edge / max(width, height, 1))
    return max(1, int(width * scale)), max(1, int(height * scale))


def _rgb_icc_profile(im: Image.Image) -> bytes | None:
    """The embedded ICC profile when it describes RGB data, so colours survive the re-encode."""
    icc = im.info.get("icc_profile")
    if im.mode in ("RGB", "RGBA") and isinstance(icc, bytes) and icc[16:20] == b"RGB ":
        return icc
    return None


def _to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as RGB, or RGBA when it has transparency (palette, LA, PA, tRNS keys in every mode …)."""
    if im.mode in _PREMULTIPLIED:
        im = im.convert(_PREMULTIPLIED[im.mode])  # Pillow converts La to nothing else
    if im.mode.startswith("I") or im.mode == "F":
        mask = _key_mask(im)
        im = _to_8bit(im)
        im.info.pop("transparency", None)
        if mask is not None:
            im = im.convert("LA")
            im.putalpha(mask)
    target = "RGBA" if im.has_transparency_data else "RGB"
    return im if im.mode == target else im.convert(target)


def _key_mask(im: Image.Image) -> Image.Image | None:
    """The alpha (L: 0 where the pixel is the tRNS key, else 255) of a high bit depth grey image, or None.

    Taken before the depth is reduced: the key is in the image's own units (a 16-bit key
    left in 16-bit units after scaling to 8 bits matched nothing, and rendered black).
    """
    key = im.info.get("transparency")
    if not isinstance(key, (int, float)) or isinstance(key, bool):
        return None
    wide = im if im.mode in ("I", "F") else im.convert("I")
    differs: Image.Image = ImageMath.lambda_eval(lambda args: args["a"] != key, a=wide)
    return differs.point(lambda v: v * 255).convert("L")


def _to_8bit(im: Image.Image) -> Image.Image:
    """High bit depth grey (I;16*, I, F) scaled into L: 16-bit by /256, others stretched to their range."""
    if im.mode.startswith("I;16"):
        return im.convert("I").point(lambda v: v / 256).convert("L")
    low, high = im.getextrema()
    if low >= 0 and high <= 255:
        return im.convert("L")
    scale = 255 / (high - low)
    return im.point(lambda v: (v - low) * scale).convert("L")


def _encode(im: Image.Image, spec: RenderSpec, icc: bytes | None) -> bytes:
    if spec.format == "jpeg" and im.mode == "RGBA":
        flat = Image.new("RGB", im.size, WHITE)
        flat.paste(im, mask=im.getchannel("A"))
        im = flat
    out = io.BytesIO()
    im.save(out, spec.format.upper(), quality=spec.quality, icc_profile=icc)
    return out.getvalue()


@contextmanager
def _pillow_errors() -> Iterator[None]:
    """Turns decompression-bomb warnings and every exception Pillow raises for a bad file into ImageError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's warnings about odd but readable metadata
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except ImageError:
            raise
        except Exception as exc:  # Pillow raises a dozen unrelated types for corrupt input
            raise ImageError(_reason(exc)) from exc


def _reason(exc: Exception) -> str:
    """One line saying what is wrong with the file."""
    detail = " ".join(str(exc).split())
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        reason = f"{BOMB} ({detail})"
    elif isinstance(exc, UnidentifiedImageError):
        reason = UNIDENTIFIED
    elif isinstance(exc, MemoryError):
        reason = "out of memory while decoding"
    elif "truncated" in detail.lower() or isinstance(exc, EOFError):
        reason = f"truncated file ({detail or type(exc).__name__})"
    else:
        reason = (f"cannot decode ({type(exc).__name__}: {detail})" if detail
                  else f"cannot decode ({type(exc).__name__})")
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"
