"""Detection: walk a library, match it with the catalog, hash and classify. Writes nothing.

`detect` returns a frozen :class:`Plan`, the same for `diff` and `scan`, so that the two
can never disagree. The records a scan leaves as they are go to a stat-index spool given
by the caller (:class:`~libwatch.statindex.NoSpool` when no index is to be written).
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from pymongo.database import Database

from libwatch import statindex
from libwatch.catalog import files as catalog_files
from libwatch.config import Settings
from libwatch.core import diff as engine
from libwatch.core.diff import DELETED, Change, Record, needs_rebuild
from libwatch.core.hashing import Fingerprint, hash_tagged
from libwatch.core.parallel_walk import walk
from libwatch.core.paths import collection_of
from libwatch.core.walk import DiskEntry, FolderCheck, Same, Skip, WalkOptions
from libwatch.errors import GuardRefused, RootNotListable, RootUnavailable
from libwatch.library import Library
from libwatch.messages import DEFAULT_PRIORITY
from libwatch.services import libraries as library_service
from libwatch.services.probing import probe_header
from libwatch.services.scan_changes import Changes
from libwatch.spill import Spill

log = logging.getLogger("libwatch.scan")

# Timestamps closer than this to the scan's start may hide a later same-size write
# (git's "racy clean"): such records are hashed again next time. 2 s covers FAT/SMB.
GRANULARITY_NS: Final = 2_000_000_000
ERROR_REASONS: Final = frozenset({"io-error"})
# Below this many files the walk takes a few tens of milliseconds: forking worker processes
# would save about what it costs. (A first scan has no index to tell: it is bound by hashing.)
PARALLEL_WALK_FILES: Final = 10_000
# The racy window's end is read again every this many hashed files (a file touched beside the index).
CLOCK_EVERY: Final = 1000
FILE_CHANGES: Final = engine.CHANGE_TYPES

Db = Database[dict[str, Any]]
Spool = statindex.Spool | statindex.NoSpool
# The phases of a scan as the progress line names them, and what each counts.
WALKING: Final = "walking"  # files
HASHING: Final = "hashing"  # bytes, of a total known when the walk ends
WRITING: Final = "writing the catalog"  # records and events
PUBLISHING: Final = "publishing"  # rebuild requests


class Progress(Protocol):
    """Where a scan reports its phases and what it finished (`libwatch.cli.progress.Progress` draws it)."""

    def start_phase(self, phase: str, total: int | None = None, *, unit: str = "file") -> None: ...

    def advance(self, items: int = 1) -> None: ...


class NoProgress:
    """The default progress sink: nothing to show."""

    def start_phase(self, phase: str, total: int | None = None, *, unit: str = "file") -> None:
        """Nothing to show."""

    def advance(self, items: int = 1) -> None:
        """Nothing to show."""


no_progress: Final = NoProgress()


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """How one scan or diff runs (the command line's options)."""

    verify: bool = False
    settle_s: float = 0.0
    trigger: str = "manual"
    dry_run: bool = False
    publish: bool = True
    allow_mass_delete: bool = False
    max_delete: float | None = None
    wait_lock_s: float = 0.0
    priority: int = DEFAULT_PRIORITY
    skip_if_locked: bool = False  # another scan of the library: a recorded skip and exit 0, not Locked (75)


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a scan would record; built without writing anything."""

    library: Library
    started_at: datetime
    changes: Changes  # on disk, in path order, each with its probe
    refresh: Spill[engine.Confirmed]
    skipped: tuple[Skip, ...]
    tallies: Mapping[str, tuple[int, int]]
    collections_before: Mapping[str, dict[str, Any]]
    collections_added: tuple[str, ...]
    collections_removed: tuple[str, ...]
    scanned: int
    unchanged: int
    present_before: int  # catalog records met in the merge
    hashed_bytes: int
    used_index: bool
    subtree: str = ""  # the folder scanned, relative to the root ("" for the whole library)

    @property
    def counts(self) -> dict[str, int]:
        """The document's `counts`: files per outcome, problems, collections and bytes hashed."""
        by_type = self.changes.by_type
        errors = sum(1 for s in self.skipped if s.reason in ERROR_REASONS) + self.changes.unreadable
        return {"scanned": self.scanned, "unchanged": self.unchanged,
                **{kind: by_type.get(kind, 0) for kind in FILE_CHANGES},
                "skipped": sum(1 for s in self.skipped if s.reason not in ERROR_REASONS), "errors": errors,
                "collections_added": len(self.collections_added),
                "collections_removed": len(self.collections_removed), "hashed_bytes": self.hashed_bytes}

    @property
    def has_changes(self) -> bool:
        return bool(len(self.changes) or self.collections_added or self.collections_removed)

    @property
    def writes(self) -> bool:
        """Whether recording the plan writes to the catalog (changes, or hashes confirmed again)."""
        return self.has_changes or bool(len(self.refresh))

    @property
    def rebuilds(self) -> int:
        """Rebuild requests recording the plan makes pending: one per kind per new or changed image.

        An image whose probe says no render can succeed is recorded failed, not pending.
        """
        return len(self.library.rebuild_kinds) * self.changes.to_render


@dataclass(slots=True)
class _Seen:
    """What one detection has met so far (private to :func:`detect`)."""

    spool: Spool
    scanned: int = 0
    unchanged: int = 0
    present_before: int = 0
    hashed_bytes: int = 0
    fingerprints: int = 0
    to_hash_bytes: int = 0
    skipped: list[Skip] = field(default_factory=list)
    needs_hash: Spill[engine.NeedsHash] = field(default_factory=Spill)
    # The records the walk did not find, in path order. Rename pairing reads them by place, in the
    # added files' order: small batches keep a read cheap when that order is not theirs (36 µs a
    # rename for 100,000 shuffled, 1 ms with batches of 1,000).
    gone: Spill[Record] = field(default_factory=lambda: Spill(batch=32))
    tallies: defaultdict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))

    def tally(self, folder: str, count: int, size: int) -> None:
        tally = self.tallies[folder]
        tally[0] += count
        tally[1] += size


