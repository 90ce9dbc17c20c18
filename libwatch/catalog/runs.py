"""The `runs` collection: one document per execution of scan, rebuild, cleanup or worker."""
from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from pymongo.collection import Collection
from pymongo.database import Database

from libwatch.catalog.schema import durable

JOBS: Final = ("scan", "rebuild", "cleanup", "worker")
TRIGGERS: Final = ("manual", "timer", "path", "cron")
RUNNING, SUCCEEDED, FAILED, INTERRUPTED, SKIPPED = "running", "succeeded", "failed", "interrupted", "skipped"
PARTIAL: Final = "partial"  # done, with per-item problems named in `error`
FINISHED: Final = (SUCCEEDED, PARTIAL, FAILED, INTERRUPTED, SKIPPED)  # every way a run ends
BY_THE_USER: Final = "interrupted by the user"


def _coll(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    return durable(db, "runs")


def start(db: Database[dict[str, Any]], job: str, library: str | None, trigger: str,
          *, status: str = RUNNING, **extra: Any) -> str:
    """Record that a run began; returns its id."""
    run_id = uuid.uuid4().hex
    _coll(db).insert_one({
        "_id": run_id, "job": job, "library": library, "trigger": trigger, "host": socket.gethostname(),
        "pid": os.getpid(), "started_at": datetime.now(UTC), "finished_at": None, "status": status,
        "error": None, "counts": {}, **extra,
    })
    return run_id


def finish(db: Database[dict[str, Any]], run_id: str, status: str, *, counts: Mapping[str, int] | None = None,
           error: str | None = None, **extra: Any) -> None:
    """Record how a run ended (only a run still `running` changes: an interrupted one stays so)."""
    fields: dict[str, Any] = {"status": status, "finished_at": datetime.now(UTC), "error": error, **extra}
    if counts is not None:
        fields["counts"] = dict(counts)
    _coll(db).update_one({"_id": run_id, "status": RUNNING}, {"$set": fields})


def mark_interrupted(db: Database[dict[str, Any]], run_id: str, reason: str) -> bool:
    """Mark a run that died without finishing as interrupted; True if it was still running."""
    result = _coll(db).update_one({"_id": run_id, "status": RUNNING}, {"$set": {
        "status": INTERRUPTED, "finished_at": datetime.now(UTC), "error": reason}})
    return result.modified_count == 1


def get(db: Database[dict[str, Any]], run_id: str) -> dict[str, Any] | None:
    return _coll(db).find_one({"_id": run_id})


def record_skipped(db: Database[dict[str, Any]], job: str, library: str | None, trigger: str, why: str) -> str:
    """Record a run that did nothing on purpose (e.g. a paused library)."""
    run_id = start(db, job, library, trigger, status=SKIPPED, error=why)  # `history` shows why, as for a locked skip
    _coll(db).update_one({"_id": run_id}, {"$set": {"finished_at": datetime.now(UTC)}})
    return run_id


@dataclass(slots=True)
class Recorder:
    """A run being recorded: the body fills `counts` and `problems`; `recorded()` writes how it ended.

    `counts` may be replaced or mutated in place (a Counter the service keeps adding to); whatever
    it holds when the run ends is recorded, also when the run fails or is interrupted.
    """

    db: Database[dict[str, Any]]
    run_id: str
    started_at: datetime
    counts: Mapping[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    outcome: tuple[str, str | None] | None = None

    def problem(self, reason: str) -> None:
        """Note a per-item problem: the run ends `partial` with the reasons joined in `error`."""
        self.problems.append(reason)

    def end(self, status: str, error: str | None = None) -> None:
        """Decide the outcome now (e.g. `failed` with a reason) instead of from the problems."""
        self.outcome = (status, error)

    @property
    def status(self) -> str:
        """How the run ends if nothing is raised: as decided by `end`, else partial or succeeded."""
        if self.outcome is not None:
            return self.outcome[0]
        return PARTIAL if self.problems else SUCCEEDED


def _ending(error: BaseException) -> tuple[str, str]:
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED, BY_THE_USER
    if isinstance(error, SystemExit):  # SIGTERM turned into SystemExit by a handler
        return INTERRUPTED, f"stopped (exit {error.code})"
    return FAILED, str(error) or type(error).__name__


@contextlib.contextmanager
def recorded(db: Database[dict[str, Any]], job: str, library: str | None, trigger: str,
             **extra: Any) -> Iterator[Recorder]:
    """Record one run from start to end: the one copy of start / except / finish.

    Ends `succeeded`, `partial` (problems were noted), as the body decided (`Recorder.end`),
    `interrupted` (Ctrl-C: "interrupted by the user") or `failed` with the error's message.
    Counts and problems collected so far are kept on every path. Recording the end of a run
    that failed because the catalog failed is attempted once; its own failure is not raised
    over the original error.
    """
    recorder = Recorder(db, start(db, job, library, trigger, **extra), datetime.now(UTC))
    try:
        yield recorder
    except BaseException as error:
        status, reason = recorder.outcome or _ending(error)  # an outcome the body decided stands
        if recorder.problems:
            reason = "; ".join([reason, *recorder.problems])
        with contextlib.suppress(Exception):
            _close(recorder, status, reason)
        raise
    outcome = recorder.outcome or (recorder.status, "; ".join(recorder.problems) or None)
    _close(recorder, *outcome)


def _close(recorder: Recorder, status: str, error: str | None) -> None:
    finish(recorder.db, recorder.run_id, status, counts=recorder.counts, error=error,
           duration_s=(datetime.now(UTC) - recorder.started_at).total_seconds(), **recorder.extra)
