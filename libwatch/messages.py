"""The message vocabulary: the rebuild kinds, the default priority, the routing key, and the
body of a rebuild message (``libwatch.rebuild/1``): encode, and decode with validation.

The field names are those of the original viewer's ``CacheGenerationMessage`` and
``ThumbnailGenerationMessage`` so that its consumers can read our messages. The
priority is not part of the body: it travels as the AMQP ``priority`` property.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from libwatch.cachefiles import hash_hex
from libwatch.errors import InvalidMessage

SCHEMA: Final = "libwatch.rebuild/1"
# The rebuild kinds, in the order a batch renders them: a thumbnail is derived from the cache image.
CACHE: Final = "cache"
THUMBNAIL: Final = "thumbnail"
KINDS: Final = (CACHE, THUMBNAIL)
DEFAULT_PRIORITY: Final = 5
# A body is refused unread beyond this size. A real body is about 400 bytes plus its
# path (at most PATH_MAX, 4,096 bytes, twice that as JSON escapes); the worker's
# --max-message-size sets another limit.
MAX_BODY_BYTES: Final = 16 * 1024
# The longest value accepted for each text field, in characters (imagePath: Linux's PATH_MAX).
MAX_CHARS: Final = {"imageId": 256, "collectionId": 4352, "libraryId": 256, "imagePath": 4096,
                    "contentHash": 128, "requestedAt": 64}
# How much of a refused value a reason quotes.
SHOWN_CHARS: Final = 80

# Body key → (RebuildRequest field, required type, required?)
_FIELDS: Final[dict[str, tuple[str, type, bool]]] = {
    "imageId": ("image_id", str, True),
    "collectionId": ("collection_id", str, True),
    "libraryId": ("library_id", str, True),
    "imagePath": ("image_path", str, True),
    "contentHash": ("content_hash", str, True),
    "forceRegenerate": ("force_regenerate", bool, False),
    "requestedAt": ("requested_at", str, False),
}




@dataclass(frozen=True, slots=True)
class RebuildRequest:
    """A request to render the ``kind`` image of one file version."""

    kind: str
    image_id: str
    collection_id: str
    library_id: str
    image_path: str  # absolute; undecodable bytes as surrogate escapes (os.fsencode gives the exact name)
    content_hash: str
    force_regenerate: bool = True
    requested_at: str = ""  # ISO-8601 UTC "…Z"; encode() fills in the current time when empty
    priority: int = DEFAULT_PRIORITY

    @property
    def message_id(self) -> str:
        """``<fileId>:<hash>:<kind>``, so that duplicates are recognisable."""
        return f"{self.image_id}:{self.content_hash}:{self.kind}"

    @property
    def routing_key(self) -> str:
        """``rebuild.<kind>``."""
        return routing_key(self.kind)


def routing_key(kind: str) -> str:
    """The routing key of a kind's rebuild messages (``rebuild.cache``)."""
    return f"rebuild.{kind}"


def utc_timestamp(moment: datetime | None = None) -> str:
    """``moment`` (default: now) as ISO-8601 UTC with a ``Z``, to the second."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode(req: RebuildRequest) -> bytes:
    """The compact UTF-8 JSON body of ``req``.

    A path with undecodable bytes (surrogate escapes) cannot be UTF-8: such a body
    is written with ``\\uXXXX`` escapes instead, which is still plain ASCII JSON
    and decodes back to the exact same path.
    """
    body = {
        "schema": SCHEMA,
        "kind": req.kind,
        "imageId": req.image_id,
        "collectionId": req.collection_id,
        "libraryId": req.library_id,
        "imagePath": req.image_path,
        "contentHash": req.content_hash,
        "forceRegenerate": req.force_regenerate,
        "requestedAt": req.requested_at or utc_timestamp(),
    }
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(body, separators=(",", ":")).encode("ascii")


def shown(value: object) -> str:
    """``repr(value)`` cut to SHOWN_CHARS characters, for a reason that quotes an untrusted value."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}… ({len(text)} characters)"


def decode(body: bytes, *, root_of: Callable[[str], str | None] | None = None,
           max_bytes: int = MAX_BODY_BYTES) -> RebuildRequest:
    """Parse and validate a body; InvalidMessage with a one-line reason when it is not acceptable.

    A body over ``max_bytes`` is refused before it is parsed; every text field
    has a maximum length (MAX_CHARS). ``root_of(library_id)`` gives the library's
    root folder (None: unknown library); when it is given, ``imagePath`` must lie
    inside that root.
    """
    if len(body) > max_bytes:
        raise InvalidMessage(f"body of {len(body)} bytes is over the limit of {max_bytes} bytes")
    data = _parse_object(body)
    if data.get("schema") != SCHEMA:
        raise InvalidMessage(f"wrong schema {shown(data.get('schema'))}, expected {SCHEMA!r}")
    if data.get("kind") not in KINDS:
        raise InvalidMessage(f"unknown kind {shown(data.get('kind'))}, expected one of {', '.join(KINDS)}")
    fields = _typed_fields(data)
    _check_hash(fields["content_hash"])
    _check_path(fields["image_path"], fields["library_id"], root_of)
    if "requested_at" in fields:
        _check_timestamp(fields["requested_at"])
    return RebuildRequest(kind=data["kind"], **fields)


def _parse_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except RecursionError:
        raise InvalidMessage("not JSON this decoder can read: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidMessage(f"not a JSON object but {type(data).__name__}")
    return data


def _typed_fields(data: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, (name, kind, required) in _FIELDS.items():
        if key not in data:
            if required:
                raise InvalidMessage(f"missing field {key!r}")
            continue
        value = data[key]
        if type(value) is not kind or (kind is str and not value):
            raise InvalidMessage(f"field {key!r} must be a non-empty {kind.__name__}, got {shown(value)}")
        if kind is str and len(value) > MAX_CHARS[key]:
            raise InvalidMessage(f"field {key!r} is {len(value)} characters long, over the limit of {MAX_CHARS[key]}")
        fields[name] = value
    return fields


def _check_hash(content_hash: str) -> None:
    try:
        hash_hex(content_hash)
    except ValueError as exc:
        raise InvalidMessage(f"bad contentHash: {exc}") from None


def _check_path(path: str, library_id: str, root_of: Callable[[str], str | None] | None) -> None:
    if "\0" in path:
        raise InvalidMessage("imagePath contains a NUL byte")
    if not os.path.isabs(path):
        raise InvalidMessage(f"imagePath is not absolute: {shown(path)}")
    if ".." in path.split("/"):
        raise InvalidMessage(f"imagePath contains '..': {shown(path)}")
    if root_of is None:
        return
    root = root_of(library_id)
    if root is None:
        raise InvalidMessage(f"unknown library {shown(library_id)}")
    # Lexical only (no symlink resolution): the root itself may legitimately be a symlink.
    root = os.path.normpath(root)
    if os.path.commonpath([root, os.path.normpath(path)]) != root:
        raise InvalidMessage(f"imagePath {shown(path)} is outside the root {shown(root)} "
                             f"of library {shown(library_id)}")


def _check_timestamp(value: str) -> None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidMessage(f"requestedAt is not an ISO-8601 timestamp: {shown(value)}") from None
    if moment.utcoffset() is None:
        raise InvalidMessage(f"requestedAt has no time zone: {shown(value)}")