def walk_options(library: Library) -> WalkOptions:
    return WalkOptions(include=library.include, exclude=library.excludes, hidden=library.hidden,
                       follow_symlinks=library.follow_symlinks, cross_mounts=library.cross_mounts)


def _catalog_identity(settings: Settings) -> str:
    where = settings.mongo_uri or f"embedded:{settings.store_dir}"
    return f"{where.split('@')[-1]}|{settings.database}"


def index_file(settings: Settings, library: Library) -> Path:
    """Where this host keeps the stat index of `library` for the configured catalog."""
    return statindex.index_path(settings.home, _catalog_identity(settings), library.name)


def index_root(library: Library) -> str:
    """The root an index is valid for: the library's folder and its registration time."""
    return library.path + "|" + str(library.created_at)


def _open_index(settings: Settings, library: Library) -> statindex.Index | None:
    index = statindex.read(index_file(settings, library), library=library.name, generation=library.generation,
                           root=index_root(library))
    if index is None:
        log.info("reading the catalog of %s (no valid local index)", library.name)
    return index


def _folder_check(digests: dict[str, bytes], settle_cutoff_ns: int | None) -> FolderCheck:
    """Whether a folder's walked files are exactly those of the index (then none of them is looked at again)."""

    def unchanged(folder: str, files: list[DiskEntry]) -> bool:
        expected = digests.get(folder)
        if expected is None:
            return False
        if settle_cutoff_ns is not None and any(engine.recently_written(entry, settle_cutoff_ns) for entry in files):
            return False  # settling files are reported as skipped, as the per-file match does
        return statindex.folder_digest(files) == expected

    return unchanged


def walk_workers(files: int) -> int:
    """Processes for walking a library of about ``files`` images: one per CPU this process may run on, if large."""
    return len(os.sched_getaffinity(0)) if files >= PARALLEL_WALK_FILES else 1


def _root_is_empty(root: str) -> bool:
    """Whether the root has no entries at all (an unmounted mount point); raises if it cannot be listed."""
    try:
        with os.scandir(root) as entries:
            return next(entries, None) is None
    except OSError as error:
        raise RootUnavailable(f"library root {root} is unavailable: {error.strerror}; nothing was changed") from None


