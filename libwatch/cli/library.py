"""`libwatch library add|list|show|remove|set`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from libwatch.catalog import libraries as repo
from libwatch.cli import context, output
from libwatch.cli.options import JsonOption
from libwatch.services import libraries as service
from libwatch.services import units as units_service

app = typer.Typer(help="Manage libraries: named root folders and their scan, watch and rebuild settings.\n\n"
                       "Example: libwatch library add photos /srv/photos --exclude '*/.thumbs/*'",
                  no_args_is_help=True)

IncludeOption = Annotated[list[str] | None, typer.Option("--include", help="Glob of files to track (repeatable); default: image extensions.")]
ExcludeOption = Annotated[list[str] | None, typer.Option("--exclude", help="Glob of files or folders to skip (repeatable).")]
ScheduleOption = Annotated[str | None, typer.Option("--schedule", help="systemd OnCalendar= expression for full scans (default *:0/30).")]


def _show(console: Console, doc: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key, value in doc.items():
        table.add_row(f"[bold]{key}[/]", output.to_json(value) if isinstance(value, (dict, list)) else str(value))
    console.print(table)


@app.command()
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Library name: a-z 0-9 _ - (a systemd instance name).")],
    path: Annotated[Path, typer.Argument(help="The library's root folder.")],
    include: IncludeOption = None,
    exclude: ExcludeOption = None,
    schedule: ScheduleOption = None,
    watch: Annotated[bool, typer.Option("--watch/--no-watch", help="Start a scan when a watched folder changes.")] = True,
    hidden: Annotated[bool, typer.Option(help="Track hidden files and folders.")] = False,
    follow_symlinks: Annotated[bool, typer.Option(help="Follow symbolic links (loops are detected).")] = False,
    json_output: JsonOption = False,
) -> None:
    """Register a library.

    Example: libwatch library add photos /srv/photos --schedule 'daily'
    """
    if schedule is not None:
        units_service.validate_schedule(schedule)
    with context.catalog(ctx) as db:
        library = service.add(db, name, path, include=tuple(include or ()), exclude=tuple(exclude or ()),
                              on_calendar=schedule, watch=watch, hidden=hidden, follow_symlinks=follow_symlinks)
    doc = service.describe(library)
    output.emit(context.wants_json(ctx, json_output), doc,
                lambda console: console.print(f"added library [bold]{library.name}[/] at {library.path}"))


@app.command("list")
def list_(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List the libraries.

    Example: libwatch library list --json
    """
    with context.catalog(ctx) as db:
        docs = [service.describe(lib, service.counts(db, lib.name)) for lib in repo.all_libraries(db)]

    def human(console: Console) -> None:
        if not docs:
            console.print("no libraries yet: libwatch library add NAME PATH")
            return
        table = Table("name", "path", "files", "collections", "schedule", "state")
        for doc in docs:
            schedule = doc["schedule"]
            flag = "disabled" if not schedule["enabled"] else "paused" if schedule["paused"] else "enabled"
            table.add_row(doc["name"], doc["path"], str(doc["counts"]["files"]), str(doc["counts"]["collections"]),
                          schedule["on_calendar"], flag)
        console.print(table)

    output.emit(context.wants_json(ctx, json_output), {"libraries": docs}, human)


@app.command()
def show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Library name.")],
         json_output: JsonOption = False) -> None:
    """Show one library's settings, state and counts.

    Example: libwatch library show photos
    """
    with context.catalog(ctx) as db:
        doc = service.describe(repo.get(db, name), service.counts(db, name))
    output.emit(context.wants_json(ctx, json_output), doc, lambda console: _show(console, doc))


@app.command()
def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Library name.")],
    purge: Annotated[bool, typer.Option(help="Also delete its file, collection and event records.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Forget a library. File records are kept unless --purge.

    Example: libwatch library remove old-scans --purge
    """
    with context.catalog(ctx) as db:
        removed = repo.delete(db, name, purge=purge)
    output.emit(context.wants_json(ctx, json_output), {"library": name, "removed": removed},
                lambda console: console.print(f"removed library [bold]{name}[/]"
                                              + ("" if purge else " (file records kept; --purge deletes them)")))


@app.command("set")
def set_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Library name.")],
    path: Annotated[Path | None, typer.Option(help="Move the library's root.")] = None,
    include: IncludeOption = None,
    exclude: ExcludeOption = None,
    schedule: ScheduleOption = None,
    pause: Annotated[bool | None, typer.Option("--pause/--resume", help="Pause or resume scans.", show_default=False)] = None,
    enable: Annotated[bool | None, typer.Option("--enable/--disable", help="Enable or disable scheduled scans.", show_default=False)] = None,
    watch: Annotated[bool | None, typer.Option("--watch/--no-watch", help="Watch folders for changes.", show_default=False)] = None,
    cache: Annotated[bool | None, typer.Option("--cache/--no-cache", help="Request cache images.", show_default=False)] = None,
    thumbnails: Annotated[bool | None, typer.Option("--thumbnails/--no-thumbnails", help="Request thumbnails.", show_default=False)] = None,
    retention_days: Annotated[float | None, typer.Option(help="Days a missing file's record is kept.")] = None,
    max_delete: Annotated[float | None, typer.Option(help="Largest fraction of files one scan may delete (0-1).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Change a library's settings.

    Example: libwatch library set photos --pause
    """
    if schedule is not None:
        units_service.validate_schedule(schedule)
    with context.catalog(ctx) as db:
        library = service.set_options(
            db, name, path=path, include=None if include is None else tuple(include),
            exclude=None if exclude is None else tuple(exclude), on_calendar=schedule, paused=pause, enabled=enable,
            watch=watch, rebuild_cache=cache, rebuild_thumbnails=thumbnails, retention_days=retention_days,
            max_delete=max_delete)
        for result in units_service.sync_installed(db, context.state(ctx).settings, library):
            for line in (*result.problems, *((result.notice,) if result.notice else ())):
                output.errors.print(line, markup=False)
    doc = service.describe(library)
    output.emit(context.wants_json(ctx, json_output), doc,
                lambda console: console.print(f"updated library [bold]{name}[/]"))
