"""`libwatch cleanup`."""
from __future__ import annotations

from typing import Annotated, Final

import typer
from rich.console import Console

from libwatch.cli import context, output
from libwatch.cli.options import JsonOption, TriggerOption, complete_library
from libwatch.services import cleanup as service

SHOWN_PATHS: Final = 20

_PARTS = (
    ("orphan_files", "orphan cache files"), ("temp_files", "abandoned temporary cache files"),
    ("missing_files", "file records missing past retention"),
    ("missing_collections", "collection records missing past retention"),
    ("events_processed", "change events marked processed"), ("old_events", "old processed events"),
    ("old_runs", "old finished runs"), ("stale_runs", "stale runs marked interrupted"),
    ("locks_released", "leases released"), ("requeued", "stuck rebuild requests back to pending"),
)


def _show(console: Console, result: service.CleanupResult) -> None:
    scope = f"library {result.library}" if result.library else "all libraries"
    verb = "would remove or change (dry run, nothing done)" if result.dry_run else "done"
    rows = [(label, f"{result.counts[key]:,}") for key, label in _PARTS]
    rows.append(("space freed" if not result.dry_run else "space to free", output.size(result.counts["orphan_bytes"])))
    output.table(console, ("part", "count"), rows, title=f"cleanup of {scope}: {verb}")
    document = result.to_document()
    for key, label in (("orphans", "orphan"), ("missing_files", "missing record"), ("stale_runs", "stale run")):
        items = document[key]
        for item in items[:SHOWN_PATHS]:
            console.print(f"  {label}: {output.escape(str(item.get('path') or item.get('run_id')))}"
                          + (f" ({output.escape(item['reason'])})" if "reason" in item else ""), markup=False)
        if len(items) > SHOWN_PATHS:
            console.print(f"  and {len(items) - SHOWN_PATHS:,} more (--json lists them all)")


def cleanup(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only this library (default: all).", show_default=False,
                                               autocompletion=complete_library)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would go; change nothing.")] = False,
    older_than: Annotated[str | None, typer.Option(
        "--older-than", metavar="AGE",
        help="Remove missing records, processed events and finished runs older than AGE (90m, 12h, 30d) "
             "instead of their retention.", show_default=False)] = None,
    queued_timeout: Annotated[str, typer.Option(
        metavar="AGE", help="Rebuild requests queued longer than this go back to pending.")] = "1h",
    trigger: TriggerOption = "manual",
    json_output: JsonOption = False,
) -> None:
    """Remove orphan cache files and records missing past retention; age out events and runs; recover stale runs.

    A cache file is an orphan when no record of this catalog has its hash (records of deleted
    files kept for their retention count). Cache files are kept when the catalog cannot be read
    (exit 69) or a library's root is missing (exit 74); a cache folder whose marker names
    another catalog is refused (exit 2): cleanup never mistakes records it cannot see for none.

    Example: libwatch cleanup photos --dry-run --older-than 7d
    """
    age = None if older_than is None else service.parse_age(older_than)
    timeout = service.parse_age(queued_timeout)
    with context.catalog(ctx) as db:
        result = service.cleanup(db, context.state(ctx).settings, name, dry_run=dry_run, older_than=age,
                                 queued_timeout=timeout, trigger=trigger)
    raise typer.Exit(output.show(result, lambda console: _show(console, result), as_json=json_output))
