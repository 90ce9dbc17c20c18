"""`libwatch status`, `history`, `events` and `failed`: the admin's view of the catalog.

Each command parses, calls one service, and hands the result to `output.show`. Text views
use `output.table` (whole values when piped, wrapped cells on a terminal) and plain words.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final

import typer
from rich.console import Console

from libwatch.catalog import runs
from libwatch.cli import context, output
from libwatch.cli.options import JsonOption, complete_from, complete_library
from libwatch.services import reports as service

BARS: Final = "▁▂▃▄▅▆▇█"

NameArgument = Annotated[str | None, typer.Argument(help="Only this library (default: all).", show_default=False,
                                                     autocompletion=complete_library)]
LimitOption = Annotated[int, typer.Option("--limit", "-n", help="Show at most this many, newest first.")]


def sparkline(values: Sequence[float]) -> str:
    """A one-line bar chart of `values`, scaled from 0 to their maximum ("▁▃█")."""
    top = max(values, default=0)
    if top <= 0:
        return BARS[0] * len(values)
    return "".join(BARS[round(value / top * (len(BARS) - 1))] for value in values)


def _summary(counts: Mapping[str, Any]) -> str:
    return output.counted(counts, leave_out=("scanned", "unchanged", "hashed_bytes"))


def _last_run(run: Mapping[str, Any] | None) -> str:
    if run is None:
        return "never"
    return f"{output.when(run['started_at'])} ({run['trigger']}, {run['status']}, {output.duration(run['duration_s'])})"


def _failure_line(failure: Mapping[str, Any]) -> str:
    return f"{failure['path']} ({failure['kind']}): {failure['reason']}"


def _next_run(schedule: Mapping[str, Any]) -> str:
    return output.when(schedule["next_run"]) if schedule.get("next_run") else schedule["state"]


# ---------------------------------------------------------------- status

def _status_table(console: Console, libraries: Sequence[Mapping[str, Any]]) -> None:
    rows = []
    for lib in libraries:
        rebuilds, scan = lib["rebuilds"], lib["last_scan"]
        name = lib["name"] + (" (paused)" if lib["paused"] else "") \
            + ("" if lib["root_available"] else " (root missing)")
        rows.append((name, output.number(lib["counts"]["files"]), output.size(lib["counts"]["bytes"]),
                     output.when(scan and scan["started_at"]), scan["status"] if scan else "-",
                     output.number(sum(lib["last_changes"].values())),
                     "/".join(output.number(rebuilds[state]) for state in ("pending", "queued", "failed")),
                     output.number(lib["failures"]["files"]), _next_run(lib["schedule"])))
    output.table(console, ("library", "files", "size", "last scan", "result", "changes", "rebuilds p/q/f",
                           "failed files", "next run"), rows)


def _status_detail(console: Console, lib: Mapping[str, Any]) -> None:
    counts, rebuilds, schedule, failures = lib["counts"], lib["rebuilds"], lib["schedule"], lib["failures"]
    facts = [("root", lib["root"] + ("" if lib["root_available"] else "  (missing: unmounted?)")),
             ("state", lib["state"] + (", paused" if lib["paused"] else "") + ("" if lib["enabled"] else ", disabled")),
             ("files", f"{output.number(counts['files'])} present, {output.number(counts['missing'])} missing, "
                       f"{output.count(counts['collections'], 'collection')}, {output.size(counts['bytes'])}"),
             ("last scan", _last_run(lib["last_scan"]))]
    if lib["last_scan"] and lib["last_scan"]["error"]:
        facts.append(("error", lib["last_scan"]["error"]))
    facts += [("last changes", _summary(lib["last_changes"]) or "none"),
              ("rebuilds", ", ".join(f"{output.number(rebuilds[state])} {state}"
                                     for state in ("pending", "queued", "failed"))),
              ("failed files", output.number(failures["files"])
               + (f"; libwatch failed {lib['name']}" if failures["files"] else ""))]
    facts += [("", _failure_line(failure)) for failure in failures["latest"]]
    facts.append(("schedule",
                  f"{schedule['on_calendar']}; next run: {_next_run(schedule)}; watch: {schedule['watch']}"))
    recent = lib["recent"]
    if recent:
        changes = [run["changes"] for run in recent]
        durations = [run["duration_s"] or 0.0 for run in recent]
        facts.append((f"changes ({output.count(len(recent), 'scan')})",
                      f"{sparkline(changes)}  max {output.number(max(changes))}"))
        facts.append(("scan duration", f"{sparkline(durations)}  max {output.duration(max(durations))}"))
    output.table(console, ("library", lib["name"]), facts)
    console.print()
    output.table(console, ("job", "runs", "failures", "last run"),
                 [(job, output.number(stats["runs"]), output.number(stats["failures"]), _last_run(stats["last_run"]))
                  for job, stats in lib["jobs"].items()])


def status(ctx: typer.Context, name: NameArgument = None, json_output: JsonOption = False) -> None:
    """Libraries at a glance: counts, last scan, pending rebuilds, next scheduled run.

    With a NAME: that library in detail, with a chart of changes and durations over its last scans.

    Example: libwatch status photos
    """
    with context.catalog(ctx) as db:
        report = service.status(db, name)

    def human(console: Console) -> None:
        if not report.libraries:
            console.print("no libraries yet: libwatch library add NAME PATH")
        elif name is None:
            _status_table(console, report.libraries)
        else:
            _status_detail(console, report.libraries[0])

    raise typer.Exit(output.show(report, human, as_json=json_output))


# ---------------------------------------------------------------- history

def history(
    ctx: typer.Context,
    name: NameArgument = None,
    job: Annotated[list[str] | None, typer.Option(
        "--job", help="scan, rebuild, cleanup or worker (repeatable).",
        autocompletion=complete_from(runs.JOBS))] = None,
    status_: Annotated[list[str] | None, typer.Option(
        "--status", help="running, succeeded, partial, failed, interrupted or skipped (repeatable).",
        autocompletion=complete_from(service.STATUSES))] = None,
    limit: LimitOption = 20,
    json_output: JsonOption = False,
) -> None:
    """The runs, newest first, with their trigger, duration and counts; a failed run shows its error.

    Example: libwatch history photos --job scan --status failed
    """
    with context.catalog(ctx) as db:
        report = service.history(db, name, jobs=job or (), statuses=status_ or (), limit=limit)

    def human(console: Console) -> None:
        if not report.runs:
            console.print("no runs recorded")
            return
        output.table(console, ("started", "job", "library", "trigger", "status", "duration", "details"), [
            (output.when(run["started_at"]), run["job"], run["library"] or "-", run["trigger"], run["status"],
             output.duration(run["duration_s"]), "; ".join(filter(None, (run["error"], _summary(run["counts"])))))
            for run in report.runs])

    raise typer.Exit(output.show(report, human, as_json=json_output))


# ---------------------------------------------------------------- events

def events(
    ctx: typer.Context,
    name: NameArgument = None,
    type_: Annotated[list[str] | None, typer.Option(
        "--type", help="added, modified, touched, renamed, deleted, corrupted, collection_added, "
                       "collection_removed (repeatable).", autocompletion=complete_from(service.CHANGE_TYPES))] = None,
    since: Annotated[str | None, typer.Option(
        metavar="WHEN", help="Only events since WHEN: an age (2h, 7d) or a date (2026-11-28T18:00).",
        show_default=False)] = None,
    path: Annotated[str | None, typer.Option(
        metavar="GLOB", help="Only paths matching GLOB ('*' spans folders).", show_default=False)] = None,
    limit: LimitOption = 50,
    json_output: JsonOption = False,
) -> None:
    """The change log: what each scan found, newest first.

    Example: libwatch events photos --type deleted --since 7d --path '2024/*'
    """
    moment = None if since is None else service.parse_when(since)
    with context.catalog(ctx) as db:
        report = service.events(db, name, types=type_ or (), since=moment, path=path, limit=limit)

    def human(console: Console) -> None:
        if not report.events:
            console.print("no change events recorded")
            return
        output.table(console, ("detected", "library", "type", "path", "size", "processed"), [
            (output.when(event["detected_at"]), event["library"], event["type"],
             f"{output.escape(event['old_path'])} → {output.escape(event['path'])}" if event["old_path"]
             else event["path"], "-" if event["size"] is None else output.size(event["size"]),
             "yes" if event["processed"] else "no")
            for event in report.events])

    raise typer.Exit(output.show(report, human, as_json=json_output))


# ---------------------------------------------------------------- failed

def failed(ctx: typer.Context, name: NameArgument = None, limit: LimitOption = 100,
           json_output: JsonOption = False) -> None:
    """Files whose header could not be read and cache images or thumbnails that failed, newest first.

    `libwatch rebuild NAME --failed` asks for the failed renders again.

    Example: libwatch failed photos --json
    """
    with context.catalog(ctx) as db:
        report = service.failed(db, name, limit=limit)

    def human(console: Console) -> None:
        if not report.failures:
            console.print("no failed files")
            return
        output.table(console, ("when", "library", "kind", "path", "reason"), [
            (output.when(item["when"]), item["library"], item["kind"], item["path"], item["reason"])
            for item in report.failures])
        if report.total > len({(item["library"], item["path"]) for item in report.failures}):
            console.print(f"{output.count(report.total, 'failed file')} in all; --limit shows more")

    raise typer.Exit(output.show(report, human, as_json=json_output))
