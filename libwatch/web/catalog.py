"""The web server's way to the catalog: one shared client for MongoDB, the embedded store per request.

The embedded store serves one process at a time (its lock file). Holding it for the life of
the web server would lock every scan and shell command out, so the server opens it for each
request instead (about 0.25 s here), and a scan started from the page can take it in between.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, Final

from pymongo.database import Database

from libwatch.catalog import store
from libwatch.catalog.failures import translated
from libwatch.catalog.schema import ensure_schema
from libwatch.config import Settings

# A page waits at most this long for a scan holding the embedded store.
EMBEDDED_WAIT_S: Final = 10.0

Db = Database[dict[str, Any]]


class Catalog:
    """Hands out the catalog database for one request; `close()` at shutdown."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._shared: contextlib.ExitStack | None = None
        self._connection: store.Connection | None = None
        self._lock = threading.Lock()

    @property
    def settings(self) -> Settings:
        return self._settings

    def _shared_connection(self) -> store.Connection:
        with self._lock:
            if self._connection is None:
                stack = contextlib.ExitStack()
                connection = stack.enter_context(store.connect(self._settings))
                ensure_schema(connection.db)
                self._shared, self._connection = stack, connection
            return self._connection

    @contextlib.contextmanager
    def session(self) -> Iterator[Db]:
        """The catalog for one request; a MongoDB error becomes CatalogUnavailable (503)."""
        with translated():
            if self._settings.mongo_uri:
                connection = self._shared_connection()
                yield connection.db
                return
            wait = min(self._settings.store_wait_s, EMBEDDED_WAIT_S)
            with store.connect(replace(self._settings, store_wait_s=wait)) as connection:
                ensure_schema(connection.db)
                yield connection.db

    def close(self) -> None:
        with self._lock:
            if self._shared is not None:
                self._shared.close()
            self._shared = self._connection = None