def detect(db: Db, settings: Settings, library: Library, options: ScanOptions, *,
           progress: Progress = no_progress, spool: Spool = statindex.NO_SPOOL, subtree: str = "") -> Plan:
    """Detect what changed between the disk and the catalog; writes nothing to the catalog.

    With ``subtree`` (a folder's path relative to the root, checked by the caller) only that
    folder is walked and compared: deletions, collections and the guards are judged within it.
    Raises :class:`~libwatch.errors.RootUnavailable` when the root (or the subtree) cannot be
    listed, or is empty while the catalog has files under it (an unmounted share).
    """
    library_service.check_link(library)
    now, started_at = statindex.clock_ns(index_file(settings, library)), datetime.now(UTC)
    top = os.path.join(library.path, subtree) if subtree else library.path
    root_empty = _root_is_empty(top)
    settle_cutoff = now - int(options.settle_s * 1e9) if options.settle_s > 0 else None
    seen = _Seen(spool)
    if subtree:
        spool.carry_outside(subtree)
    index = _open_index(settings, library)
    check = _folder_check(index.folders, settle_cutoff) if index is not None and not options.verify else None
    try:
        with contextlib.closing(walk(library.path, walk_options(library), unchanged=check, under=subtree,
                                     workers=walk_workers(index.count if index is not None else 0))) as walked:
            # Without an index the records are read in ranges cut by the collections' counts: read
            # them first (while the walk's worker processes are under way).
            before = None if index is not None else _collections(db, library, subtree)
            records = (_spans_under(index.spans(), subtree) if before is None
                       else catalog_files.present_records(db, library.name, before, under=subtree))
            progress.start_phase(WALKING, unit="file")
            disk = _counted(walked, seen, progress)
            for verdict in engine.match(disk, records, verify=options.verify, settle_cutoff_ns=settle_cutoff,
                                        compare=frozenset(library.compare)):
                _sort_verdict(verdict, seen)
    except RootNotListable as error:
        raise RootUnavailable(f"{top} is unavailable: {error.strerror}; nothing was changed") from None
    if root_empty and seen.present_before:
        raise RootUnavailable(f"{'folder' if subtree else 'library root'} {top} is empty while the catalog has "
                              f"{seen.present_before} files (an unmounted share?); nothing was marked deleted")
    changes, refresh = Changes(), Spill[engine.Confirmed]()
    _hash_and_judge(library, seen, changes, refresh, progress, _Window(index_file(settings, library), now),
                    verify=options.verify)
    tallies = {path: (count, size) for path, (count, size) in seen.tallies.items() if count}
    if before is None and _as_indexed(seen, changes, refresh, tallies, index, subtree):  # type: ignore[arg-type]
        before, tallies = {}, {}  # nothing to compare, nothing to write
    elif before is None:
        before = _collections(db, library, subtree)
    present = {path for path, doc in before.items() if doc.get("missing_since") is None}
    return Plan(
        library=library, started_at=started_at, changes=changes, refresh=refresh, skipped=tuple(seen.skipped),
        tallies=tallies, collections_before=before,
        collections_added=tuple(sorted(set(tallies) - present)),
        collections_removed=tuple(sorted(present - set(tallies))),
        scanned=seen.scanned,
        unchanged=seen.unchanged + seen.fingerprints - (len(changes) - changes.by_type[DELETED]),
        present_before=seen.present_before, hashed_bytes=seen.hashed_bytes, used_index=index is not None,
        subtree=subtree)


def _collections(db: Db, library: Library, subtree: str) -> dict[str, dict[str, Any]]:
    return {path: doc for path, doc in catalog_files.collection_documents(db, library.name).items()
            if within(path, subtree)}


def _as_indexed(seen: _Seen, changes: Changes, refresh: Spill[engine.Confirmed], tallies: Mapping[str, Any],
                index: statindex.Index, subtree: str) -> bool:
    """Whether every folder is exactly as the index has it, so the catalog's collections need no reading.

    The index is of the catalog's generation: the collections' counters are those of the scan that
    wrote it. Reading them costs a query of one document per folder (0.1 s and more at 2,000 folders,
    on a store busy answering it while the walk's processes want the same CPUs).
    """
    if len(changes) or len(refresh) or seen.skipped or len(seen.needs_hash) or seen.gone:
        return False
    indexed = {folder for folder in index.folders if within(folder, subtree)}
    return set(tallies) == indexed


def within(folder: str, subtree: str) -> bool:
    """Whether ``folder`` is the folder ``subtree`` or below it (every folder is within the root, "")."""
    return not subtree or folder == subtree or folder.startswith(subtree + "/")


def _spans_under(spans: Iterable[engine.Span], subtree: str) -> Iterator[engine.Span]:
    """The index's spans of records below ``subtree`` (a span holds one folder's records)."""
    prefix = subtree + "/" if subtree else ""
    return (span for span in spans if span.path.startswith(prefix))


def _counted(items: Iterable[DiskEntry | Skip | Same], seen: _Seen,
             progress: Progress) -> Iterator[DiskEntry | Skip | Same]:
    shown = 0
    for item in items:
        kind = type(item)
        if kind is DiskEntry:
            seen.scanned += 1
        elif kind is Same:
            seen.scanned += item.files  # type: ignore[union-attr]
        if seen.scanned - shown >= 1000:
            progress.advance(seen.scanned - shown)
            shown = seen.scanned
        yield item


def _sort_verdict(verdict: Any, seen: _Seen) -> None:
    kind = type(verdict)
    if kind is Same:  # a whole folder as the index has it: its records were not read one by one
        seen.present_before += verdict.files
        seen.unchanged += verdict.files
        seen.tally(verdict.path, verdict.files, verdict.size)
        seen.spool.carry(verdict.path)
        return
    if kind is not Skip and (kind is not engine.NeedsHash or verdict.record is not None):
        seen.present_before += 1  # a catalog record met in the merge
    if kind is engine.Unchanged or kind is engine.Kept:
        # Both leave the record as it is: it counts in its folder and goes to the new index.
        # (A Kept record's skip comes through the merge as its own verdict: listing it here
        # too would report a folder once per record under it.)
        seen.unchanged += kind is engine.Unchanged
        record = verdict.record
        seen.tally(collection_of(record.path), 1, record.size)
        seen.spool.add(record)
    elif kind is engine.NeedsHash:
        seen.needs_hash.append(verdict)
        seen.to_hash_bytes += verdict.entry.size
    elif kind is engine.Gone:
        seen.gone.append(verdict.record)
    else:
        seen.skipped.append(verdict)


