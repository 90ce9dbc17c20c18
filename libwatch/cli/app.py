"""The `libwatch` command: global options, sub-commands, and the one error boundary."""
from __future__ import annotations

import atexit
import difflib
import importlib
import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Final

import typer
import typer.main
from typer.core import TyperGroup

from libwatch import __version__, config, logs, state
from libwatch.cli import context, output
from libwatch.errors import (
    EXIT_INTERRUPTED,
    EXIT_SOFTWARE,
    EXIT_USAGE,
    LibwatchError,
    exit_code_for,
)

# Each command, by the module under libwatch.cli that defines it. A module (and the rich,
# pika or Pillow its services need) is imported only when its command runs or --help lists
# it: importing every command module cost `libwatch scan` about 0.15 s at each start.
COMMANDS: Final[dict[str, tuple[str, str]]] = {
    "scan": ("scan", "scan"), "diff": ("scan", "diff"), "cleanup": ("cleanup", "cleanup"),
    "status": ("reports", "status"), "history": ("reports", "history"), "events": ("reports", "events"),
    "failed": ("reports", "failed"),
    "doctor": ("doctor", "doctor"), "rebuild": ("rebuild", "rebuild"), "worker": ("rebuild", "worker"),
    "library": ("library", "app"), "store": ("store", "app"), "units": ("units", "app"),
    "web": ("web", "web"), "metrics": ("web", "metrics"),
}

# Options of the top level that may also follow the command (`libwatch scan photos -v`), as
# git and systemctl allow; each takes no value, so moving it cannot swallow an argument.
LATE_FLAGS: Final = frozenset({"--json", "--quiet", "-q", "--verbose", "-v", "-vv", "-vvv", "--debug"})


def _build(name: str) -> Any:
    """The click command of `name`, built by Typer's public `typer.main.get_command`.

    The module's Typer app (`library`, `store`, `units`) or function is added to a throwaway
    top-level app with this app's settings (plain help, no completion options of its own),
    and the built group's one command is taken out by name.
    """
    module, attribute = COMMANDS[name]
    target = getattr(importlib.import_module(f"libwatch.cli.{module}"), attribute)
    holder = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
    holder.callback()(_no_options)  # with a callback, get_command always builds a group
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name=name)(target)
    group = typer.main.get_command(holder)
    return group.get_command(typer.Context(group), name)  # type: ignore[attr-defined]


def _no_options() -> None:
    """(the holder group's callback: it has no options of its own)"""


def _late_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """`args` without the top-level flags given after the command (up to `--`), and those flags."""
    end = args.index("--") if "--" in args else len(args)
    late = [arg for arg in args[:end] if arg in LATE_FLAGS]
    return [arg for arg in args[:end] if arg not in LATE_FLAGS] + args[end:], late


class LazyCommands(TyperGroup):
    """The top-level group: each command is imported and built when it runs or help lists it.

    Built on the documented seams (`get_command`/`list_commands`/`resolve_command` of the
    group, `typer.main.get_command` for each command): no private Typer or click name.
    """

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        return list(COMMANDS)

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:  # type: ignore[override]
        return _build(cmd_name) if cmd_name in COMMANDS else None

    def resolve_command(self, ctx: typer.Context, args: list[str]) -> Any:  # type: ignore[override]
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in COMMANDS:
            matches = difflib.get_close_matches(name, list(COMMANDS))
            hint = f" Did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""
            ctx.fail(f"No such command {name!r}.{hint}")
        resolved, command, rest = super().resolve_command(ctx, args)
        rest, late = _late_flags(rest)
        ctx.meta["libwatch.late_flags"] = late
        return resolved, command, rest


app = typer.Typer(
    name="libwatch",
    help="Keep a MongoDB catalog of image libraries in step with the disk, and ask for cache images "
         "and thumbnails to be rebuilt when images change.\n\n"
         "Example: libwatch library add photos /srv/photos && libwatch scan photos",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    cls=LazyCommands,
)


def _version(value: bool) -> None:
    if value:
        print(f"libwatch {__version__}")
        raise typer.Exit()


