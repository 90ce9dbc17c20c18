"""What a service hands back: a frozen result with a status, its problems and its exit code.

As pipx's `OperationResult`: a command calls one service, gets a `Result`, and the one
renderer (`libwatch.cli.output.show`) prints it as one JSON document or as text, then the
command exits with `result.exit_code`.

A subclass adds its data fields and its `data()` (the JSON document's keys); the base adds
nothing to the document but what every result shares, so contract tests pin each document.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from libwatch.errors import EXIT_OK, EXIT_PARTIAL

SUCCESS: Final = "success"
PARTIAL: Final = "partial"
ERROR: Final = "error"

T = TypeVar("T")
U = TypeVar("U")


class Listing(Generic[T]):
    """A document's list, made on demand as often as it is read, its length known beforehand.

    A scan's report of a million changes is read from its spill file while it is written
    (`cli.output` streams a Listing item by item), never held whole. Equal to a list or
    tuple with the same items (tests compare it with ``[]``).
    """

    __slots__ = ("_make", "_count")

    def __init__(self, make: Callable[[], Iterable[T]], count: int) -> None:
        self._make, self._count = make, count

    @classmethod
    def of(cls, items: Sequence[T] = ()) -> Listing[T]:
        return cls(lambda: items, len(items))

    def __iter__(self) -> Iterator[T]:
        return iter(self._make())

    def __len__(self) -> int:
        return self._count

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (Listing, list, tuple)):
            return NotImplemented
        return len(self) == len(other) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __add__(self, other: Listing[T]) -> Listing[T]:
        return Listing(lambda: itertools.chain(self, other), len(self) + len(other))

    def head(self, limit: int) -> Listing[T]:
        """The first ``limit`` items."""
        return Listing(lambda: itertools.islice(self, limit), min(limit, len(self)))

    def map(self, function: Callable[[T], U]) -> Listing[U]:
        return Listing(lambda: map(function, self), len(self))


@dataclass(frozen=True, slots=True)
class Problem:
    """One item that could not be handled (a file, a render, a unit): the run went on without it.

    `item` is what it concerns (a path relative to the library root, a unit name), `kind` a
    short word (e.g. "unreadable", "render-failed"), `reason` one line for the admin.
    """

    item: str
    kind: str
    reason: str

    def to_document(self) -> dict[str, str]:
        return {"item": self.item, "kind": self.kind, "reason": self.reason}


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """A finished operation: `problems` (per item, the run went on) decide `status` and `exit_code`.

    Subclasses override `data()` with their document's fields, and may override
    `exit_code` where the operation has its own meaning of a code (`diff --exit-code`).
    """

    problems: tuple[Problem, ...] | Listing[Problem] = field(default=())

    @property
    def status(self) -> str:
        """`success`, or `partial` when some items had problems."""
        return PARTIAL if self.problems else SUCCESS

    @property
    def exit_code(self) -> int:
        """0, or 3 (`EXIT_PARTIAL`) when some items had problems."""
        return EXIT_PARTIAL if self.problems else EXIT_OK

    def data(self) -> Mapping[str, Any]:
        """The operation's own fields of the JSON document."""
        return {}

    @property
    def document(self) -> dict[str, Any]:
        """The JSON document (as :meth:`to_document`)."""
        return self.to_document()

    def to_document(self) -> dict[str, Any]:
        """The `--json` document: the operation's fields, then `status` and `problems`."""
        return {**self.data(), "status": self.status, "problems": [p.to_document() for p in self.problems]}


@dataclass(frozen=True, slots=True)
class ErrorResult:
    """A command that ended with an error, as `--json` prints it: kind, message, exit code."""

    kind: str
    message: str
    exit_code: int

    @property
    def status(self) -> str:
        return ERROR

    def to_document(self) -> dict[str, Any]:
        return {"status": ERROR, "error": {"kind": self.kind, "message": self.message, "exit_code": self.exit_code}}
