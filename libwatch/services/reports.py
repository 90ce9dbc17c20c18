"""The admin's view: `status`, `history`, `events` and `failed` as typed results.

Each function returns a `Result` whose `to_document()` is exactly what `--json` prints;
the text views in `libwatch.cli.reports` are drawn from the same documents, so the two
never disagree.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from pymongo.database import Database

from libwatch import processes, systemd
from libwatch.catalog import libraries as library_repo
from libwatch.catalog import reports as repo
from libwatch.catalog import runs
from libwatch.core import diff
from libwatch.errors import SystemdError, UsageError
from libwatch.library import Library
from libwatch.messages import KINDS as REBUILD_KINDS
from libwatch.result import Result
from libwatch.services.cleanup import parse_age

RECENT_RUNS: Final = 20
STATUSES: Final = (runs.RUNNING, runs.SUCCEEDED, runs.PARTIAL, runs.FAILED, runs.INTERRUPTED, runs.SKIPPED)
LATEST_FAILURES: Final = 3  # the reasons `status` shows of a library's failed files
FILE_CHANGES: Final = diff.CHANGE_TYPES
CHANGE_TYPES: Final = (*FILE_CHANGES, "collection_added", "collection_removed")
STATUS_JOBS: Final = ("scan", "cleanup")
UNSCHEDULED: Final = MappingProxyType({"state": "not scheduled", "next_run": None, "last_run": None,
                                       "watch": "not watched"})

Db = Database[dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReport(Result):
    """`status`: every library (or one) with counts, runs, rebuilds, failures and schedule."""

    generated_at: datetime
    libraries: tuple[dict[str, Any], ...]

    def data(self) -> dict[str, Any]:
        return {"generated_at": self.generated_at, "libraries": list(self.libraries)}


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryReport(Result):
    """`history`: runs newest first."""

    runs: tuple[dict[str, Any], ...]

    def data(self) -> dict[str, Any]:
        return {"runs": list(self.runs)}


@dataclass(frozen=True, slots=True, kw_only=True)
class EventsReport(Result):
    """`events`: change events newest first."""

    events: tuple[dict[str, Any], ...]

    def data(self) -> dict[str, Any]:
        return {"events": list(self.events)}


@dataclass(frozen=True, slots=True, kw_only=True)
class FailedReport(Result):
    """`failed`: files whose header could not be read and renders that failed, newest first."""

    total: int
    failures: tuple[dict[str, Any], ...]

    def data(self) -> dict[str, Any]:
        return {"total": self.total, "failures": list(self.failures)}


def duration_s(run: Mapping[str, Any]) -> float | None:
    """A run's duration: as recorded, else from its start and end."""
    if run.get("duration_s") is not None:
        return float(run["duration_s"])
    if run.get("finished_at") is None or run.get("started_at") is None:
        return None
    return (run["finished_at"] - run["started_at"]).total_seconds()


def changes(counts: Mapping[str, Any] | None) -> int:
    """How many files one scan found changed."""
    return sum(int((counts or {}).get(kind, 0)) for kind in FILE_CHANGES)


def run_document(run: Mapping[str, Any]) -> dict[str, Any]:
    """One run as `history --json` (and `status`) show it.

    A run still recorded ``running`` whose process on this host is gone (SIGKILL, OOM, power
    loss) is shown ``interrupted``: the next scan of its library or the next cleanup records that.
    """
    status, error = run.get("status"), run.get("error")
    if status == runs.RUNNING and processes.gone(run.get("host"), run.get("pid")):
        status, error = runs.INTERRUPTED, (f"process {run.get('pid')} on {run.get('host')} is gone "
                                           "(the next cleanup records it)")
    return {
        "run_id": str(run["_id"]), "job": run.get("job"), "library": run.get("library"),
        "trigger": run.get("trigger"), "status": status, "host": run.get("host"), "pid": run.get("pid"),
        "started_at": run.get("started_at"), "finished_at": run.get("finished_at"), "duration_s": duration_s(run),
        "counts": dict(run.get("counts") or {}), "error": error,
    }


def event_document(event: Mapping[str, Any]) -> dict[str, Any]:
    """One change event as `events --json` shows it."""
    return {
        "id": str(event["_id"]), "library": event.get("library"), "collection": event.get("collection"),
        "path": event.get("path"), "old_path": event.get("old_path"), "type": event.get("type"),
        "detected_at": event.get("detected_at"), "size": event.get("size"), "hash": event.get("hash"),
        "run_id": event.get("run_id"), "processed": bool(event.get("processed")),
        "processed_at": event.get("processed_at"),
    }


# ---------------------------------------------------------------- status

