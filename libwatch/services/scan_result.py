"""The result of one scan or diff, and its JSON document (DESIGN.md's scan document)."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from libwatch.core.diff import Change
from libwatch.core.paths import b64_of, collection_of, is_exact
from libwatch.core.walk import Skip
from libwatch.result import Problem, Result
from libwatch.services.scan_detect import ERROR_REASONS, Plan


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanResult(Result):
    """One scan, diff or skipped run: what it found and did, ready to render.

    ``changes``, ``skipped`` and ``errors`` are the document's entries (dicts of JSON
    values); ``problems`` holds the same unreadable files in the shared shape (kind
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
    changes: tuple[dict[str, Any], ...] = ()
    skipped: tuple[dict[str, Any], ...] = ()
    errors: tuple[dict[str, Any], ...] = ()
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

    def data(self) -> dict[str, Any]:
        """The document's own fields: the design's keys, plus ``subtree``, ``rounds`` or ``skipped_run`` when set."""
        doc: dict[str, Any] = {"library": self.library, "root": self.root, "run_id": self.run_id,
                               "dry_run": self.dry_run}
        if self.subtree:
            doc["subtree"] = self.subtree
        if self.skipped_run is not None:
            doc["skipped_run"] = self.skipped_run
        else:
            doc.update(started_at=self.started_at, finished_at=self.finished_at)
        doc.update(counts=dict(self.counts), changes=list(self.changes), skipped=list(self.skipped),
                   errors=list(self.errors), rebuild=dict(self.rebuild))
        if self.rounds is not None:
            doc["rounds"] = self.rounds
        return doc


def from_plan(plan: Plan, *, run_id: str | None, dry_run: bool, rebuild: Mapping[str, int],
              exit_code: int = 0, publish_error: str | None = None) -> ScanResult:
    """The result of a scan or diff that detected ``plan`` (``publish_error``: why publishing failed)."""
    changes = [_change_document(change) for change in plan.changes]
    changes += [{"type": "collection_added", "path": p, "collection": p} for p in plan.collections_added]
    changes += [{"type": "collection_removed", "path": p, "collection": p} for p in plan.collections_removed]
    unreadable = [(s.path, s.reason, f"{s.reason}: {s.detail}" if s.detail else s.reason)
                  for s in plan.skipped if s.reason in ERROR_REASONS]
    unreadable += [(path, "probe", probe.error) for path, probe in sorted(plan.probes.items()) if probe.error]
    problems = [Problem(path, kind, reason) for path, kind, reason in unreadable]
    if publish_error is not None:
        problems.append(Problem(plan.library.name, "publish", publish_error))
    return ScanResult(
        library=plan.library.name, root=plan.library.path, run_id=run_id, dry_run=dry_run, counts=plan.counts,
        changes=tuple(changes), skipped=tuple(_skip_document(s) for s in plan.skipped if s.reason not in ERROR_REASONS),
        errors=tuple({"path": path, "error": reason} for path, _, reason in unreadable), problems=tuple(problems),
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
