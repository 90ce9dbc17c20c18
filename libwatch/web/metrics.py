"""Prometheus metrics drawn from the `status` document and the broker's queues.

The same collector serves `/metrics` and `libwatch metrics --textfile DIR` (node_exporter's
textfile collector), so the two never differ. Values are exactly what `status --json` says.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest, write_to_textfile
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from libwatch.result import Result
from libwatch.services import reports

TEXTFILE: Final = "libwatch.prom"
RESULTS: Final = reports.STATUSES


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"libwatch_{name}", documentation, labels=labels)


def _library_metrics(libraries: list[Mapping[str, Any]]) -> Iterator[GaugeMetricFamily]:
    files = _gauge("files", "Image files in the catalog, by state.", ["library", "state"])
    scan_time = _gauge("last_scan_timestamp_seconds", "Start of the library's last scan (Unix time).", ["library"])
    duration = _gauge("last_scan_duration_seconds", "How long the library's last scan took.", ["library"])
    result = _gauge("last_scan_result", "The last scan's result: 1 for its status, 0 for the others.",
                    ["library", "result"])
    changes = _gauge("last_scan_changes",
                     "Files the last scan that recorded its changes (succeeded or partial) found changed, by type.",
                     ["library", "type"])
    rebuilds = _gauge("rebuilds", "Cache image and thumbnail requests, by state.", ["library", "state"])
    failed = _gauge("failed_renders", "Renders that failed (rebuild requests in state failed).", ["library"])
    for lib in libraries:
        name = lib["name"]
        files.add_metric([name, "present"], lib["counts"]["files"])
        files.add_metric([name, "missing"], lib["counts"]["missing"])
        scan = lib["last_scan"]
        if scan is not None:
            scan_time.add_metric([name], scan["started_at"].timestamp())
            if scan["duration_s"] is not None:
                duration.add_metric([name], scan["duration_s"])
            for status in RESULTS:
                result.add_metric([name, status], 1.0 if scan["status"] == status else 0.0)
        for kind, count in lib["last_changes"].items():
            changes.add_metric([name, kind], count)
        for state, count in lib["rebuilds"].items():
            rebuilds.add_metric([name, state], count)
        failed.add_metric([name], lib["rebuilds"]["failed"])
    yield from (files, scan_time, duration, result, changes, rebuilds, failed)


def _queue_metrics(queues: Mapping[str, Any]) -> Iterator[GaugeMetricFamily]:
    up = _gauge("broker_up", "1 when the broker answered, 0 when it did not, absent without a broker.", [])
    messages = _gauge("queue_messages", "Messages ready in each rebuild queue and the dead-letter queue.", ["queue"])
    consumers = _gauge("queue_consumers", "Consumers attached to each queue.", ["queue"])
    if queues.get("broker") is None:
        return
    up.add_metric([], 0.0 if queues.get("error") else 1.0)
    for name, stats in queues["queues"].items():
        messages.add_metric([name], stats["messages"])
        consumers.add_metric([name], stats["consumers"])
    yield from (up, messages, consumers)


class StatusCollector(Collector):
    """The metrics of one `status` document and one queue snapshot."""

    def __init__(self, status: Mapping[str, Any], queues: Mapping[str, Any]) -> None:
        self._status, self._queues = status, queues

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from _library_metrics(self._status["libraries"])
        yield from _queue_metrics(self._queues)


def registry(status: Mapping[str, Any], queues: Mapping[str, Any]) -> CollectorRegistry:
    """A registry holding only libwatch's metrics (no process or platform collectors)."""
    made = CollectorRegistry(auto_describe=False)
    made.register(StatusCollector(status, queues))
    return made


def exposition(status: Mapping[str, Any], queues: Mapping[str, Any]) -> bytes:
    """The metrics in the Prometheus text format."""
    return generate_latest(registry(status, queues))


@dataclass(frozen=True, slots=True, kw_only=True)
class Written(Result):
    """`metrics --textfile`: the file written (its `--json` document: `{"textfile": path, …}`)."""

    path: Path

    def data(self) -> dict[str, Any]:
        return {"textfile": str(self.path)}


def write_textfile(directory: Path, status: Mapping[str, Any], queues: Mapping[str, Any]) -> Written:
    """Write `DIR/libwatch.prom` atomically (prometheus_client writes a temporary file and renames it)."""
    target = directory / TEXTFILE
    write_to_textfile(str(target), registry(status, queues))
    return Written(path=target)