def schedules(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each library's next and last timer run and watcher state, from systemd; "not scheduled" without it."""
    # The system's units where they are installed (an unprivileged service, such as libwatch-web,
    # reads them too), else the user's units of an unprivileged shell.
    user = os.geteuid() != 0 and not systemd.installed_libraries(False)
    try:
        found = systemd.timers_status(names, user=user)
    except SystemdError:
        found = {}
    return {name: {"state": run.state, "next_run": run.next_run, "last_run": run.last_run, "watch": run.watch}
            if (run := found.get(name)) else dict(UNSCHEDULED) for name in names}


def _job(db: Db, job: str, library: str) -> dict[str, Any]:
    # A cleanup of every library (library None) is also a cleanup of this one.
    stats = repo.job_runs(db, job, [library, None] if job == "cleanup" else [library])
    return {"runs": stats["runs"], "failures": stats["failures"],
            "last_run": None if stats["last"] is None else run_document(stats["last"])}


def library_status(db: Db, lib: Library, schedule: Mapping[str, Any]) -> dict[str, Any]:
    """One library's entry of the `status` document."""
    jobs = {job: _job(db, job, lib.name) for job in STATUS_JOBS}
    recent = repo.recent_runs(db, lib.name, "scan", RECENT_RUNS)
    # A partial scan recorded its changes too (per-file problems, a failed publish): they count.
    last_good = next((run for run in recent if run.get("status") in (runs.SUCCEEDED, runs.PARTIAL)), None)
    return {
        "name": lib.name, "root": lib.path, "root_available": os.path.isdir(lib.path),
        "state": lib.state.get("status", "new"), "paused": lib.paused, "enabled": lib.enabled,
        "counts": repo.library_totals(db, lib.name),
        "last_scan": jobs["scan"]["last_run"],
        "last_changes": {kind: int((last_good or {}).get("counts", {}).get(kind, 0)) for kind in FILE_CHANGES},
        "rebuilds": repo.rebuild_totals(db, lib.name),
        "failures": {"files": repo.count_failed_files(db, lib.name),
                     "latest": failure_documents(repo.failed_files(db, lib.name, LATEST_FAILURES))[:LATEST_FAILURES]},
        "jobs": jobs,
        "schedule": {"on_calendar": lib.on_calendar, **schedule},
        "recent": [{"run_id": str(run["_id"]), "started_at": run.get("started_at"), "status": run.get("status"),
                    "changes": changes(run.get("counts")), "duration_s": duration_s(run)}
                   for run in reversed(recent)],
    }


def status(db: Db, library: str | None = None,
           schedule_of: Mapping[str, Mapping[str, Any]] | None = None) -> StatusReport:
    """Every library (or one), with counts, runs, rebuilds, failures and schedule."""
    libraries = [library_repo.get(db, library)] if library is not None else library_repo.all_libraries(db)
    found = schedules([lib.name for lib in libraries]) if schedule_of is None else schedule_of
    return StatusReport(generated_at=datetime.now(UTC), libraries=tuple(
        library_status(db, lib, found.get(lib.name, UNSCHEDULED)) for lib in libraries))


# ---------------------------------------------------------------- history, events

def _choices(values: Iterable[str], allowed: Sequence[str], what: str) -> list[str]:
    chosen = list(values)
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        raise UsageError(f"unknown {what} {', '.join(unknown)} (one of {', '.join(allowed)})")
    return chosen


def _limit(limit: int) -> int:
    if limit < 1:
        raise UsageError("--limit must be at least 1")
    return limit


def history(db: Db, library: str | None = None, *, jobs: Iterable[str] = (), statuses: Iterable[str] = (),
            limit: int = 20) -> HistoryReport:
    """Runs newest first, optionally of one library, some jobs, some statuses."""
    where: dict[str, Any] = {}
    if library is not None:
        where["library"] = library_repo.get(db, library).name
    if chosen := _choices(jobs, runs.JOBS, "job"):
        where["job"] = {"$in": chosen}
    if chosen := _choices(statuses, STATUSES, "status"):
        where["status"] = {"$in": chosen}
    return HistoryReport(runs=tuple(run_document(run) for run in repo.find_runs(db, where, _limit(limit))))


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """An age (`2h`, `7d`: that long ago) or an ISO date/time (local time unless it says otherwise)."""
    try:
        return (now or datetime.now(UTC)) - parse_age(text)
    except UsageError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"bad time {text!r}: use an age (90m, 2h, 7d) or a date (2026-11-28, 2026-11-28T18:00)") \
            from None
    return moment.astimezone(UTC) if moment.tzinfo is None else moment


def events(db: Db, library: str | None = None, *, types: Iterable[str] = (), since: datetime | None = None,
           path: str | None = None, limit: int = 50) -> EventsReport:
    """Change events newest first, filtered by library, type, time and path glob."""
    where: dict[str, Any] = {}
    if library is not None:
        where["library"] = library_repo.get(db, library).name
    if chosen := _choices(types, CHANGE_TYPES, "event type"):
        where["type"] = {"$in": chosen}
    if since is not None:
        where["detected_at"] = {"$gte": since}
    if path:
        where["path"] = {"$regex": repo.path_pattern(path)}
    return EventsReport(events=tuple(event_document(event) for event in repo.find_events(db, where, _limit(limit))))


# ---------------------------------------------------------------- failed

def failure_documents(files: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per failure of each file: its header probe (`kind` "probe") and each failed render kind."""
    found = []
    for doc in files:
        base = {"library": doc.get("library"), "path": doc.get("path")}
        if doc.get("probe_error"):
            found.append({**base, "kind": "probe", "reason": doc["probe_error"], "when": doc.get("updated_at")})
        rebuild = doc.get("rebuild") or {}
        found += [{**base, "kind": kind, "reason": rebuild.get(f"{kind}_error") or "failed",
                   "when": rebuild.get(f"{kind}_at")} for kind in REBUILD_KINDS if rebuild.get(kind) == "failed"]
    return found


def failed(db: Db, library: str | None = None, *, limit: int = 100) -> FailedReport:
    """Files whose header could not be read and renders that failed, of one library or all, newest first."""
    name = None if library is None else library_repo.get(db, library).name
    return FailedReport(total=repo.count_failed_files(db, name),
                        failures=tuple(failure_documents(repo.failed_files(db, name, _limit(limit)))))