@app.callback()
def global_options(
    ctx: typer.Context,
    mongo_uri: Annotated[str | None, typer.Option(
        help="MongoDB URI [env: LIBWATCH_MONGO_URI; default: the embedded store under --home]",
        show_default=False)] = None,
    database: Annotated[str | None, typer.Option(
        help="Database name [env: LIBWATCH_DATABASE; default: libwatch]", show_default=False)] = None,
    amqp_url: Annotated[str | None, typer.Option(
        help="RabbitMQ URL [env: LIBWATCH_AMQP_URL; default: none, rebuilds stay pending]", show_default=False)] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        help="Cache images and thumbnails [env: LIBWATCH_CACHE_DIR; default: $XDG_CACHE_HOME/libwatch]",
        show_default=False)] = None,
    home: Annotated[Path | None, typer.Option(
        help="State folder [env: LIBWATCH_HOME; default: $XDG_DATA_HOME/libwatch]", show_default=False)] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
    verbose: Annotated[int, typer.Option(
        "--verbose", "-v", count=True, show_default=False, help="More detail (-vv for debug logs).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """Global options; each has an environment variable and a config-file key."""
    late = ctx.meta.get("libwatch.late_flags", [])
    json_output = json_output or "--json" in late
    quiet = quiet or "--quiet" in late or "-q" in late
    verbose += sum(flag.count("v") if flag.startswith("-v") else flag == "--verbose" for flag in late)
    debug = debug or "--debug" in late
    flags = {"mongo_uri": mongo_uri, "database": database, "amqp_url": amqp_url, "cache_dir": cache_dir, "home": home}
    context.CURRENT = context.CliState(flags=flags, json=json_output, verbosity=-1 if quiet else verbose,
                                       debug=debug)
    ctx.obj = context.CURRENT
    output.MODE.json, output.MODE.quiet = json_output, quiet
    logs.setup(context.CURRENT.verbosity + (2 if debug else 0))
    state.COMMAND = f"libwatch {ctx.invoked_subcommand}"
    for option, url in (("--mongo-uri", mongo_uri), ("--amqp-url", amqp_url)):
        if url and config.has_password(url):
            logging.getLogger("libwatch").warning(
                "%s holds a password, which other users see in the process list: put it in a file "
                "named by LIBWATCH_%s_FILE (or the config file) instead", option, option[2:].replace("-", "_").upper())


def main() -> None:
    """Entry point: run the app and map every ending to the documented exit code.

    Every error is one escaped line on stderr; with --json (anywhere on the command line)
    also one JSON document on stdout naming its kind, message and exit code.
    """
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as error:  # Typer's (vendored click's) usage errors
        show = getattr(error, "show", None)
        code = error.exit_code or EXIT_USAGE
        if show is not None:
            show()
        _json_error("UsageError", error.format_message(), code)
    except (typer.Abort, KeyboardInterrupt):
        code = _fail("Interrupted", "interrupted by the user", EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`): end quietly
        code = 0
    except LibwatchError as error:
        if context.CURRENT.debug:
            traceback.print_exc()
        code = _fail(error.kind, str(error), exit_code_for(error))
    except Exception as error:  # a bug: one line unless --debug
        if context.CURRENT.debug:
            traceback.print_exc()
        logging.getLogger("libwatch").debug("internal error", exc_info=True)
        code = _fail("InternalError", f"internal error: {type(error).__name__}: {error} (run with --debug for details)",
                     EXIT_SOFTWARE)
    _skip_driver_exit_join()
    sys.exit(code if isinstance(code, int) else 0)


def _wants_json() -> bool:
    """--json given before or after the command (and not after `--`), even if parsing failed."""
    arguments = sys.argv[1:]
    return context.CURRENT.json or "--json" in arguments[:arguments.index("--") if "--" in arguments else None]


def _fail(kind: str, message: str, code: int) -> int:
    output.error(kind, message, code, as_json=_wants_json())
    return code


def _json_error(kind: str, message: str, code: int) -> None:
    if _wants_json():
        output.error_document(kind, message, code)


def _skip_driver_exit_join() -> None:
    """Let the process end without waiting for pymongo's monitor threads.

    pymongo's atexit hook joins them, and they notice they were stopped only after their
    current 0.5 s sleep: about 0.4 s added to every command. By now every client is closed
    (`store.connect`) and the threads are daemons, so there is nothing left to wait for.
    """
    monitor = sys.modules.get("pymongo.synchronous.monitor")
    hook = getattr(monitor, "_shutdown_resources", None)
    if hook is not None:
        atexit.unregister(hook)
