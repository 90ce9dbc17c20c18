"""Memory and time of the diff engine alone on synthetic sorted streams.

Generates a catalog of N records and a disk walk of the same library with about
1 % changes (modified, touched, deleted, added, renamed), both as generators,
runs match() over them, hashes the changed part with a fake hasher, runs
classify(), and prints the time and the peak RSS growth (getrusage) and the
peak Python allocation (tracemalloc, in a second run). Target: < 150 MB at 1,000,000.

    python benchmarks/diff_memory.py --entries 1000000
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator

from libwatch.core.diff import Gone, NeedsHash, Record, Unchanged, classify, match
from libwatch.core.hashing import HASH_PREFIX, Fingerprint
from libwatch.core.walk import DiskEntry

S = 10**9


def path_of(i: int) -> str:
    return f"{i // 500:05d}/img{i:08d}.jpg"  # 500 images per folder, sorted like the walk


def catalog(n: int) -> Iterator[Record]:
    for i in range(n):
        yield Record(path_of(i), 1000 + i % 97, 100 * S + i, 100 * S + i, i, f"{HASH_PREFIX}{i:032x}", id=i)


def disk(n: int) -> Iterator[DiskEntry]:
    for i in range(n):
        kind = i % 500  # 1 % changed: 1 modified, 1 touched, 1 deleted, 1 renamed, 1 added per 500
        p = path_of(i)
        if kind == 1:
            continue  # deleted
        size, mtime = 1000 + i % 97, 100 * S + i
        if kind == 2:
            size += 1  # modified
        elif kind == 3:
            mtime += S  # touched
        if kind == 4:
            p = p.replace(".jpg", "~renamed.jpg")  # same folder, sorts right after
        yield DiskEntry(p, p.encode(), size, mtime, 100 * S + i, i, 1, 1)
        if kind == 5:
            q = p.replace(".jpg", "~new.jpg")
            yield DiskEntry(q, q.encode(), 5, 200 * S, 200 * S, n + i, 1, 1)


def fake_hash(entry: DiskEntry) -> str:
    i = entry.inode
    if entry.path.endswith("~new.jpg"):
        return f"{HASH_PREFIX}{'f' * 24}{i:08x}"
    return f"{HASH_PREFIX}{i + (1 if (i % 500) == 2 else 0):032x}"


def run(n: int) -> tuple[dict[str, int], int]:
    needs: list[NeedsHash] = []
    gone: list[Gone] = []
    unchanged = 0
    for verdict in match(disk(n), catalog(n)):
        if type(verdict) is Unchanged:
            unchanged += 1
        elif type(verdict) is NeedsHash:
            needs.append(verdict)
        elif type(verdict) is Gone:
            gone.append(verdict)
    result = classify(((v, Fingerprint(v.entry, fake_hash(v.entry))) for v in needs), gone,
                      scan_started_ns=1000 * S, granularity_ns=S)
    return dict(Counter(change.type for change in result.changes)), unchanged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000, help="records in the catalog (default 1000000)")
    args = parser.parse_args()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    counts, unchanged = run(args.entries)
    elapsed = time.perf_counter() - start
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    run(args.entries)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"{'entries':>10} {'seconds':>8} {'entries/s':>10} {'peak RSS MB':>12} "
          f"{'RSS growth MB':>14} {'traced peak MB':>15}")
    print(f"{args.entries:>10} {elapsed:>8.2f} {args.entries / elapsed:>10.0f} {rss_peak / 1024:>12.1f} "
          f"{(rss_peak - rss_before) / 1024:>14.1f} {traced_peak / 2**20:>15.1f}")
    print("unchanged", unchanged, " ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
