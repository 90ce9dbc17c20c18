"""`libwatch units render|install|uninstall|status`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from libwatch import systemd
from libwatch.cli import context, output
from libwatch.cli.options import JsonOption, LibraryArgument, complete_library
from libwatch.services import units as service

app = typer.Typer(help="The systemd units: timers for scheduled scans, path units for watching, the worker.\n\n"
                       "Example: sudo libwatch units install photos", no_args_is_help=True)

NamesArgument = Annotated[list[str] | None, typer.Argument(help="Library names (default: all).", show_default=False,
                                                           autocompletion=complete_library)]
UserOption = Annotated[bool, typer.Option("--user", help="User units under ~/.config/systemd/user.")]


def _print_result(console: Console, doc: dict[str, Any]) -> None:
    for path in doc["written"]:
        console.print(f"wrote   {path}", markup=False)
    for path in doc["removed"]:
        console.print(f"removed {path}", markup=False)
    for unit in doc["enabled"]:
        console.print(f"enabled {unit}", markup=False)
    for unit in doc["disabled"]:
        console.print(f"disabled {unit}", markup=False)
    for line in doc["warnings"]:
        output.errors.print(f"warning: {line}", markup=False)
    if doc["notice"]:
        output.errors.print(doc["notice"], markup=False)


def _emit(ctx: typer.Context, json_output: bool, result: systemd.InstallResult) -> None:
    """Print what was done (systemd's refusals as problems on stderr) and exit 3 if any."""
    changed = service.changed(result)
    raise typer.Exit(output.show(changed, lambda console: _print_result(console, changed.document),
                                 as_json=context.wants_json(ctx, json_output)))


@app.command()
def render(
    ctx: typer.Context,
    names: NamesArgument = None,
    output_dir: Annotated[Path, typer.Option("--output", help="Folder to write the unit files into.")] = Path("units"),
    user: UserOption = False,
    json_output: JsonOption = False,
) -> None:
    """Write the unit files (templates, per-library drop-ins) and the settings file to a folder, touching nothing else.

    Example: libwatch units render photos --output units-photos
    """
    with context.catalog(ctx) as db:
        result = service.render(db, context.state(ctx).settings, names or [], output_dir, user=user)
    _emit(ctx, json_output, result)


@app.command()
def install(
    ctx: typer.Context,
    names: NamesArgument = None,
    user: UserOption = False,
    enable: Annotated[bool, typer.Option(
        "--enable/--no-enable", help="systemctl enable --now the timers and watchers.")] = True,
    worker: Annotated[bool, typer.Option(help="Also enable the worker service on this host.")] = False,
    web: Annotated[bool, typer.Option(
        help="Also enable the management page (libwatch-web.socket, 127.0.0.1:8470).")] = False,
    metrics_textfile: Annotated[Path | None, typer.Option(
        metavar="DIR", help="After every scan, write the metrics into DIR for node_exporter's textfile collector.",
        show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run",
        help="Print the files it would write and a diff against those installed; change nothing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a settings file that holds other settings.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Install the host's settings, the service user, the store (without MongoDB) and the units; start them.

    Writes /etc/libwatch/config.toml (read by every unit and by libwatch in a shell), creates the
    libwatch user, enables libwatch-store.service when no mongo_uri is set, then installs and starts
    each library's timer and watcher.

    Example: sudo libwatch units install --dry-run
    """
    settings = context.state(ctx).settings
    if dry_run:
        with context.catalog(ctx) as db:
            plan = service.dry_run(db, settings, names or [], user=user)
        _emit_dry_run(ctx, json_output, plan)
    result = service.install(settings, names or [], user=user, enable=enable, worker=worker, force=force, web=web,
                             metrics_textfile=metrics_textfile)
    _emit(ctx, json_output, result)


def _emit_dry_run(ctx: typer.Context, json_output: bool, plan: service.DryRun) -> None:
    def human(console: Console) -> None:
        for path, text in plan.files.items():
            console.print(f"# {path}", markup=False, highlight=False)
            console.print(text, markup=False, highlight=False, end="")
        console.print(plan.diff or "# no changes against the installed files", markup=False, highlight=False)
        for line in plan.warnings:
            output.errors.print(f"warning: {line}", markup=False)

    raise typer.Exit(output.show(plan, human, as_json=context.wants_json(ctx, json_output)))


@app.command()
def refresh(
    ctx: typer.Context,
    name: LibraryArgument,
    json_output: JsonOption = False,
) -> None:
    """Rewrite a library's watched folders from the catalog (its scan units run this after each scan).

    Example: sudo libwatch units refresh photos
    """
    with context.catalog(ctx) as db:
        result = service.refresh(db, context.state(ctx).settings, name)
    _emit(ctx, json_output, result)


@app.command()
def uninstall(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(
        help="Library name (default: every libwatch unit).", show_default=False,
        autocompletion=complete_library)] = None,
    user: UserOption = False,
    json_output: JsonOption = False,
) -> None:
    """Stop and remove a library's timer and watcher (or every libwatch unit).

    Example: sudo libwatch units uninstall photos
    """
    result = systemd.uninstall(name, user=user)
    _emit(ctx, json_output, result)


@app.command()
def status(ctx: typer.Context, user: UserOption = False, json_output: JsonOption = False) -> None:
    """Which libraries have units, and when their timers fire next.

    Example: libwatch units status --json
    """
    with context.catalog(ctx) as db:
        report = service.status(db, user=user)

    def human(console: Console) -> None:
        output.table(console, ("library", "installed", "timer", "next run", "last run", "watch"),
                     [(row["library"], "yes" if row["installed"] else "no", row["timer"], output.when(row["next_run"]),
                       output.when(row["last_run"]), row["watch"]) for row in report.libraries])

    raise typer.Exit(output.show(report, human, as_json=context.wants_json(ctx, json_output)))
