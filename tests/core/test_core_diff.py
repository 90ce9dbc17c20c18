"""The pure diff engine: each matching and classification rule, one at a time."""
from __future__ import annotations

import tracemalloc

import pytest

from libwatch.core.diff import (
    ADDED,
    CORRUPTED,
    DELETED,
    MODIFIED,
    RENAMED,
    TOUCHED,
    Change,
    Classified,
    Gone,
    Kept,
    NeedsHash,
    Record,
    Renames,
    Unchanged,
    classify,
    is_racy,
    match,
)
from libwatch.core.hashing import Fingerprint
from libwatch.core.walk import PERMISSION_DENIED, UNSTABLE, VANISHED, DiskEntry, Skip
from libwatch.spill import Spill

H1, H2 = "xxh3-128:" + "1" * 32, "xxh3-128:" + "2" * 32
S = 10**9


def entry(path: str, size: int = 10, mtime: int = 100 * S, ctime: int = 100 * S, inode: int = 1) -> DiskEntry:
    return DiskEntry(path, path.encode(), size, mtime, ctime, inode, 1, 1)


def record(path: str, size: int = 10, mtime: int = 100 * S, ctime: int = 100 * S, inode: int = 1,
           hash: str | None = H1, racy: bool = False) -> Record:
    return Record(path, size, mtime, ctime, inode, hash, racy, id=f"id:{path}")


def verdicts(disk: list[DiskEntry | Skip], catalog: list[Record], **kw: object) -> list[tuple[str, str, str]]:
    out = []
    for v in match(disk, catalog, **kw):  # type: ignore[arg-type]
        if isinstance(v, Skip):
            out.append(("Skip", v.path, v.reason))
        elif isinstance(v, NeedsHash):
            out.append(("NeedsHash", v.entry.path, v.reason))
        elif isinstance(v, Unchanged):
            out.append(("Unchanged", v.entry.path, ""))
        elif isinstance(v, Gone):
            out.append(("Gone", v.record.path, ""))
        else:
            assert isinstance(v, Kept)
            out.append(("Kept", v.record.path, v.skip.reason))
    return out


@pytest.mark.parametrize(
    ("disk", "reason"),
    [
        (entry("a.jpg"), None),
        (entry("a.jpg", size=11), "size"),
        (entry("a.jpg", mtime=101 * S), "mtime"),
        (entry("a.jpg", ctime=101 * S), "ctime"),
        (entry("a.jpg", inode=2), "inode"),
    ],
)
def test_quick_check(disk: DiskEntry, reason: str | None) -> None:
    expected = ("Unchanged", "a.jpg", "") if reason is None else ("NeedsHash", "a.jpg", reason)
    assert verdicts([disk], [record("a.jpg")]) == [expected]


def test_compared_fields_are_configurable() -> None:
    assert verdicts([entry("a.jpg", inode=2, ctime=1)], [record("a.jpg")], compare=frozenset()) == [
        ("Unchanged", "a.jpg", "")]
    assert verdicts([entry("a.jpg", inode=2)], [record("a.jpg")], compare=frozenset({"ctime"})) == [
        ("Unchanged", "a.jpg", "")]


def test_racy_unhashed_and_verify_force_a_hash() -> None:
    assert verdicts([entry("a.jpg")], [record("a.jpg", racy=True)]) == [("NeedsHash", "a.jpg", "racy")]
    assert verdicts([entry("a.jpg")], [record("a.jpg", hash=None)]) == [("NeedsHash", "a.jpg", "no-hash")]
    assert verdicts([entry("a.jpg")], [record("a.jpg")], verify=True) == [("NeedsHash", "a.jpg", "verify")]


def test_new_and_gone() -> None:
    assert verdicts([entry("b.jpg")], [record("a.jpg"), record("c.jpg")]) == [
        ("Gone", "a.jpg", ""), ("NeedsHash", "b.jpg", "new"), ("Gone", "c.jpg", "")]


def test_settling_files_are_skipped_and_their_records_kept() -> None:
    got = verdicts([entry("a.jpg", mtime=200 * S, ctime=200 * S), entry("b.jpg", mtime=200 * S, ctime=200 * S),
                    entry("c.jpg")],
                   [record("a.jpg")], settle_cutoff_ns=150 * S)
    assert got == [("Skip", "a.jpg", UNSTABLE), ("Kept", "a.jpg", UNSTABLE), ("Skip", "b.jpg", UNSTABLE),
                   ("NeedsHash", "c.jpg", "new")]


