"""Numbers and counted nouns for people: the one format of every human view and message.

`libwatch.cli.output` re-exports them for the commands; services that word a message
(`doctor`'s checks, a run's problem line) use them directly. Standard library only.
"""
from __future__ import annotations


def number(value: int) -> str:
    """A count for people: digits grouped by thousands (`12,345`)."""
    return f"{value:,}"


def count(value: int, noun: str, plural: str | None = None) -> str:
    """`1 library`, `2 libraries`, `12,345 files`: one number format and plural everywhere."""
    consonant_y = noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u")
    word = noun if value == 1 else (plural or (noun[:-1] + "ies" if consonant_y else noun + "s"))
    return f"{number(value)} {word}"
