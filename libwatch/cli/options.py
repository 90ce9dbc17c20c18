"""Option types and completions shared by several commands."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Annotated

import typer

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


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