def test_per_file_skip_keeps_its_record() -> None:
    skip = Skip("a.jpg", b"a.jpg", VANISHED)
    assert verdicts([skip], [record("a.jpg")]) == [("Skip", "a.jpg", VANISHED), ("Kept", "a.jpg", VANISHED)]


def test_skipped_folder_keeps_every_record_under_it_and_nothing_else() -> None:
    folder = Skip("p", b"p", PERMISSION_DENIED, subtree=True)
    inner = Skip("q/r", b"q/r", VANISHED, subtree=True)
    disk: list[DiskEntry | Skip] = [entry("p-x.jpg"), folder, entry("q/a.jpg"), inner, entry("q/s.jpg")]
    catalog = [record(p) for p in ("p-x.jpg", "p-y.jpg", "p/a.jpg", "p/deep/b.jpg", "p0.jpg", "q/r/c.jpg",
                                   "q/r2.jpg", "q/s.jpg", "z.jpg")]
    assert verdicts(disk, catalog) == [
        ("Unchanged", "p-x.jpg", ""),
        ("Gone", "p-y.jpg", ""),  # sorts between "p" and "p/": not under the folder
        ("Skip", "p", PERMISSION_DENIED),
        ("Kept", "p/a.jpg", PERMISSION_DENIED),
        ("Kept", "p/deep/b.jpg", PERMISSION_DENIED),
        ("Gone", "p0.jpg", ""),
        ("NeedsHash", "q/a.jpg", "new"),
        ("Skip", "q/r", VANISHED),
        ("Kept", "q/r/c.jpg", VANISHED),
        ("Gone", "q/r2.jpg", ""),
        ("Unchanged", "q/s.jpg", ""),
        ("Gone", "z.jpg", ""),
    ]


def test_out_of_order_streams_are_refused() -> None:
    with pytest.raises(ValueError, match="disk"):
        list(match([entry("b.jpg"), entry("a.jpg")], []))
    with pytest.raises(ValueError, match="catalog"):
        list(match([], [record("a.jpg"), record("a.jpg")]))


def fp(e: DiskEntry, h: str) -> Fingerprint:
    return Fingerprint(e, h)


def classify_one(needs: NeedsHash, h: str, started: int = 1000 * S) -> Classified:
    return classify([(needs, fp(needs.entry, h))], [], scan_started_ns=started, granularity_ns=S)


def test_same_hash_is_touched_different_is_modified() -> None:
    touched = classify_one(NeedsHash(entry("a.jpg", mtime=101 * S), record("a.jpg"), "mtime"), H1)
    modified = classify_one(NeedsHash(entry("a.jpg", size=11), record("a.jpg"), "size"), H2)
    assert [(c.type, c.path, c.hash) for c in touched.changes] == [(TOUCHED, "a.jpg", H1)]
    assert [(c.type, c.record.id) for c in modified.changes] == [(MODIFIED, "id:a.jpg")]  # type: ignore[union-attr]


def test_verify_finds_corruption_but_a_racy_record_is_a_modification() -> None:
    corrupted = classify_one(NeedsHash(entry("a.jpg"), record("a.jpg"), "verify"), H2)
    racy = classify_one(NeedsHash(entry("a.jpg"), record("a.jpg", racy=True), "racy"), H2)
    ctime = classify_one(NeedsHash(entry("a.jpg", ctime=5), record("a.jpg"), "ctime"), H2)
    assert [c.type for c in corrupted.changes] == [CORRUPTED]
    assert [c.type for c in racy.changes] == [MODIFIED]
    assert [c.type for c in ctime.changes] == [MODIFIED]  # content changed, mtime restored (touch -r)


