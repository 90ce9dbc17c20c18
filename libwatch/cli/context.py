"""What every command shares: the global options, the settings, the open catalog."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer

from libwatch import config
from libwatch.config import Settings

if TYPE_CHECKING:
    from pymongo.database import Database


@dataclass(slots=True)
class CliState:
    """The global options as parsed; settings are resolved on first use."""

    flags: dict[str, Any]
    json: bool = False
    verbosity: int = 0
    debug: bool = False
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = config.load(self.flags)
        return self._settings


# The error boundary in app.main() needs --debug before Typer hands a context around.
CURRENT = CliState(flags={})


def state(ctx: typer.Context) -> CliState:
    return ctx.find_root().obj or CURRENT


def wants_json(ctx: typer.Context, local: bool) -> bool:
    return local or state(ctx).json


@contextlib.contextmanager
def catalog(ctx: typer.Context) -> Iterator[Database[dict[str, Any]]]:
    """The catalog database, schema ensured; a MongoDB failure mid-command becomes exit 69 (`store.connect`)."""
    from libwatch.catalog import store  # pymongo: about 0.09 s, not paid by --version or --help
    from libwatch.catalog.schema import ensure_schema

    with store.connect(state(ctx).settings) as connection:
        ensure_schema(connection.db)
        yield connection.db
