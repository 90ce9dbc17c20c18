"""The one translation of PyMongo failures into libwatch's `CatalogUnavailable` (exit 69, HTTP 503)."""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from pymongo.errors import PyMongoError

from libwatch.errors import CatalogUnavailable

P = ParamSpec("P")
R = TypeVar("R")


def error_reason(error: PyMongoError) -> str:
    """A PyMongo error in one short line: without the topology description and timeouts it appends."""
    return str(error).split("\n")[0].split(", Timeout:")[0].split(" (configured timeouts:")[0]


@contextlib.contextmanager
def translated(description: str = "") -> Iterator[None]:
    """Raise a PyMongo failure of the body as `CatalogUnavailable`, naming the catalog when given."""
    try:
        yield
    except PyMongoError as error:
        where = f" ({description})" if description else ""
        raise CatalogUnavailable(f"catalog error{where}: {error_reason(error)}") from error


def catalog_errors(function: Callable[P, R]) -> Callable[P, R]:
    """`translated` as a decorator, for the catalog functions a worker calls (it retries later)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with translated():
            return function(*args, **kwargs)

    return wrapper