@dataclass(slots=True)
class _Window:
    """The scan's time window by the filesystem's clock: its start, and its end so far (for racy marks)."""

    marker: Path
    started_ns: int
    judged: int = 0
    now_ns: int = 0

    def end_ns(self) -> int:
        """Now, read again every `CLOCK_EVERY` files: a file hashed before this reading is inside the window."""
        if self.judged % CLOCK_EVERY == 0:
            self.now_ns = statindex.clock_ns(self.marker)
        self.judged += 1
        return self.now_ns


def _hash_and_judge(library: Library, seen: _Seen, changes: Changes, refresh: Spill[engine.Confirmed],
                    progress: Progress, window: _Window, *, verify: bool) -> None:
    """Hash what needs it, in path order, and judge each file as it comes (held: the renames' index of the gone).

    Every file still present is tallied in its folder; its record for the new index goes to the spool.
    """
    def count(nbytes: int) -> None:
        seen.hashed_bytes += nbytes
        progress.advance(nbytes)

    if len(seen.needs_hash):
        progress.start_phase(HASHING, seen.to_hash_bytes, unit="byte")
    renames, prober = engine.Renames(seen.gone), _Prober(library.path)
    # The hasher must follow links exactly when the walk did, or it refuses the files the walk found.
    outcomes = hash_tagged(os.fsencode(library.path), ((needs, needs.entry) for needs in seen.needs_hash),
                           follow_symlinks=library.follow_symlinks, progress=count)
    for needs, outcome in outcomes:
        if type(outcome) is Skip:
            seen.skipped.append(outcome)
            if needs.record is not None:  # kept as it was
                seen.tally(collection_of(needs.record.path), 1, needs.record.size)
                seen.spool.add_hashed(needs.record)
            continue
        assert type(outcome) is Fingerprint
        seen.fingerprints += 1
        entry = outcome.entry
        seen.tally(collection_of(entry.path), 1, entry.size)
        judged = engine.judge(needs, outcome, scan_started_ns=window.started_ns, granularity_ns=GRANULARITY_NS,
                              scan_ended_ns=window.end_ns(), verify=verify)
        if type(judged) is Change:
            change = renames.pair(judged)
            changes.add(change, prober.probe(change))
            seen.spool.add_hashed(_record_of(entry, change.hash, change.racy))
        elif type(judged) is engine.Confirmed:
            refresh.append(judged)
            seen.spool.add_hashed(_record_of(entry, outcome.hash, judged.racy))
        elif needs.record is not None:
            seen.spool.add_hashed(needs.record)
    changes.add_deleted(renames.deleted())
    seen.needs_hash.close()
    seen.gone.close()


def _record_of(e: DiskEntry, digest: str | None, racy: bool) -> Record:
    return Record(e.path, e.size, e.mtime_ns, e.ctime_ns, e.inode, digest, racy)


class _Prober:
    """Reads the image header of new or changed files; imports Pillow (about 25 ms) only when one comes."""

    def __init__(self, root: str) -> None:
        self.root = os.fsencode(root)

    def probe(self, change: Change) -> catalog_files.Probe | None:
        """The header of the change's file, or why it could not be read; None when no render is asked for."""
        entry = change.entry
        if not needs_rebuild(change) or entry is None:
            return None
        return probe_header(self.root, entry.raw)


def _trusted_share(value: object) -> float:
    """A library's max_delete as the catalog holds it. The catalog may have been written by someone
    else than `library set` (which checks the range): anything but a fraction from 0 to 1 (NaN,
    1e9, a string) lets no scan delete without --allow-mass-delete, rather than every scan."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    return 0.0


def check_guards(plan: Plan, options: ScanOptions) -> None:
    """Refuse a mass deletion unless allowed; raises :class:`~libwatch.errors.GuardRefused`."""
    deleted = plan.changes.by_type[DELETED]
    limit = _trusted_share(plan.library.max_delete) if options.max_delete is None else options.max_delete
    if deleted and not options.allow_mass_delete and deleted > limit * max(plan.present_before, 1):
        raise GuardRefused(f"{plan.library.name}: {deleted} of {plan.present_before} files would be marked "
                           f"deleted (more than {limit:.0%}); nothing was changed. If that is right, run again "
                           "with --allow-mass-delete")
