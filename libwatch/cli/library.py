"""`libwatch library add|list|show|remove|set`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from libwatch.cli import context, output
from libwatch.cli.options import JsonOption, LibraryArgument, complete_from
from libwatch.library import parse_compare
from libwatch.services import libraries as service
from libwatch.services import units as units_service

app = typer.Typer(help="Manage libraries: named root folders and their scan, watch and rebuild settings.\n\n"
                       "Example: libwatch library add photos /srv/photos --exclude '*/.thumbs/*'",
                  no_args_is_help=True)

IncludeOption = Annotated[list[str] | None, typer.Option(
    "--include", help="Glob of files to track (repeatable); default: image extensions.")]
ExcludeOption = Annotated[list[str] | None, typer.Option(
    "--exclude",
    help="Glob of files or folders to skip, besides the default exclusions "
         "(repeatable; a glob without / matches a name at any depth).")]
ScheduleOption = Annotated[str | None, typer.Option(
    "--schedule", help="systemd OnCalendar= expression for full scans (default *:0/30).")]
CompareOption = Annotated[str | None, typer.Option(
    "--compare",
    help="Stat fields compared besides size and mtime: ctime,inode (default), "
         "ctime, inode or none (for mounts whose inode numbers change).", show_default=False,
    autocompletion=complete_from(("ctime,inode", "ctime", "inode", "none")))]
NestedOption = Annotated[bool, typer.Option(
    "--allow-nested",
    help="Accept a root inside or above another library's when the outer library excludes the inner root.")]


def _state(schedule: dict[str, Any]) -> str:
    return "disabled" if not schedule["enabled"] else "paused" if schedule["paused"] else "enabled"


def _rebuilds(rebuild: dict[str, Any]) -> str:
    kinds = [word for word, wanted in (("cache images", rebuild["cache"]), ("thumbnails", rebuild["thumbnails"]))
             if wanted]
    return " and ".join(kinds) or "none"


def _retention(days: float | None, default_days: float) -> str:
    shown = default_days if days is None else days
    return f"{shown:g} day{'' if shown == 1 else 's'}" + (" (the default)" if days is None else "")


def _facts(doc: dict[str, Any], default_retention: float) -> list[tuple[str, str]]:
    """`library show` in plain words: settings first, then what the catalog knows of the library."""
    state, counts = doc.get("state") or {}, doc.get("counts") or {}
    defaults = doc["applied_default_excludes"]
    return [
        ("root", doc["path"] + (f" (given as {doc['link']})" if doc.get("link") else "")),
        ("state", _state(doc["schedule"]) + ("" if state.get("status", "ok") == "ok" else f", {state['status']}")),
        ("schedule", doc["schedule"]["on_calendar"]),
        ("watch", "on" if doc["watch"]["enabled"] else "off"),
        ("rebuilds", _rebuilds(doc["rebuild"])),
        ("tracked files", ", ".join(doc["include"]) or "image extensions (the default)"),
        ("excluded", ", ".join(doc["exclude"]) or "nothing of its own"),
        ("default exclusions", f"{output.count(len(defaults), 'pattern')} applied" if doc["default_excludes"]
         else "off"),
        ("dropped defaults", ", ".join(doc["dropped_excludes"]) or "none"),
        ("compared", ", ".join(("size", "mtime", *doc["compare"]))),
        ("hidden files", "tracked" if doc["hidden"] else "left out"),
        ("symbolic links", "followed (within the root)" if doc["follow_symlinks"] else "not followed"),
        ("other file systems", "crossed" if doc["cross_mounts"] else "not crossed"),
        ("missing files kept", _retention(doc["retention_days"], default_retention)),
        ("max delete", f"{output.percent(doc['max_delete'])} of the files in one scan"),
        ("created", output.when(doc.get("created_at"))),
        ("files", f"{output.number(counts.get('files', 0))} present, {output.number(counts.get('missing', 0))} "
                  f"missing, {output.count(counts.get('collections', 0), 'collection')}"),
        ("last scan", output.when(state.get("last_scan"))),
        ("last scan found", output.counted(state.get("last_counts") or {}, leave_out=("scanned", "hashed_bytes"))
         or "nothing"),
        ("last change", output.when(state.get("last_change_detected"))),
        ("default exclusion patterns", ", ".join(defaults) or "none"),
    ]


def _setting(setting: str, value: Any) -> str:
    """A setting's old or new value as `library set` prints it (max-delete as a percentage)."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return output.percent(value) if setting == "max-delete" and numeric else output.words(value)


