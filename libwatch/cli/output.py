"""Printing results: exactly one JSON document on stdout with --json, text otherwise.

Text on a terminal is drawn with rich (tables wrap cells to the width, never cut a path);
piped or redirected it is plain: one record per line, every value whole, no ellipsis, no
wrapping, no colours, so `grep`, `less` and logs see everything.

A command parses, calls one service, and hands its `Result` to `show`, which prints it and
returns the exit code. Every untrusted string in text output goes through `escape`.
"""
from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from libwatch.quantity import count, number
from libwatch.result import Listing
from libwatch.text import escape, json_safe

if TYPE_CHECKING:
    from rich.console import Console

    console: Console
    errors: Console

__all__ = ["escape", "show", "table", "emit", "to_json", "when", "size", "duration", "number", "count", "counted",
           "percent", "words"]


@dataclass(slots=True)
class Mode:
    """How results are shown, set once from the global options (`--json`, `-q`)."""

    json: bool = False
    quiet: bool = False
    written: bool = False  # a JSON document is on stdout: an error after it adds no second one


MODE = Mode()


class Renderable(Protocol):
    """What `show` prints: a `libwatch.result.Result` (or anything shaped like one)."""

    @property
    def exit_code(self) -> int: ...

    def to_document(self) -> dict[str, Any]: ...


def __getattr__(name: str) -> Any:
    """`console` (stdout) and `errors` (stderr), made on first use: a `--json` run never imports rich."""
    if name not in ("console", "errors"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    # Piped, `soft_wrap` keeps each printed line whole instead of wrapping it at 80 columns.
    made = {"console": Console(highlight=False, soft_wrap=not is_terminal(sys.stdout)),
            "errors": Console(stderr=True, highlight=False, soft_wrap=not is_terminal(sys.stderr))}
    globals().update(made)
    return made[name]


def is_terminal(stream: Any) -> bool:
    """Whether `stream` is a terminal (progress and wrapped tables only there)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if value.utcoffset() in (None, timedelta(0)) \
            else value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def to_json(document: Any) -> str:
    """One line of JSON; bidi, format and C1 characters written as `\\uXXXX` (`text.json_safe`)."""
    return json_safe(json.dumps(document, default=_default, ensure_ascii=False))


def _holds_listing(value: Any) -> bool:
    if isinstance(value, Listing):
        return True
    if isinstance(value, Mapping):
        return any(_holds_listing(item) for item in value.values())
    return isinstance(value, (list, tuple)) and any(_holds_listing(item) for item in value)


def _pieces(value: Any) -> Iterator[str]:
    """The JSON text of `value` (as `to_json`) in pieces: a `Listing` is written item by item, as it is read.

    What holds no `Listing` is one piece: a change of a million is one `json.dumps`, not one for
    each of its keys and values (200,000 changes: 2.3 s instead of 7.6).
    """
    if not _holds_listing(value):
        yield to_json(value)
    elif isinstance(value, Mapping):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield (", " if i else "") + to_json(key if isinstance(key, str) else json.dumps(key)) + ": "
            yield from _pieces(item)
        yield "}"
    else:  # a Listing, list or tuple
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ", "
            yield from _pieces(item)
        yield "]"


def _write_json(document: Mapping[str, Any] | list[Any]) -> None:
    MODE.written = True  # from the first piece on: an error while writing adds no second document
    for piece in _pieces(document):
        sys.stdout.write(piece)
    sys.stdout.write("\n")
    sys.stdout.flush()


def emit(as_json: bool, document: Mapping[str, Any] | list[Any], human: Callable[[Console], None]) -> None:
    """Print one result: the JSON document, or its human rendering (nothing with `-q`)."""
    if as_json or MODE.json:
        _write_json(document)
    elif not MODE.quiet:
        human(__getattr__("console"))


def show(result: Renderable, human: Callable[[Console], None], *, as_json: bool = False) -> int:
    """Print a result (its JSON document, or `human`'s text) and return its exit code.

    With `-q` the text is left out; the problems a result carries are printed on stderr
    in every mode (one escaped line each), since `-q` keeps the errors.
    """
    document = result.to_document()
    if as_json or MODE.json:
        _write_json(document)
    elif not MODE.quiet:
        human(__getattr__("console"))
    for problem in document.get("problems", ()):
        print(f"libwatch: problem: {escape(str(problem.get('item', '')))}: {escape(str(problem.get('reason', '')))}",
              file=sys.stderr)
    return result.exit_code


def error(kind: str, message: str, exit_code: int, *, as_json: bool) -> None:
    """Report an error that ended the command: one line on stderr; with --json also one document on stdout."""
    print(f"libwatch: error: {escape(message)}", file=sys.stderr)
    if as_json:
        error_document(kind, message, exit_code)


def error_document(kind: str, message: str, exit_code: int) -> None:
    """The `--json` document of an error: `{"status": "error", "error": {kind, message, exit_code}}`."""
    from libwatch.result import ErrorResult

    if not MODE.written:
        _write_json(ErrorResult(kind, message, exit_code).to_document())


def table(out: Console, headers: Sequence[str], rows: Iterable[Sequence[str]], *, title: str | None = None) -> None:
    """Rows of text under `headers`, each cell escaped.

    On a terminal: a rich table whose cells wrap (`overflow="fold"`) to fit the width, never
    cut. Otherwise: aligned plain columns, one record per line, every value whole.
    """
    cells = [[escape(str(value)) for value in row] for row in rows]
    if out.is_terminal:
        _rich_table(out, headers, cells, title)
        return
    widths = [max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)]
    if title:
        out.file.write(title + "\n")
    for row in [list(headers), *cells]:
        out.file.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")


def _rich_table(out: Console, headers: Sequence[str], cells: list[list[str]], title: str | None) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    grid = Table(*headers, title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for column in grid.columns:
        column.overflow = "fold"
    for row in cells:
        grid.add_row(*(Text(cell) for cell in row))
    out.print(grid)


def counted(counts: Mapping[str, Any], *, leave_out: Iterable[str] = ()) -> str:
    """A document's non-zero counts in plain words: `4 added, 1 error, 2 collections added`.

    A key reads as words (`collections_added` → "collections added"); for 1 its first plural
    word is made singular ("1 collection added", "1 error"). "" when every count is 0.
    """
    skipped = set(leave_out)
    return ", ".join(f"{number(value)} {_key_words(key, value)}" for key, value in counts.items()
                     if key not in skipped and isinstance(value, int) and not isinstance(value, bool) and value)


def _key_words(key: str, value: int) -> str:
    words = key.split("_")
    if value == 1:
        plural = next((i for i, word in enumerate(words) if word.endswith("s") and not word.endswith("ss")), None)
        if plural is not None:
            words[plural] = words[plural][:-1]
    return " ".join(words)


def percent(fraction: float) -> str:
    """A fraction for people: 0.5 → `50 %`."""
    return f"{fraction * 100:.4g} %"


def words(value: Any) -> str:
    """A setting's value in plain words: yes/no, "not set", "none", local times; never a Python repr."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "not set"
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return number(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(words(item) for item in value) if value else "none"
    if isinstance(value, Mapping):
        return ", ".join(f"{str(key).replace('_', ' ')} {words(item)}" for key, item in value.items()) or "none"
    return str(value)


def when(value: datetime | None) -> str:
    """A timestamp for humans, local time, or "never"."""
    return "never" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def size(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(num_bytes) < 1024 or unit == "TiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes} B"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