def test_rehash_with_nothing_changed_is_confirmed_not_a_change() -> None:
    racy = classify_one(NeedsHash(entry("a.jpg"), record("a.jpg", racy=True), "racy"), H1)
    unhashed = classify_one(NeedsHash(entry("a.jpg"), record("a.jpg", hash=None), "no-hash"), H1)
    verified = classify_one(NeedsHash(entry("a.jpg"), record("a.jpg"), "verify"), H1)
    assert racy.changes == unhashed.changes == verified.changes == ()
    assert [(c.record.path, c.fingerprint.hash, c.racy) for c in racy.confirmed] == [("a.jpg", H1, False)]
    assert [c.fingerprint.hash for c in unhashed.confirmed] == [H1]
    assert verified.confirmed == ()  # nothing to store: memory stays flat under --verify


def test_racy_flag_on_recent_files() -> None:
    started = 1000 * S
    assert is_racy(entry("a", mtime=started - S), started, S)
    assert not is_racy(entry("a", mtime=started - S - 1), started, S)
    got = classify_one(NeedsHash(entry("a.jpg", mtime=started), None, "new"), H1, started)
    assert [(c.type, c.racy) for c in got.changes] == [(ADDED, True)]


def test_racy_only_within_the_granularity_of_the_scan_window_a_future_date_is_not() -> None:
    started, ended = 1000 * S, 1060 * S
    assert not is_racy(entry("a", mtime=started + 2 * S), started, S)  # ahead of a window with no end given
    assert is_racy(entry("a", mtime=started + 30 * S), started, S, ended)  # written while the scan ran
    assert is_racy(entry("a", mtime=ended + S), started, S, ended)
    future = entry("a", mtime=1_924_992_000 * S, ctime=10 * S)  # touch -d 2031-01-01, long ago
    assert not is_racy(future, started, S, ended)
    assert not is_racy(future._replace(ctime_ns=started), started, S, ended)  # dated ahead just now: a write resets it
    stored = record("a", mtime=future.mtime_ns, ctime=future.ctime_ns, racy=True)
    got = classify_one(NeedsHash(future, stored, "racy"), H1, started)
    assert [(c.record.path, c.racy) for c in got.confirmed] == [("a", False)]


def test_a_file_dated_ahead_is_settling_only_while_its_ctime_is_recent() -> None:
    cutoff = 1000 * S
    old_ctime = entry("a.jpg", mtime=1_924_992_000 * S, ctime=10 * S)
    assert verdicts([old_ctime], [record("a.jpg")], settle_cutoff_ns=cutoff)[0][0] == "NeedsHash"
    assert verdicts([old_ctime._replace(ctime_ns=cutoff + 1)], [record("a.jpg")], settle_cutoff_ns=cutoff)[0][:1] == (
        "Skip",)


def test_hash_skips_keep_their_record() -> None:
    needs = NeedsHash(entry("a.jpg", size=3), record("a.jpg"), "size")
    skip = Skip("a.jpg", b"a.jpg", UNSTABLE, "changed while being read")
    got = classify([(needs, skip)], [], scan_started_ns=0, granularity_ns=S)
    assert got.changes == () and got.skipped == ((skip, needs.record),)


def test_renames_pair_by_size_and_hash_in_path_order() -> None:
    gone = [Gone(record("old/1.jpg", hash=H1)), Gone(record("old/2.jpg", hash=H1)), Gone(record("x.jpg", hash=H2)),
            Gone(record("unhashed.jpg", hash=None))]
    added = [NeedsHash(entry(p), None, "new") for p in ("new/b.jpg", "new/a.jpg", "other.jpg")]
    hashes = {"new/a.jpg": H1, "new/b.jpg": H1, "other.jpg": H1}
    got = classify([(n, fp(n.entry, hashes[n.entry.path])) for n in added], gone, scan_started_ns=0, granularity_ns=S)
    assert [(c.type, c.path, c.old_path) for c in got.changes] == [
        (RENAMED, "new/a.jpg", "old/1.jpg"),
        (RENAMED, "new/b.jpg", "old/2.jpg"),
        (ADDED, "other.jpg", None),
        (DELETED, "unhashed.jpg", None),
        (DELETED, "x.jpg", None),
    ]
    assert got.changes[0].record.id == "id:old/1.jpg"  # type: ignore[union-attr]


def test_renames_need_equal_size() -> None:
    n = NeedsHash(entry("b.jpg", size=99), None, "new")
    got = classify([(n, fp(n.entry, H1))], [Gone(record("a.jpg"))], scan_started_ns=0, granularity_ns=S)
    assert [(c.type, c.path) for c in got.changes] == [(DELETED, "a.jpg"), (ADDED, "b.jpg")]


