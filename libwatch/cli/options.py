"""Option types and completions shared by several commands."""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
from collections.abc import Callable, Sequence
from typing import Annotated

import typer


def complete_from(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """Shell completion of an option's fixed values (`--job sc<TAB>` → scan)."""
    def complete(incomplete: str) -> list[str]:
        return [choice for choice in choices if choice.startswith(incomplete)]

    return complete


def complete_trigger(incomplete: str) -> list[str]:
    """The run triggers starting with `incomplete` (imported here: pymongo only when completing)."""
    from libwatch.catalog.runs import TRIGGERS

    return complete_from(TRIGGERS)(incomplete)


JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
TriggerOption = Annotated[str, typer.Option(help="What started this run: manual, timer, path or cron.",
                                            autocompletion=complete_trigger)]


def complete_library(incomplete: str) -> list[str]:
    """Library names starting with `incomplete`, for shell completion (none when the catalog cannot be read).

    Settings come from the environment and the config file (the command line is not parsed
    while completing); a catalog error or a held store lock completes nothing rather than fail.
    """
    from libwatch import config
    from libwatch.catalog import libraries, store

    with contextlib.suppress(Exception):
        settings = dataclasses.replace(config.load({}), store_wait_s=0.5)  # a TAB must not hang on a held lock
        with store.connect(settings) as connection:
            return [lib.name for lib in libraries.all_libraries(connection.db) if lib.name.startswith(incomplete)]
    return []


LibraryArgument = Annotated[str, typer.Argument(help="Library name.", autocompletion=complete_library)]


def complete_target(incomplete: str) -> list[str]:
    """A scan target: library names, or folders once what is typed holds a "/" (`./new<TAB>`, `/srv/ph<TAB>`)."""
    if "/" not in incomplete:
        return complete_library(incomplete)
    return sorted(found + "/" for found in glob.glob(glob.escape(os.path.expanduser(incomplete)) + "*")
                  if os.path.isdir(found))
