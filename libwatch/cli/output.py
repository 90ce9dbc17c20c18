"""Printing results: exactly one JSON document on stdout with --json, rich text otherwise."""
from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    console: Console
    errors: Console


def __getattr__(name: str) -> Any:
    """`console` (stdout) and `errors` (stderr), made on first use: a `--json` run never imports rich."""
    if name not in ("console", "errors"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    made = {"console": Console(highlight=False, soft_wrap=False), "errors": Console(stderr=True, highlight=False)}
    globals().update(made)
    return made[name]


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


def to_json(document: Mapping[str, Any] | list[Any]) -> str:
    return json.dumps(document, default=_default, ensure_ascii=False)


def emit(as_json: bool, document: Mapping[str, Any] | list[Any], human: Callable[[Console], None]) -> None:
    """Print one result: the JSON document, or its human rendering."""
    if as_json:
        sys.stdout.write(to_json(document) + "\n")
        sys.stdout.flush()
    else:
        human(__getattr__("console"))


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
