"""`libwatch status`, `history` and `events`: the admin's view of the catalog."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final

import typer
from rich.console import Console
from rich.table import Table

from libwatch.cli import context, output
from libwatch.cli.options import JsonOption
from libwatch.services import reports as service

BARS: Final = "▁▂▃▄▅▆▇█"

NameArgument = Annotated[str | None, typer.Argument(help="Only this library (default: all).", show_default=False)]
LimitOption = Annotated[int, typer.Option("--limit", "-n", help="Show at most this many, newest first.")]


def sparkline(values: Sequence[float]) -> str:
    """A one-line bar chart of `values`, scaled from 0 to their maximum ("▁▃█")."""
    top = max(values, default=0)
    if top <= 0:
        return BARS[0] * len(values)
    return "".join(BARS[round(value / top * (len(BARS) - 1))] for value in values)


def _summary(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{value} {key}" for key, value in counts.items()
                     if isinstance(value, int) and value and key not in ("scanned", "unchanged", "hashed_bytes"))


def _last_run(run: Mapping[str, Any] | None) -> str:
    if run is None:
        return "never"
    return f"{output.when(run['started_at'])} ({run['trigger']}, {run['status']}, {output.duration(run['duration_s'])})"


def _next_run(schedule: Mapping[str, Any]) -> str:
    return output.when(schedule["next_run"]) if schedule.get("next_run") else schedule["state"]


# ---------------------------------------------------------------- status

def _status_table(console: Console, libraries: Sequence[Mapping[str, Any]]) -> None:
    table = Table("library", "files", "size", "last scan", "result", "changes", "rebuilds p/q/f", "next run")
    for lib in libraries:
        rebuilds, scan = lib["rebuilds"], lib["last_scan"]
        name = lib["name"] + (" (paused)" if lib["paused"] else "") \
            + ("" if lib["root_available"] else " (root missing)")
        table.add_row(name, str(lib["counts"]["files"]), output.size(lib["counts"]["bytes"]),
                      output.when(scan and scan["started_at"]), scan["status"] if scan else "-",
                      str(sum(lib["last_changes"].values())),
                      f"{rebuilds['pending']}/{rebuilds['queued']}/{rebuilds['failed']}", _next_run(lib["schedule"]))
    console.print(table)


def _status_detail(console: Console, lib: Mapping[str, Any]) -> None:
    counts, rebuilds, schedule = lib["counts"], lib["rebuilds"], lib["schedule"]
    facts = Table(show_header=False, box=None, title=f"library {lib['name']}", title_justify="left")
    facts.add_row("root", lib["root"] + ("" if lib["root_available"] else "  (missing: unmounted?)"))
    facts.add_row("state", lib["state"] + (", paused" if lib["paused"] else "")
                  + ("" if lib["enabled"] else ", disabled"))
    facts.add_row("files", f"{counts['files']} present, {counts['missing']} missing, "
                           f"{counts['collections']} collections, {output.size(counts['bytes'])}")
    facts.add_row("last scan", _last_run(lib["last_scan"]))
    if lib["last_scan"] and lib["last_scan"]["error"]:
        facts.add_row("error", lib["last_scan"]["error"])
    facts.add_row("last changes", _summary(lib["last_changes"]) or "none")
    facts.add_row("rebuilds",
                  f"{rebuilds['pending']} pending, {rebuilds['queued']} queued, {rebuilds['failed']} failed")
    facts.add_row("schedule", f"{schedule['on_calendar']}; next run: {_next_run(schedule)}; watch: {schedule['watch']}")
    recent = lib["recent"]
    if recent:
        changes = [run["changes"] for run in recent]
        durations = [run["duration_s"] or 0.0 for run in recent]
        facts.add_row(f"changes ({len(recent)} scans)", f"{sparkline(changes)}  max {max(changes)}")
        facts.add_row("scan duration", f"{sparkline(durations)}  max {output.duration(max(durations))}")
    console.print(facts)
    jobs = Table("job", "runs", "failures", "last run")
    for job, stats in lib["jobs"].items():
        jobs.add_row(job, str(stats["runs"]), str(stats["failures"]), _last_run(stats["last_run"]))
    console.print(jobs)


def status(ctx: typer.Context, name: NameArgument = None, json_output: JsonOption = False) -> None:
    """Libraries at a glance: counts, last scan, pending rebuilds, next scheduled run.

    With a NAME: that library in detail, with a chart of changes and durations over its last scans.

    Example: libwatch status photos
    """
    with context.catalog(ctx) as db:
        document = service.status(db, name)

    def human(console: Console) -> None:
        if not document["libraries"]:
            console.print("no libraries yet: libwatch library add NAME PATH")
        elif name is None:
            _status_table(console, document["libraries"])
        else:
            _status_detail(console, document["libraries"][0])

    output.emit(context.wants_json(ctx, json_output), document, human)


# ---------------------------------------------------------------- history

def history(
    ctx: typer.Context,
    name: NameArgument = None,
    job: Annotated[list[str] | None, typer.Option(
        "--job", help="scan, rebuild, cleanup or worker (repeatable).")] = None,
    status_: Annotated[list[str] | None, typer.Option(
        "--status", help="running, succeeded, failed, interrupted or skipped (repeatable).")] = None,
    limit: LimitOption = 20,
    json_output: JsonOption = False,
) -> None:
    """The runs, newest first, with their trigger, duration and counts; a failed run shows its error.

    Example: libwatch history photos --job scan --status failed
    """
    with context.catalog(ctx) as db:
        document = service.history(db, name, jobs=job or (), statuses=status_ or (), limit=limit)

    def human(console: Console) -> None:
        table = Table("started", "job", "library", "trigger", "status", "duration", "details")
        for run in document["runs"]:
            details = run["error"] if run["error"] else _summary(run["counts"])
            table.add_row(output.when(run["started_at"]), run["job"], run["library"] or "-", run["trigger"],
                          run["status"], output.duration(run["duration_s"]), details or "")
        console.print(table if document["runs"] else "no runs recorded")

    output.emit(context.wants_json(ctx, json_output), document, human)


# ---------------------------------------------------------------- events

def events(
    ctx: typer.Context,
    name: NameArgument = None,
    type_: Annotated[list[str] | None, typer.Option(
        "--type", help="added, modified, touched, renamed, deleted, corrupted, collection_added, "
                       "collection_removed (repeatable).")] = None,
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
        document = service.events(db, name, types=type_ or (), since=moment, path=path, limit=limit)

    def human(console: Console) -> None:
        table = Table("detected", "library", "type", "path", "size", "processed")
        for event in document["events"]:
            shown = f"{event['old_path']} → {event['path']}" if event["old_path"] else event["path"]
            table.add_row(output.when(event["detected_at"]), event["library"], event["type"], shown,
                          "-" if event["size"] is None else output.size(event["size"]),
                          "yes" if event["processed"] else "no")
        console.print(table if document["events"] else "no change events recorded")

    output.emit(context.wants_json(ctx, json_output), document, human)
