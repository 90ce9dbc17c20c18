"""Thumbnail rendering speed: libwatch against plain Pillow and vipsthumbnail, measured in the same run.

Makes ``--count`` 12 MP (4000x3000) JPEGs with photo-like content (gradients and
noise, quality 90) in a temporary folder, then renders a 320 px thumbnail of each
with:

* plain Pillow, the issue's baseline: ``Image.open``, a full decode (``load()``, so no
  draft), ``thumbnail((320, 320), reducing_gap=None)`` (one resample of the full
  image), JPEG encode. This is what measured 6.9 images/s when the targets were set
  (with ``vipsthumbnail`` at 15.7/s; this machine gives about the same figures);
* plain Pillow with ``thumbnail``'s default ``reducing_gap`` (a cheap integer
  ``reduce()`` of the decoded image before the resample): a stronger baseline, shown for reference;
* the floor: Pillow's ``draft()`` decode alone, no resize, no encode, no write. A
  baseline JPEG's entropy coding must be decoded in full whatever the scale, so no
  JPEG thumbnailer built on libjpeg-turbo (Pillow, vips) beats this on one core;
* ``vipsthumbnail -s 320`` with ``VIPS_CONCURRENCY=1`` (one core), one invocation for all files;
* libwatch's ``RenderPool`` with the thumbnail spec, 1 process and 2 processes
  (output fsync'ed into a cache folder, as in production; ``force`` so that every
  repeat renders again).

Each figure is the best of ``--repeat`` runs (the machine is shared). ``--noise``
sets the grain: the default 0.3 gives files of about 4.8 MB, the size of a
12 MP camera JPEG. Huffman decoding, which no draft mode can skip, grows with the
file size, so the lower the noise, the larger libwatch's lead over a full decode.

Targets (issue 4): libwatch >= 3x plain Pillow and >= 1.2x vipsthumbnail on one
core; 2 processes >= 1.7x one. ``ours/floor`` shows how close the pool is to
the decode floor; ``--noise`` shows how the ratios move with the file size.
``derived/not``: the rate for both kinds of an image (what each new image costs)
when the thumbnail is rendered from the fresh cache image, against both from the original.

    .venv/bin/python benchmarks/render.py --count 40
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import xxhash
from PIL import Image

from libwatch.catalog.rebuilds import KINDS
from libwatch.imaging import DEFAULT_SPECS
from libwatch.renderpool import DONE, RenderJob, RenderPool
from libwatch.services.rebuild import DERIVED_FROM

SIZE: Final = (4000, 3000)
EDGE: Final = 320
TARGETS: Final = {"ours/plain": 3.0, "ours/vips": 1.2, "2proc/1proc": 1.7}


def make_photos(folder: Path, count: int, noise_level: float, seed: int = 4) -> list[Path]:
    """``count`` distinct 12 MP JPEGs: smooth colour gradients under sensor-like noise."""
    rng = random.Random(seed)
    noise = Image.effect_noise((SIZE[0] + 64, SIZE[1] + 64), 40).convert("RGB")
    paths = []
    for i in range(count):
        bands = [
            Image.linear_gradient("L").rotate(rng.uniform(0, 360)).resize(SIZE, Image.Resampling.BILINEAR),
            Image.radial_gradient("L").resize(SIZE, Image.Resampling.BILINEAR),
            Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize(SIZE),
        ]
        rng.shuffle(bands)
        dx, dy = rng.randrange(64), rng.randrange(64)
        photo = Image.blend(Image.merge("RGB", bands), noise.crop((dx, dy, dx + SIZE[0], dy + SIZE[1])), noise_level)
        path = folder / f"photo-{i:04d}.jpg"
        photo.save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def plain_pillow(paths: list[Path], reducing_gap: float | None) -> None:
    """A full decode, then Pillow's thumbnail and a JPEG encode."""
    for path in paths:
        with Image.open(path) as im:
            im.load()
            im.thumbnail((EDGE, EDGE), reducing_gap=reducing_gap)
            im.save(io.BytesIO(), "JPEG", quality=80)


def decode_floor(paths: list[Path]) -> None:
    """Only the reduced-scale decode every JPEG thumbnailer must do: the entropy decoding of the whole file."""
    for path in paths:
        with Image.open(path) as im:
            im.draft("RGB", (EDGE, EDGE))
            im.load()


def vips(paths: list[Path], out: Path) -> None:
    env = dict(os.environ, VIPS_CONCURRENCY="1")
    subprocess.run(
        ["vipsthumbnail", "-s", str(EDGE), "-o", f"{out}/%s.jpg[Q=80]", *map(str, paths)], check=True, env=env
    )


