"""The broker and the workers as the page shows them: queue depths, and workers seen in the runs."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

from libwatch.config import Settings, mask_url
from libwatch.errors import LibwatchError
from libwatch.services import reports
from libwatch.web.catalog import Db

RECENT: Final = timedelta(hours=24)
WORKER_RUNS: Final = 50


def queues(settings: Settings) -> dict[str, Any]:
    """The broker (password masked), its queues' ready messages and consumers; `error` says why they are unknown."""
    if not settings.amqp_url:
        return {"broker": None, "queues": {}, "error": "no broker configured: rebuilds stay pending in the catalog"}
    from libwatch import bus  # pika, only when a broker is configured
    from libwatch.services.outbox import default_topology

    try:
        stats = bus.queue_stats(settings.amqp_url, default_topology())
    except LibwatchError as error:
        return {"broker": mask_url(settings.amqp_url), "queues": {}, "error": str(error)}
    return {"broker": mask_url(settings.amqp_url), "error": None,
            "queues": {name: {"messages": queue.messages, "consumers": queue.consumers}
                       for name, queue in stats.items()}}


def workers(db: Db, now: datetime | None = None) -> list[dict[str, Any]]:
    """Worker processes running now or finished within the last day, newest first (from `history`)."""
    since = (now or datetime.now(UTC)) - RECENT
    seen = []
    for run in reports.history(db, jobs=["worker"], limit=WORKER_RUNS).to_document()["runs"]:
        last = run["finished_at"] or run["started_at"]
        if run["status"] == "running" or (last is not None and last >= since):
            seen.append(run)
    return seen
