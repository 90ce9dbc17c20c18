"""Relative paths of a library: exact bytes, their catalog key, and their sort order.

The catalog key of a file is its relative path decoded as UTF-8 with undecodable
bytes shown as ``\\xNN``. Keys compare as Python ``str`` (code point order), which is
the order MongoDB gives to UTF-8 strings, so the walk and the catalog sort alike.
"""
from __future__ import annotations

import base64
import binascii
from typing import Final

SEP: Final = "/"
SEP_BYTES: Final = b"/"


def key_of(raw: bytes) -> str:
    """The catalog key of a relative path: UTF-8, undecodable bytes as ``\\xNN``."""
    return raw.decode("utf-8", "backslashreplace")


def is_exact(raw: bytes) -> bool:
    """Whether ``key_of(raw)`` round-trips to ``raw`` (the name is valid UTF-8)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def b64_of(raw: bytes) -> str:
    """The base64 text stored as ``path_b64`` for a name that is not valid UTF-8."""
    return base64.b64encode(raw).decode("ascii")


def raw_from_b64(text: str) -> bytes:
    """The exact relative path bytes from a ``path_b64`` value."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as err:
        raise ValueError(f"not a base64 path: {text!r}") from err


def raw_of(path: str, path_b64: str | None = None) -> bytes:
    """The exact bytes of a catalog path: from ``path_b64`` when stored, else UTF-8."""
    return raw_from_b64(path_b64) if path_b64 is not None else path.encode("utf-8")


def collection_of(path: str) -> str:
    """The folder holding ``path`` (``""`` for a file at the root)."""
    return path.rpartition(SEP)[0]


def join(root: bytes, raw: bytes) -> bytes:
    """The absolute path of a relative path under ``root``."""
    return root + SEP_BYTES + raw if raw else root