def _show(console: Console, doc: dict[str, Any], default_retention: float) -> None:
    output.table(console, ("library", doc["name"]), _facts(doc, default_retention))


@app.command()
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Library name: a-z 0-9 _ - (a systemd instance name).")],
    path: Annotated[Path, typer.Argument(help="The library's root folder.")],
    include: IncludeOption = None,
    exclude: ExcludeOption = None,
    schedule: ScheduleOption = None,
    watch: Annotated[bool, typer.Option(
        "--watch/--no-watch", help="Start a scan when a watched folder changes.")] = True,
    hidden: Annotated[bool, typer.Option(help="Track hidden files and folders.")] = False,
    follow_symlinks: Annotated[bool, typer.Option(help="Follow symbolic links (loops are detected).")] = False,
    default_excludes: Annotated[bool, typer.Option(
        "--default-excludes/--no-default-excludes",
        help="Leave out NAS, OS and sync-tool junk (see `library show`).")] = True,
    compare: CompareOption = None,
    allow_nested: NestedOption = False,
    json_output: JsonOption = False,
) -> None:
    """Register a library.

    Example: libwatch library add photos /srv/photos --schedule 'daily'
    """
    fields = None if compare is None else parse_compare(compare)
    if schedule is not None:
        units_service.validate_schedule(schedule)
    with context.catalog(ctx) as db:
        added = service.register(db, name, path, include=tuple(include or ()), exclude=tuple(exclude or ()),
                                 on_calendar=schedule, watch=watch, hidden=hidden, follow_symlinks=follow_symlinks,
                                 default_excludes=default_excludes, compare=fields, allow_nested=allow_nested)
    library = added.library
    raise typer.Exit(output.show(added, lambda console: console.print(
        f"added library {output.escape(library.name)} at {output.escape(library.path)}", markup=False),
        as_json=context.wants_json(ctx, json_output)))


