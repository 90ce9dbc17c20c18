"""`libwatch scan` and `libwatch diff`."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from libwatch.catalog import runs
from libwatch.cli import context, output
from libwatch.cli.options import JsonOption, TriggerOption, complete_target
from libwatch.cli.progress import Progress as Line
from libwatch.errors import EXIT_CHANGES, UsageError
from libwatch.services import scan as service
from libwatch.services.scan_detect import WALKING, Progress, ScanOptions, no_progress
from libwatch.services.scan_result import ScanResult

if TYPE_CHECKING:
    from rich.console import Console

WAIT_LOCK_S: Final = 600.0

TargetsArgument = Annotated[list[str] | None, typer.Argument(
    help="Library names or folders (a folder inside a library scans that part; a new folder is registered).",
    show_default=False, autocompletion=complete_target)]
LimitOption = Annotated[int | None, typer.Option(
    min=0, show_default=False,
    help="List at most this many changes, skipped files and errors (the counts stay whole; JSON adds 'omitted').")]
VerifyOption = Annotated[bool, typer.Option(help="Hash every file, like rsync --checksum (finds bit rot).")]


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Progress]:
    """The scan's phases on one line of stderr, only when stderr is a terminal (never with --json or -q)."""
    if not enabled:
        yield no_progress
        return
    line = Line(WALKING, unit="file")
    try:
        yield line
    finally:
        line.close()


def _draws(ctx: typer.Context, json_output: bool) -> bool:
    return not (context.wants_json(ctx, json_output) or output.MODE.quiet)


def _summary(console: Console, doc: dict[str, Any], verbose: bool) -> None:
    library = output.escape(doc["library"])
    if doc.get("skipped_run"):
        console.print(f"{library}: scan skipped ({output.escape(doc['skipped_run'])})", markup=False)
        return
    part = f", folder {doc['subtree']}" if doc.get("subtree") else ""
    facts = [(key.replace("_", " "), output.size(value) if key == "hashed_bytes" else output.number(value))
             for key, value in doc["counts"].items() if value or key in ("scanned", "unchanged")]
    facts.append(("time", output.duration((doc["finished_at"] - doc["started_at"]).total_seconds())))
    rebuild = doc["rebuild"]
    if rebuild["requested"] or rebuild["pending"]:
        facts.append(("rebuilds", ", ".join(f"{output.number(rebuild[key])} {key}"
                                            for key in ("requested", "published", "pending"))))
    output.table(console, ("diff" if doc["dry_run"] else "scan", f"{doc['library']} ({doc['root']}{part})"), facts)
    # One line per path however long (soft_wrap): logs are grepped by path.
    omitted = doc.get("omitted", {})
    if verbose:
        for change in doc["changes"]:
            extra = f" (from {output.escape(change['old_path'])})" if change.get("old_path") else ""
            console.print(f"  {change['type']:<18} {output.escape(change['path'])}{extra}", markup=False,
                          soft_wrap=True)
        _more(console, omitted.get("changes"), "change")
    for item in doc["skipped"]:
        console.print(f"  skipped {output.escape(item['path'])}: {output.escape(item['reason'])}", markup=False,
                      soft_wrap=True)
    _more(console, omitted.get("skipped"), "skipped file")
    for item in doc["errors"]:
        console.print(f"  error   {output.escape(item['path'])}: {output.escape(item['error'])}", markup=False,
                      soft_wrap=True)
    _more(console, omitted.get("errors"), "error")


def _more(console: Console, left_out: int | None, noun: str) -> None:
    if left_out:
        console.print(f"  ... and {output.count(left_out, 'more ' + noun)} (--limit)")


def _emit(ctx: typer.Context, json_output: bool, results: list[ScanResult], limit: int | None) -> int:
    as_json = context.wants_json(ctx, json_output)
    for result in results:
        if result.registered:
            output.errors.print(f"registered {result.root} as library [bold]{result.library}[/]")
        for warning in result.warnings:
            output.errors.print(warning, markup=False)
    docs = [result.to_document(limit) for result in results]
    verbose = context.state(ctx).verbosity > 0
    document: Any = docs[0] if len(docs) == 1 else {"scans": docs}

    def human(console: Console) -> None:
        for doc in docs:
            _summary(console, doc, verbose)

    output.emit(as_json, document, human)
    return max((result.exit_code for result in results), default=0)