def render_jobs(paths: list[Path], kinds: tuple[str, ...], *, derive: bool) -> list[RenderJob]:
    """Forced jobs (every repeat renders again), kind by kind as the worker orders a batch."""
    hashes = {p: "xxh3-128:" + xxhash.xxh3_128_hexdigest(p.read_bytes()) for p in paths}
    return [RenderJob((p, kind), str(p), kind, hashes[p], DEFAULT_SPECS[kind], force=True,
                      derive_from=DERIVED_FROM.get(kind) if derive else None)
            for kind in kinds for p in paths]


def libwatch(jobs: list[RenderJob], cache_dir: Path, processes: int) -> tuple[RenderPool, Callable[[], None]]:
    """A warmed-up RenderPool (children started) and the timed call that renders ``jobs``."""
    spec = DEFAULT_SPECS["thumbnail"]
    pool = RenderPool(cache_dir, processes=processes)
    warmup = cache_dir.parent / f"warmup-{cache_dir.name}.jpg"
    Image.new("RGB", (64, 48), "gray").save(warmup)
    warm_hash = "xxh3-128:" + xxhash.xxh3_128_hexdigest(warmup.read_bytes())
    warm_jobs = [RenderJob(i, str(warmup), f"warmup{i}", warm_hash, spec) for i in range(processes)]
    list(pool.render_many(warm_jobs))

    def run() -> None:
        failed = [o for o in pool.render_many(jobs) if o.status != DONE]
        assert not failed, failed

    return pool, run


def timed(label: str, count: int, repeat: int, run: Callable[[], None]) -> float:
    """The best rate of ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    rate = count / best
    print(f"{label:<38} {rate:7.1f} images/s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=40, help="number of 12 MP JPEGs (default 40)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement, best kept (default 3)")
    parser.add_argument("--noise", type=float, default=0.3, help="grain, 0-1 (default 0.3: about 4.8 MB a file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="libwatch-bench-") as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        (root / "vips").mkdir()
        start = time.perf_counter()
        paths = make_photos(root / "src", args.count, args.noise)
        size_mb = sum(p.stat().st_size for p in paths) / args.count / 1e6
        print(f"{args.count} images of {SIZE[0]}x{SIZE[1]}, {size_mb:.1f} MB each "
              f"(made in {time.perf_counter() - start:.0f} s); thumbnails of {EDGE} px")
        n, rep = args.count, args.repeat
        rates = {"plain": timed("plain Pillow (full decode, one resample)", n, rep,
                                lambda: plain_pillow(paths, reducing_gap=None)),
                 "reduced": timed("plain Pillow (full decode, reduce())", n, rep,
                                  lambda: plain_pillow(paths, reducing_gap=2.0)),
                 "floor": timed("floor: Pillow draft decode only", n, rep, lambda: decode_floor(paths))}
        if shutil.which("vipsthumbnail"):
            rates["vips"] = timed("vipsthumbnail (1 thread)", n, rep, lambda: vips(paths, root / "vips"))
        else:
            print("vipsthumbnail: baseline missing (apt-get install -y libvips-tools)")
        thumbnails = render_jobs(paths, ("thumbnail",), derive=False)
        for processes in (1, 2):
            pool, run = libwatch(thumbnails, root / f"cache-{processes}", processes)
            with pool:
                rates[f"{processes}proc"] = timed(f"libwatch RenderPool, {processes} process(es)", n, rep, run)
        print("both kinds of each image (1920 px cache image, then thumbnail), one process:")
        for derive in (False, True):
            label = "thumbnail from the cache image" if derive else "each from the original"
            pool, run = libwatch(render_jobs(paths, KINDS, derive=derive), root / f"both-{derive}", 1)
            with pool:
                rates[f"both-{derive}"] = timed(f"  libwatch, {label}", n, rep, run)
        report(rates)


def report(rates: dict[str, float]) -> None:
    ratios = {"ours/plain": rates["1proc"] / rates["plain"], "2proc/1proc": rates["2proc"] / rates["1proc"]}
    if "vips" in rates:
        ratios["ours/vips"] = rates["1proc"] / rates["vips"]
    for name, ratio in ratios.items():
        verdict = "meets" if ratio >= TARGETS[name] else "MISSES"
        print(f"{name:<14} {ratio:5.2f}x  ({verdict} the {TARGETS[name]}x target)")
    print(f"{'ours/reduced':<14} {rates['1proc'] / rates['reduced']:5.2f}x  (the stronger Pillow baseline)")
    print(f"{'ours/floor':<14} {rates['1proc'] / rates['floor']:5.2f}x  (1.00 would be the decode alone)")
    print(f"{'derived/not':<14} {rates['both-True'] / rates['both-False']:5.2f}x  (images/s with both kinds)")


if __name__ == "__main__":
    main()
