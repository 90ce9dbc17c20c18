"""The diff engine: pure functions from sorted disk and catalog streams to changes.

:func:`match` merges the walk with the catalog and decides, per path, whether a
file is unchanged, needs hashing, is gone, or must be kept untouched because
the disk could not be read there. :func:`classify` turns the hashed results and
the gone records into changes, pairing renames in a second pass. No I/O here.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from libwatch.core.hashing import Fingerprint
from libwatch.core.paths import SEP
from libwatch.core.walk import UNSTABLE, DiskEntry, Same, Skip, sort_key

ADDED: Final = "added"
MODIFIED: Final = "modified"
TOUCHED: Final = "touched"
RENAMED: Final = "renamed"
DELETED: Final = "deleted"
CORRUPTED: Final = "corrupted"
CHANGE_TYPES: Final = (ADDED, MODIFIED, TOUCHED, RENAMED, DELETED, CORRUPTED)

# Reasons a file is sent to the hash check (greppable, one per branch of quick_check).
NEW: Final = "new"
SIZE: Final = "size"
MTIME: Final = "mtime"
CTIME: Final = "ctime"
INODE: Final = "inode"
NO_HASH: Final = "no-hash"
RACY: Final = "racy"
VERIFY: Final = "verify"

DEFAULT_COMPARE: Final[frozenset[str]] = frozenset({CTIME, INODE})
SETTLING: Final = "settling"


class Record(NamedTuple):
    """The catalog's view of one present file.

    A named tuple, like ``DiskEntry``: a no-change rescan reads one per file from the
    local stat index, and building a frozen dataclass costs several times more.
    """

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    hash: str | None
    racy: bool = False
    id: object = None


class Span(NamedTuple):
    """Catalog records of one folder that follow each other in path order, not yet decoded.

    ``path`` is the first record's; ``load`` decodes them all. :func:`match` drops a span
    unread when the walk vouched for its folder with a :class:`Same`.
    """

    path: str
    load: Callable[[], Iterable[Record]]


@dataclass(frozen=True, slots=True)
class Unchanged:
    """The quick check passed: the record stands as it is."""

    entry: DiskEntry
    record: Record


@dataclass(frozen=True, slots=True)
class NeedsHash:
    """The file must be hashed to decide; ``reason`` is the first quick-check field that failed."""

    entry: DiskEntry
    record: Record | None
    reason: str


@dataclass(frozen=True, slots=True)
class Gone:
    """A record whose path the walk did not find."""

    record: Record


@dataclass(frozen=True, slots=True)
class Kept:
    """A record shadowed by a skip (the file or a folder above it could not be read): left untouched."""

    record: Record
    skip: Skip


Matched = Unchanged | NeedsHash | Gone | Kept | Skip | Same


def quick_check(entry: DiskEntry, record: Record, *, verify: bool = False,
                compare: frozenset[str] = DEFAULT_COMPARE) -> str | None:
    """Why ``entry`` must be hashed against ``record``, or ``None`` when it is unchanged.

    Size and mtime are always compared (as rsync does); ctime and inode when in
    ``compare`` (inodes are unstable on some network mounts, as borg notes).
    """
    if entry.size != record.size:
        return SIZE
    if entry.mtime_ns != record.mtime_ns:
        return MTIME
    if CTIME in compare and entry.ctime_ns != record.ctime_ns:
        return CTIME
    if INODE in compare and entry.inode != record.inode:
        return INODE
    if record.hash is None:
        return NO_HASH
    if record.racy:
        return RACY
    if verify:
        return VERIFY
    return None


def match(
    disk: Iterable[DiskEntry | Skip | Same],
    catalog: Iterable[Record | Span],
    *,
    verify: bool = False,
    settle_cutoff_ns: int | None = None,
    compare: frozenset[str] = DEFAULT_COMPARE,
) -> Iterator[Matched]:
    """Merge the sorted walk with the sorted catalog, one verdict per item.

    Every disk item and every record is accounted for exactly once: a disk
    entry as ``Unchanged``/``NeedsHash`` (or, when written after
    ``settle_cutoff_ns``, as ``Skip("unstable", "settling")``), a disk skip as
    itself, a record as ``Unchanged``/``NeedsHash``/``Gone``, or ``Kept`` when
    a skip covers its path (the same path, or a skipped folder above it).
    A :class:`Same` folder is yielded as itself and stands for the records of
    the files directly in it, which yield nothing (the caller vouches that they
    are exactly the folder's files: the walk compared them with the same records).
    A :class:`Span` in the catalog stream stands for its records: dropped whole in
    a Same folder, else decoded when the merge reaches it.
    Raises ValueError when either stream is not in strictly ascending order.
    """
    disk_it = iter(disk)
    cat_it = iter(catalog)
    loaded: Iterator[Record] = iter(())  # the records of the span being matched
    d = next(disk_it, None)
    r = next(cat_it, None)
    last_d: str | None = None
    last_r: str | None = None
    folders: list[Skip] = []  # skipped folders enclosing the merge position, outermost first
    same: list[str] = []  # sort keys of the Same folders enclosing the merge position, outermost first
    while d is not None or r is not None:
        dk = sort_key(d) if d is not None else None
        if dk is not None and last_d is not None and dk <= last_d:
            raise ValueError(f"disk stream out of order: {dk!r} after {last_d!r}")
        if r is not None and last_r is not None and r.path <= last_r:
            raise ValueError(f"catalog stream out of order: {r.path!r} after {last_r!r}")
        if r is None or (dk is not None and dk < r.path):
            assert d is not None and dk is not None
            if type(d) is Same:
                same.append(dk)
                yield d
            else:
                yield _disk_only(d, settle_cutoff_ns, folders)  # type: ignore[arg-type]
            last_d, d = dk, next(disk_it, None)
        elif isinstance(r, Span):
            if _in_same_folder(r.path, same):
                last_r = r.path
            else:
                loaded = iter(r.load())
            r = next(loaded, None) or next(cat_it, None)
        elif d is None or r.path < dk:  # type: ignore[operator]
            if not _in_same_folder(r.path, same):
                while folders and not r.path.startswith(sort_key(folders[-1])):
                    folders.pop()
                yield Kept(r, folders[-1]) if folders else Gone(r)
            last_r, r = r.path, next(loaded, None) or next(cat_it, None)
        else:
            yield from _both(d, r, verify, settle_cutoff_ns, compare)  # type: ignore[arg-type]
            last_d, d = dk, next(disk_it, None)
            last_r, r = r.path, next(loaded, None) or next(cat_it, None)


def _in_same_folder(path: str, same: list[str]) -> bool:
    """Whether ``path`` lies directly in the innermost enclosing Same folder (dropping the ones passed)."""
    while same and not path.startswith(same[-1]):
        same.pop()
    return bool(same) and SEP not in path[len(same[-1]):]


def recently_written(entry: DiskEntry, cutoff_ns: int) -> bool:
    """Whether the file was written after ``cutoff_ns``: its mtime and its ctime both later.

    A write sets both to the filesystem's now; a date set ahead with ``touch -d`` moves the
    mtime only (the ctime records when that was done), so such a file settles like any other.
    """
    return entry.mtime_ns > cutoff_ns and entry.ctime_ns > cutoff_ns


def _settling(entry: DiskEntry, settle_cutoff_ns: int | None) -> Skip | None:
    if settle_cutoff_ns is not None and recently_written(entry, settle_cutoff_ns):
        return Skip(entry.path, entry.raw, UNSTABLE, SETTLING)
    return None


def _disk_only(item: DiskEntry | Skip, settle_cutoff_ns: int | None, folders: list[Skip]) -> NeedsHash | Skip:
    if type(item) is Skip:
        if item.subtree:
            while folders and not item.path.startswith(sort_key(folders[-1])):
                folders.pop()
            folders.append(item)
        return item
    assert type(item) is DiskEntry
    return _settling(item, settle_cutoff_ns) or NeedsHash(item, None, NEW)


def _both(
    item: DiskEntry | Skip, record: Record, verify: bool, settle_cutoff_ns: int | None, compare: frozenset[str]
) -> Iterator[Matched]:
    if type(item) is Skip:
        yield item
        yield Kept(record, item)
        return
    assert type(item) is DiskEntry
    settling = _settling(item, settle_cutoff_ns)
    if settling is not None:
        yield settling
        yield Kept(record, settling)
        return
    reason = quick_check(item, record, verify=verify, compare=compare)
    yield Unchanged(item, record) if reason is None else NeedsHash(item, record, reason)


def is_racy(entry: DiskEntry, scan_started_ns: int, granularity_ns: int, scan_ended_ns: int | None = None) -> bool:
    """Whether a file may still change without its stat showing it (git's "racy clean").

    A later write sets the mtime to the filesystem's now, so it can leave the recorded mtime
    as it was only when that mtime lies within ``granularity_ns`` of the time the file was
    read: in the scan's window ``[started - granularity, ended + granularity]`` (``ended``
    defaults to ``started``), both by the filesystem's clock. A date far ahead
    (``touch -d 2031-01-01``) is outside the window: a write now would set it back to now.
    """
    low = scan_started_ns - granularity_ns
    high = (scan_started_ns if scan_ended_ns is None else scan_ended_ns) + granularity_ns
    return low <= entry.mtime_ns <= high


@dataclass(frozen=True, slots=True)
class Change:
    """One detected change; ``record`` is the catalog state before (the old record for a rename)."""

    type: str
    path: str
    hash: str | None
    entry: DiskEntry | None
    record: Record | None
    old_path: str | None = None
    racy: bool = False


REBUILD_TYPES: Final = frozenset({ADDED, MODIFIED, CORRUPTED})


def needs_rebuild(change: Change) -> bool:
    """Whether a change asks for new renderings: new or changed content (a touch or a rename keeps them)."""
    return change.type in REBUILD_TYPES


@dataclass(frozen=True, slots=True)
class Confirmed:
    """A record hashed again (racy, verify, no hash) and found unchanged, whose hash or racy flag must be stored."""

    record: Record
    fingerprint: Fingerprint
    racy: bool


@dataclass(frozen=True, slots=True)
class Classified:
    """Changes in path order, skips met while hashing (with the record to keep), and records to refresh."""

    changes: tuple[Change, ...]
    skipped: tuple[tuple[Skip, Record | None], ...]
    confirmed: tuple[Confirmed, ...] = ()


def judge(
    needs: NeedsHash,
    result: Fingerprint,
    *,
    scan_started_ns: int,
    granularity_ns: int,
    scan_ended_ns: int | None = None,
    verify: bool = False,
) -> Change | Confirmed | None:
    """The change of one hashed file (before rename pairing), a record to refresh, or ``None``.

    Same hash → touched (or, with identical stat, only ``Confirmed`` when the
    record was racy or unhashed); a different hash → modified, or corrupted when
    a ``verify`` scan found size and mtime unchanged (also when only ctime or inode
    moved: flipping a byte and restoring the mtime still changes the ctime).
    A change or confirmation is racy by :func:`is_racy` over the scan's window.
    """
    racy = is_racy(result.entry, scan_started_ns, granularity_ns, scan_ended_ns)
    verdict = _verdict(needs, result, verify)
    if verdict is not None:
        return Change(verdict, result.entry.path, result.hash, result.entry, needs.record, racy=racy)
    record = needs.record
    assert record is not None
    return Confirmed(record, result, racy) if record.racy or racy or record.hash is None else None


class Records(Protocol):
    """Records by their place, in path order: a list, or a spill file's records read back."""

    def __len__(self) -> int: ...

    def __getitem__(self, place: int, /) -> Record: ...

    def __iter__(self) -> Iterator[Record]: ...


class Renames:
    """Pairs added files with gone records of the same (size, hash): one rename each, in path order.

    Give it the gone records in path order as a sequence it may index (a spill file's records:
    it keeps none of them itself), then each change in path order (:meth:`pair`); the records
    left unpaired are the deletions (:meth:`deleted`). What it holds is about 100 bytes per gone
    record with a hash: the place of each under the builtin hash of its (size, hash), checked
    against the record itself when an added file asks, and one byte per record for "paired".
    """

    def __init__(self, gone: Records) -> None:
        self._gone = gone
        places: dict[int, int | list[int]] = {}  # hash((size, hash)) -> its place, or places (last first in path order)
        for place, record in enumerate(gone):
            if record.hash is None:
                continue
            key = hash((record.size, record.hash))
            known = places.get(key)
            if known is None:
                places[key] = place
            elif isinstance(known, int):
                places[key] = [known, place]
            else:
                known.append(place)
        for known in places.values():
            if isinstance(known, list):
                known.reverse()  # taken from the end: path order
        self._places = places
        self._paired = bytearray(len(gone))

    def pair(self, change: Change) -> Change:
        """``change``, or the rename it makes of a gone record with the same content."""
        if change.type != ADDED or change.entry is None or change.hash is None or not self._places:
            return change
        old = self._take(change.entry.size, change.hash)
        if old is None:
            return change
        return Change(RENAMED, change.path, change.hash, change.entry, old, old.path, change.racy)

    def _take(self, size: int, content: str) -> Record | None:
        """The first unpaired gone record (path order) of this size and hash, now paired; None if there is none."""
        key = hash((size, content))
        known = self._places.get(key)
        if known is None:
            return None
        places = [known] if isinstance(known, int) else known
        for i in range(len(places) - 1, -1, -1):
            record = self._gone[places[i]]
            if record.size == size and record.hash == content:  # not another content under the same builtin hash
                self._paired[places.pop(i)] = 1
                if not places:
                    del self._places[key]
                elif len(places) == 1:
                    self._places[key] = places[0]
                return record
        return None

    def deleted(self) -> Iterator[Change]:
        """The gone records no added file took, as deletions in path order (read from the sequence again)."""
        paired = self._paired
        return (Change(DELETED, record.path, record.hash, None, record)
                for place, record in enumerate(self._gone) if not paired[place])


def classify(
    hashed: Iterable[tuple[NeedsHash, Fingerprint | Skip]],
    gone: Iterable[Gone],
    *,
    scan_started_ns: int,
    granularity_ns: int,
    scan_ended_ns: int | None = None,
    verify: bool = False,
) -> Classified:
    """Decide the change of every hashed file (:func:`judge`) and gone record, then pair renames.

    A deleted record and an added file with the same (size, hash) become one rename,
    paired in path order (:class:`Renames`).
    """
    changes: list[Change] = []
    skipped: list[tuple[Skip, Record | None]] = []
    confirmed: list[Confirmed] = []
    for needs, result in hashed:
        if type(result) is Skip:
            skipped.append((result, needs.record))
            continue
        assert type(result) is Fingerprint
        outcome = judge(needs, result, scan_started_ns=scan_started_ns, granularity_ns=granularity_ns,
                        scan_ended_ns=scan_ended_ns, verify=verify)
        if type(outcome) is Change:
            changes.append(outcome)
        elif outcome is not None:
            confirmed.append(outcome)  # type: ignore[arg-type]
    renames = Renames(sorted((g.record for g in gone), key=_path_of))
    paired = [renames.pair(change) for change in sorted(changes, key=_path_of)]
    return Classified(tuple(sorted([*paired, *renames.deleted()], key=_change_order)), tuple(skipped),
                      tuple(confirmed))


def _verdict(needs: NeedsHash, fp: Fingerprint, verify: bool) -> str | None:
    """The change type of a hashed file, ``None`` when nothing about it changed."""
    record = needs.record
    if record is None:
        return ADDED
    entry = fp.entry
    same_quick = entry.size == record.size and entry.mtime_ns == record.mtime_ns
    if record.hash is None:
        return _touch_or_none(entry, record) if same_quick else MODIFIED
    if fp.hash == record.hash:
        return _touch_or_none(entry, record)
    if same_quick and (needs.reason == VERIFY or (verify and needs.reason in (CTIME, INODE))):
        return CORRUPTED
    return MODIFIED


def _touch_or_none(entry: DiskEntry, record: Record) -> str | None:
    same = (entry.size, entry.mtime_ns, entry.ctime_ns, entry.inode) == (
        record.size,
        record.mtime_ns,
        record.ctime_ns,
        record.inode,
    )
    return None if same else TOUCHED


def _path_of(item: Change | Record) -> str:
    return item.path


def _change_order(change: Change) -> tuple[str, int]:
    return change.path, CHANGE_TYPES.index(change.type)