@app.command("list")
def list_(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List the libraries.

    Example: libwatch library list --json
    """
    with context.catalog(ctx) as db:
        listed = service.listing(db)
    docs = listed.document["libraries"]

    def human(console: Console) -> None:
        if not docs:
            console.print("no libraries yet: libwatch library add NAME PATH")
            return
        rows = []
        for doc in docs:
            rows.append((doc["name"], doc["path"], output.number(doc["counts"]["files"]),
                         output.number(doc["counts"]["collections"]), doc["schedule"]["on_calendar"],
                         _state(doc["schedule"])))
        output.table(console, ("name", "path", "files", "collections", "schedule", "state"), rows)

    raise typer.Exit(output.show(listed, human, as_json=context.wants_json(ctx, json_output)))


@app.command()
def show(ctx: typer.Context, name: LibraryArgument,
         json_output: JsonOption = False) -> None:
    """Show one library's settings, state and counts.

    Example: libwatch library show photos
    """
    with context.catalog(ctx) as db:
        shown = service.show(db, name)
    retention = context.state(ctx).settings.retention_days
    raise typer.Exit(output.show(shown, lambda console: _show(console, shown.document, retention),
                                 as_json=context.wants_json(ctx, json_output)))


@app.command()
def remove(
    ctx: typer.Context,
    name: LibraryArgument,
    purge: Annotated[bool, typer.Option(
        help="Also delete its file, collection and event records and its cache files.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Forget a library. File records are kept unless --purge.

    Example: libwatch library remove old-scans --purge
    """
    with context.catalog(ctx) as db:
        removed = service.remove(db, context.state(ctx).settings, name, purge=purge)
    kept = "" if purge else " (file records kept; --purge deletes them)"
    raise typer.Exit(output.show(removed, lambda console: console.print(
        f"removed library {output.escape(name)}{kept}", markup=False), as_json=context.wants_json(ctx, json_output)))


@app.command("set")
def set_(
    ctx: typer.Context,
    name: LibraryArgument,
    path: Annotated[Path | None, typer.Option(help="Move the library's root (or follow its retargeted link).")] = None,
    include: Annotated[list[str] | None, typer.Option(
        "--include", help="Replace the include globs (repeatable).")] = None,
    add_include: Annotated[list[str] | None, typer.Option(
        "--add-include", help="Add an include glob (repeatable).")] = None,
    remove_include: Annotated[list[str] | None, typer.Option(
        "--remove-include", help="Remove an include glob (repeatable).")] = None,
    reset_includes: Annotated[bool, typer.Option(
        "--reset-includes", help="Back to the default: files with an image extension.")] = False,
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", help="Replace the library's own exclude globs (repeatable; the defaults stay).")] = None,
    add_exclude: Annotated[list[str] | None, typer.Option(
        "--add-exclude", help="Add an exclude glob, or take back a dropped default (repeatable).")] = None,
    remove_exclude: Annotated[list[str] | None, typer.Option(
        "--remove-exclude", help="Remove an exclude glob, or drop one of the defaults (repeatable).")] = None,
    reset_excludes: Annotated[bool, typer.Option(
        "--reset-excludes", help="Back to the default exclusions only.")] = False,
    default_excludes: Annotated[bool | None, typer.Option(
        "--default-excludes/--no-default-excludes", help="Apply the default exclusions or none of them.",
        show_default=False)] = None,
    compare: CompareOption = None,
    hidden: Annotated[bool | None, typer.Option(
        "--hidden/--no-hidden", help="Track hidden files and folders.", show_default=False)] = None,
    follow_symlinks: Annotated[bool | None, typer.Option(
        "--follow-symlinks/--no-follow-symlinks", help="Follow symbolic links.", show_default=False)] = None,
    schedule: ScheduleOption = None,
    pause: Annotated[bool | None, typer.Option(
        "--pause/--resume", help="Pause or resume scans.", show_default=False)] = None,
    enable: Annotated[bool | None, typer.Option(
        "--enable/--disable", help="Enable or disable scheduled scans.", show_default=False)] = None,
    watch: Annotated[bool | None, typer.Option(
        "--watch/--no-watch", help="Watch folders for changes.", show_default=False)] = None,
    cache: Annotated[bool | None, typer.Option(
        "--cache/--no-cache", help="Request cache images.", show_default=False)] = None,
    thumbnails: Annotated[bool | None, typer.Option(
        "--thumbnails/--no-thumbnails", help="Request thumbnails.", show_default=False)] = None,
    retention_days: Annotated[float | None, typer.Option(
        help="Days a missing file's record is kept (0 or more; 0: until the next cleanup).")] = None,
    max_delete: Annotated[float | None, typer.Option(
        help="Largest fraction of its files one scan may mark deleted, 0 to 1 (0.05 = 5 %).")] = None,
    allow_nested: NestedOption = False,
    json_output: JsonOption = False,
) -> None:
    """Change a library's settings; prints each change as old -> new, or "nothing changed".

    Example: libwatch library set photos --pause --add-exclude 'scans/*'
    """
    if schedule is not None:
        units_service.validate_schedule(schedule)
    includes = service.ListEdit(None if include is None else tuple(include), tuple(add_include or ()),
                                tuple(remove_include or ()), reset_includes)
    excludes = service.ListEdit(None if exclude is None else tuple(exclude), tuple(add_exclude or ()),
                                tuple(remove_exclude or ()), reset_excludes)
    with context.catalog(ctx) as db:
        result = service.update(
            db, name, includes=includes, excludes=excludes, allow_nested=allow_nested, path=path,
            default_excludes=default_excludes, compare=compare, hidden=hidden, follow_symlinks=follow_symlinks,
            on_calendar=schedule, paused=pause, enabled=enable,
            watch=watch, rebuild_cache=cache, rebuild_thumbnails=thumbnails, retention_days=retention_days,
            max_delete=max_delete)
        if result.changes:
            for synced in units_service.sync_installed(db, context.state(ctx).settings, result.library):
                for line in (*synced.problems, *((synced.notice,) if synced.notice else ())):
                    output.errors.print(line, markup=False)

    def human(console: Console) -> None:
        if not result.changes:
            console.print(f"{name}: nothing changed", markup=False)
        for change in result.changes:
            console.print(f"{name}: {change.setting} {_setting(change.setting, change.old)} -> "
                          f"{_setting(change.setting, change.new)}", markup=False)

    raise typer.Exit(output.show(result, human, as_json=context.wants_json(ctx, json_output)))
