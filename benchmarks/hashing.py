"""Hashing throughput: libwatch against xxh128sum, on one big file and on many small files.

Measures, in one run and on a warm page cache (each side runs once untimed first):
  big:   `xxh128sum FILE` vs libwatch hash_file on one file (default 2 GiB)
  small: `find DIR -type f -print0 | xargs -0 xxh128sum` vs libwatch hash_files (process pool)
         on many files (default 20,000 of 100 KiB)
and prints times and ratios (libwatch rate / baseline rate; above 1 is faster).
Targets (issue 3): big >= 1.2, small >= 1.0.

    python benchmarks/hashing.py --big-mib 256 --small-count 2000
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from libwatch.core.hashing import Fingerprint, hash_file, hash_files
from libwatch.core.walk import DiskEntry, walk


def timed(run: Callable[[], object], repeat: int) -> float:
    run()  # warm the page cache and the code
    return min(_once(run) for _ in range(repeat))


def _once(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def make_files(top: str, big_mib: int, small_count: int, small_kib: int) -> None:
    block = os.urandom(1 << 20)
    with open(os.path.join(top, "big.jpg"), "wb") as f:
        for _ in range(big_mib):
            f.write(block)
    small = os.path.join(top, "small")
    os.makedirs(small)
    for i in range(small_count):
        folder = os.path.join(small, f"{i // 1000:03d}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{i:06d}.jpg"), "wb") as f:
            f.write(i.to_bytes(4, "big") + block[: small_kib * 1024 - 4])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big-mib", type=int, default=2048, help="size of the big file in MiB (default 2048)")
    parser.add_argument("--small-count", type=int, default=20_000, help="number of small files (default 20000)")
    parser.add_argument("--small-kib", type=int, default=100, help="size of each small file in KiB (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement; the best is kept")
    parser.add_argument("--workers", type=int, default=None, help="hashing processes (default: usable CPUs)")
    parser.add_argument("--dir", default=None, help="where to build the files (default: a temp dir, removed after)")
    args = parser.parse_args()
    if shutil.which("xxh128sum") is None:
        print("xxh128sum not found: apt-get install -y xxhash", file=sys.stderr)
        return 1
    top = tempfile.mkdtemp(prefix="libwatch-bench-", dir=args.dir)
    try:
        make_files(top, args.big_mib, args.small_count, args.small_kib)
        root = os.fsencode(top)
        big = next(e for e in walk(root) if isinstance(e, DiskEntry) and e.path == "big.jpg")
        small = [e for e in walk(root + b"/small") if isinstance(e, DiskEntry)]

        def libwatch_big() -> None:
            assert isinstance(hash_file(root, big), Fingerprint)

        def libwatch_small() -> None:
            assert all(isinstance(r, Fingerprint) for r in hash_files(root + b"/small", small, workers=args.workers))

        rows = [
            ("big", f"{args.big_mib} MiB x 1", big.size,
             timed(lambda: subprocess.run(["xxh128sum", os.path.join(top, "big.jpg")], check=True,
                                          stdout=subprocess.DEVNULL), args.repeat),
             timed(libwatch_big, args.repeat), 1.2),
            ("small", f"{args.small_kib} KiB x {args.small_count}", sum(e.size for e in small),
             timed(lambda: subprocess.run(f"find '{top}/small' -type f -print0 | xargs -0 xxh128sum >/dev/null",
                                          shell=True, check=True), args.repeat),
             timed(libwatch_small, args.repeat), 1.0),
        ]
    finally:
        shutil.rmtree(top)
    print(f"{'case':<6} {'files':<18} {'baseline s':>10} {'libwatch s':>10} {'GB/s':>6} {'ratio':>6} {'target':>6}")
    for case, files, nbytes, base, ours, target in rows:
        print(f"{case:<6} {files:<18} {base:>10.3f} {ours:>10.3f} "
              f"{nbytes / ours / 1e9:>6.2f} {base / ours:>6.2f} {target:>6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
