"""The `libwatch` command: global options, sub-commands, and the one error boundary."""
from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from libwatch import __version__, logs
from libwatch.cli import context, library, scan, store, units
from libwatch.cli import cleanup, doctor, reports
from libwatch.cli import rebuild
from libwatch.errors import EXIT_INTERRUPTED, EXIT_SOFTWARE, EXIT_USAGE, LibwatchError, exit_code_for

app = typer.Typer(
    name="libwatch",
    help="Keep a MongoDB catalog of image libraries in step with the disk, and ask for cache images "
         "and thumbnails to be rebuilt when images change.\n\n"
         "Example: libwatch library add photos /srv/photos && libwatch scan photos",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
app.add_typer(library.app, name="library")
app.add_typer(store.app, name="store")
app.add_typer(units.app, name="units")
app.command()(scan.scan)
app.command()(scan.diff)
app.command()(cleanup.cleanup)
app.command()(reports.status)
app.command()(reports.history)
app.command()(reports.events)
app.command()(doctor.doctor)
app.command()(rebuild.rebuild)
app.command()(rebuild.worker)


def _version(value: bool) -> None:
    if value:
        print(f"libwatch {__version__}")
        raise typer.Exit()


@app.callback()
def global_options(
    ctx: typer.Context,
    mongo_uri: Annotated[str | None, typer.Option(help="MongoDB URI [env: LIBWATCH_MONGO_URI; default: the embedded store under --home]", show_default=False)] = None,
    database: Annotated[str | None, typer.Option(help="Database name [env: LIBWATCH_DATABASE; default: libwatch]", show_default=False)] = None,
    amqp_url: Annotated[str | None, typer.Option(help="RabbitMQ URL [env: LIBWATCH_AMQP_URL; default: none, rebuilds stay pending]", show_default=False)] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Cache images and thumbnails [env: LIBWATCH_CACHE_DIR; default: $XDG_CACHE_HOME/libwatch]", show_default=False)] = None,
    home: Annotated[Path | None, typer.Option(help="State folder [env: LIBWATCH_HOME; default: $XDG_DATA_HOME/libwatch]", show_default=False)] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More detail (-vv for debug logs).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """Global options; each has an environment variable and a config-file key."""
    flags = {"mongo_uri": mongo_uri, "database": database, "amqp_url": amqp_url, "cache_dir": cache_dir, "home": home}
    context.CURRENT = context.CliState(flags=flags, json=json_output, verbosity=-1 if quiet else verbose,
                                       debug=debug)
    ctx.obj = context.CURRENT
    logs.setup(context.CURRENT.verbosity + (2 if debug else 0))


def main() -> None:
    """Entry point: run the app and map every ending to the documented exit code."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as error:  # Typer's (vendored click's) usage errors
        show = getattr(error, "show", None)
        if show is not None:
            show()
        else:
            print(f"libwatch: error: {error.format_message()}", file=sys.stderr)
        code = error.exit_code or EXIT_USAGE
    except (typer.Abort, KeyboardInterrupt):
        print("libwatch: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`): end quietly
        code = 0
    except LibwatchError as error:
        if context.CURRENT.debug:
            traceback.print_exc()
        print(f"libwatch: error: {error}", file=sys.stderr)
        code = exit_code_for(error)
    except Exception as error:  # a bug: one line unless --debug
        if context.CURRENT.debug:
            traceback.print_exc()
        logging.getLogger("libwatch").debug("internal error", exc_info=True)
        print(f"libwatch: internal error: {type(error).__name__}: {error} (run with --debug for details)",
              file=sys.stderr)
        code = EXIT_SOFTWARE
    sys.exit(code if isinstance(code, int) else 0)