def test_verify_calls_a_byte_flip_with_mtime_restored_corrupted_a_plain_scan_modified() -> None:
    flipped = NeedsHash(entry("a.jpg", ctime=200 * S), record("a.jpg"), "ctime")
    plain = classify([(flipped, fp(flipped.entry, H2))], [], scan_started_ns=1000 * S, granularity_ns=S)
    verified = classify([(flipped, fp(flipped.entry, H2))], [], scan_started_ns=1000 * S, granularity_ns=S,
                        verify=True)
    assert [c.type for c in plain.changes] == [MODIFIED]
    assert [c.type for c in verified.changes] == [CORRUPTED]


class _SameBuiltinHash(str):
    """A content hash whose builtin hash every other one shares: two contents under one key."""

    def __hash__(self) -> int:
        return 7


def test_renames_pair_only_equal_contents_when_their_builtin_hashes_collide() -> None:
    h1, h2 = _SameBuiltinHash(H1), _SameBuiltinHash(H2)
    renames = Renames([record("old/1.jpg", hash=h1), record("old/2.jpg", hash=h2), record("old/3.jpg", hash=h1)])
    added = [Change(ADDED, p, h, entry(p), None) for p, h in (("n/a.jpg", h2), ("n/b.jpg", h1), ("n/c.jpg", h2))]
    assert [(c.type, c.old_path) for c in map(renames.pair, added)] == [
        (RENAMED, "old/2.jpg"), (RENAMED, "old/1.jpg"), (ADDED, None)]
    assert [c.path for c in renames.deleted()] == ["old/3.jpg"]


def test_renames_read_the_gone_records_from_a_spill_in_path_order() -> None:
    gone: Spill[Record] = Spill(batch=10)
    for i in range(95):  # ten batches, the last one short
        gone.append(record(f"old/{i:03d}.jpg", hash=f"xxh3-128:{i % 40:032x}"))
    renames = Renames(gone)
    added = [Change(ADDED, f"new/{i:03d}.jpg", f"xxh3-128:{i:032x}", entry(f"new/{i:03d}.jpg"), None)
             for i in range(50)]
    paired = [renames.pair(change) for change in added]
    # contents 0..39 are each held by two or three gone records: the first in path order goes first
    assert [c.old_path for c in paired[:40]] == [f"old/{i:03d}.jpg" for i in range(40)]
    assert all(c.type == ADDED for c in paired[40:])
    assert [c.path for c in renames.deleted()] == [f"old/{i:03d}.jpg" for i in range(40, 95)]
    assert gone[94].path == "old/094.jpg" and gone[3].path == "old/003.jpg"
    with pytest.raises(IndexError):
        gone[95]


def test_renames_hold_about_100_bytes_a_gone_record_not_the_records() -> None:
    """Issue 17: a scan of a moved folder met a million gone records and held every one (680 bytes each,
    measured: the record, its Gone, its Change, its place among the candidates)."""
    count = 20_000
    gone: Spill[Record] = Spill()
    for i in range(count):
        gone.append(record(f"old/{i:06d}/{'x' * 40}.jpg", hash=f"xxh3-128:{i:032x}"))
    tracemalloc.start()
    try:
        renames = Renames(gone)
        held, _ = tracemalloc.get_traced_memory()
        deletions = sum(1 for _ in renames.deleted())
    finally:
        tracemalloc.stop()
    assert deletions == count
    assert held / count < 150, f"{held / count:.0f} bytes a gone record"


def test_a_spill_read_between_appends_finds_every_item_by_its_place() -> None:
    """Reading flushes a part batch: the batches after it do not start at multiples of the batch size."""
    spill: Spill[int] = Spill(batch=10)
    for i in range(5):
        spill.append(i)
    assert list(spill) == [0, 1, 2, 3, 4]
    for i in range(5, 27):
        spill.append(i)
    assert [spill[i] for i in (26, 0, 4, 5, 14, 15, 24, 25)] == [26, 0, 4, 5, 14, 15, 24, 25]
    assert [spill[i] for i in range(27)] == list(range(27)) == list(spill)