def scan(
    ctx: typer.Context,
    targets: TargetsArgument = None,
    all_: Annotated[bool, typer.Option("--all", help="Scan every enabled library in turn.")] = False,
    verify: VerifyOption = False,
    settle: Annotated[float, typer.Option(
        help="Skip files written less than this many seconds ago (as unstable).")] = 0.0,
    trigger: TriggerOption = "manual",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be recorded; write nothing.")] = False,
    publish: Annotated[bool, typer.Option(
        "--publish/--no-publish", help="Publish rebuild requests after recording.")] = True,
    allow_mass_delete: Annotated[bool, typer.Option(
        help="Allow deleting more than --max-delete of the files.")] = False,
    max_delete: Annotated[float | None, typer.Option(
        help="Largest fraction of a library's files one scan may delete (default: the library's, 0.5).")] = None,
    wait_lock: Annotated[bool, typer.Option(help="Wait for the library's lock instead of exiting 75.")] = False,
    skip_if_locked: Annotated[bool, typer.Option(
        help="When another scan holds the library's lock, record "
             "a skipped run naming it and exit 0 (the units do).")] = False,
    rescan_on_change: Annotated[bool, typer.Option(
        help="Scan again if anything changed while scanning (path units).")] = False,
    name: Annotated[str | None, typer.Option(help="Name for a folder that is registered by this scan.")] = None,
    path: Annotated[str | None, typer.Option(
        "--path", help="Scan only this folder of the library (relative to its root).", show_default=False)] = None,
    limit: LimitOption = None,
    json_output: JsonOption = False,
) -> None:
    """Walk libraries, record what changed, and request rebuilds of new and changed images.

    A folder inside a library scans that part of it (as does --path).

    Example: libwatch scan photos --trigger timer
    """
    if trigger not in runs.TRIGGERS:
        raise UsageError(f"--trigger must be one of {', '.join(runs.TRIGGERS)}")
    if settle < 0:
        raise UsageError("--settle is a number of seconds, 0 or more")
    if max_delete is not None and not 0 <= max_delete <= 1:
        raise UsageError("--max-delete is a fraction from 0 to 1 (0.5 = 50 %)")
    cli = context.state(ctx)
    if wait_lock:
        cli.flags["store_wait_s"] = WAIT_LOCK_S
    options = ScanOptions(verify=verify, settle_s=settle, trigger=trigger, dry_run=dry_run, publish=publish,
                          allow_mass_delete=allow_mass_delete, max_delete=max_delete,
                          wait_lock_s=WAIT_LOCK_S if wait_lock else 0.0, skip_if_locked=skip_if_locked)
    with context.catalog(ctx) as db, _progress(_draws(ctx, json_output)) as progress:
        resolved = service.targets(db, targets or [], all_=all_, name=name, path=path)
        results = service.run(db, cli.settings, resolved, options, name=name, rescan_on_change=rescan_on_change,
                              progress=progress)
    raise typer.Exit(_emit(ctx, json_output, results, limit))


def diff(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="Library name or its root folder.", autocompletion=complete_target)],
    verify: VerifyOption = False,
    exit_code: Annotated[bool, typer.Option(
        "--exit-code", help="Exit 1 when there are changes, like git diff.")] = False,
    limit: LimitOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show what a scan would record, writing nothing.

    Example: libwatch diff photos --exit-code || libwatch scan photos
    """
    with context.catalog(ctx) as db, _progress(_draws(ctx, json_output)) as progress:
        (resolved,) = service.targets(db, [target], all_=False, name=None)
        if resolved.library is None:
            raise UsageError(f"{target} is not a library (register it: libwatch library add NAME {target})")
        report = service.diff(db, context.state(ctx).settings, resolved.library, ScanOptions(verify=verify),
                              progress=progress, subtree=resolved.subtree)
    _emit(ctx, json_output, [report], limit)
    raise typer.Exit(EXIT_CHANGES if exit_code and report.exit_code else 0)
