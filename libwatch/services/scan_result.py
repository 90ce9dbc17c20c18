"""The result of one scan or diff, and its JSON document (DESIGN.md's scan document)."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from libwatch.core.diff import Change
from libwatch.core.paths import b64_of, collection_of, is_exact
from libwatch.core.walk import Skip
from libwatch.result import Listing, Problem, Result
from libwatch.services.scan_detect import ERROR_REASONS, Plan


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanResult(Result):
    """One scan, diff or skipped run: what it found and did, ready to render.

    ``changes``, ``skipped`` and ``errors`` are the document's entries (dicts of JSON
    values; changes and errors are :class:`~libwatch.result.Listing` objects read from the scan's
    spill file when the document is written, so a report of a million changes is never
    held whole); ``problems`` holds the same unreadable files in the shared shape (kind
    ``io-error`` or ``probe``), and a failed publish (kind ``publish``): the status is then
    ``partial``. ``exit_code`` is the command's (1 for a diff that found changes, the
    broker's code when publishing failed; per-file problems alone keep 0, so that a timer
    unit does not turn red for one unreadable photo). ``rounds`` is set by a scan that ran again
    until quiet, ``skipped_run`` by a run that did nothing on purpose (paused, disabled),
    ``subtree`` by a scan of one folder of the library (its path relative to the root).
    ``registered`` (the scan registered its folder as a new library) and ``warnings``
    (problems around the scan, not per file) are for the admin, not in the document.
    """

    library: str
    root: str
    run_id: str | None
    dry_run: bool
    counts: Mapping[str, int]
    changes: Listing[dict[str, Any]] = dataclasses.field(default_factory=Listing.of)
    skipped: tuple[dict[str, Any], ...] = ()
    errors: Listing[dict[str, Any]] = dataclasses.field(default_factory=Listing.of)
    rebuild: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"requested": 0, "published": 0, "pending": 0})
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int = 0
    skipped_run: str | None = None
    rounds: int | None = None
    subtree: str = ""
    registered: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def document(self) -> dict[str, Any]:
        """The JSON document with its lists in memory (for a report known to be small: tests, the API)."""
        return {key: list(value) if isinstance(value, Listing) else value for key, value in self.to_document().items()}

    def to_document(self, limit: int | None = None) -> dict[str, Any]:
        """The `--json` document, its long lists as Listings (written as they are read).

        With ``limit``, each of changes, skipped, errors and problems lists at most that
        many entries, and the key ``omitted`` counts what each left out.
        """
        doc = {**self.data(limit), "status": self.status,
               "problems": _head(Listing.of(self.problems) if isinstance(self.problems, tuple) else self.problems,
                                 limit).map(Problem.to_document)}
        if limit is not None:
            doc["omitted"] = {key: max(0, len(whole) - limit) for key, whole in (
                ("changes", self.changes), ("skipped", self.skipped), ("errors", self.errors),
                ("problems", self.problems))}
        return doc

    def data(self, limit: int | None = None) -> dict[str, Any]:
        """The document's own fields: the design's keys, plus ``subtree``, ``rounds`` or ``skipped_run`` when set."""
        doc: dict[str, Any] = {"library": self.library, "root": self.root, "run_id": self.run_id,
                               "dry_run": self.dry_run}
        if self.subtree:
            doc["subtree"] = self.subtree
        if self.skipped_run is not None:
            doc["skipped_run"] = self.skipped_run
        else:
            doc.update(started_at=self.started_at, finished_at=self.finished_at)
        doc.update(counts=dict(self.counts), changes=_head(self.changes, limit),
                   skipped=list(self.skipped[:limit]), errors=_head(self.errors, limit), rebuild=dict(self.rebuild))
        if self.rounds is not None:
            doc["rounds"] = self.rounds
        return doc


def _head(listing: Listing[Any], limit: int | None) -> Listing[Any]:
    return listing if limit is None else listing.head(limit)


def from_plan(plan: Plan, *, run_id: str | None, dry_run: bool, rebuild: Mapping[str, int],
              exit_code: int = 0, publish_error: str | None = None) -> ScanResult:
    """The result of a scan or diff that detected ``plan`` (``publish_error``: why publishing failed).

    Changes and unreadable files are read from the plan's spill when the report is written.
    """
    collections = [{"type": "collection_added", "path": p, "collection": p} for p in plan.collections_added]
    collections += [{"type": "collection_removed", "path": p, "collection": p} for p in plan.collections_removed]
    changes = Listing(plan.changes.changes, len(plan.changes)).map(_change_document) + Listing.of(collections)
    skips = [(s.path, s.reason, f"{s.reason}: {s.detail}" if s.detail else s.reason)
             for s in plan.skipped if s.reason in ERROR_REASONS]

    def unreadable() -> Iterator[tuple[str, str, str]]:
        yield from skips
        if plan.changes.unreadable:
            yield from ((change.path, "probe", probe.error) for change, probe in plan.changes
                        if probe is not None and probe.error)

    found = Listing(unreadable, len(skips) + plan.changes.unreadable)
    problems = found.map(lambda item: Problem(*item))
    if publish_error is not None:
        problems += Listing.of([Problem(plan.library.name, "publish", publish_error)])
    return ScanResult(
        library=plan.library.name, root=plan.library.path, run_id=run_id, dry_run=dry_run, counts=plan.counts,
        changes=changes, skipped=tuple(_skip_document(s) for s in plan.skipped if s.reason not in ERROR_REASONS),
        errors=found.map(lambda item: {"path": item[0], "error": item[2]}), problems=problems,
        rebuild=rebuild, started_at=plan.started_at, finished_at=datetime.now(UTC),
        exit_code=exit_code, subtree=plan.subtree)


def _change_document(change: Change) -> dict[str, Any]:
    entry = change.entry
    doc: dict[str, Any] = {"type": change.type, "path": change.path, "collection": collection_of(change.path)}
    if change.old_path is not None:
        doc["old_path"] = change.old_path
    state = entry if entry is not None else change.record
    if state is not None:
        doc.update(size=state.size, mtime_ns=state.mtime_ns)
    doc["hash"] = change.hash
    if entry is not None and not is_exact(entry.raw):
        doc["path_b64"] = b64_of(entry.raw)
    return doc


def _skip_document(skip: Skip) -> dict[str, Any]:
    doc = {"path": skip.path, "reason": skip.reason}
    if skip.detail:
        doc["detail"] = skip.detail
    if not is_exact(skip.raw):
        doc["path_b64"] = b64_of(skip.raw)
    return doc
