"""The outbox: publish the catalog's pending rebuild requests, flip them to queued once confirmed.

The catalog is the outbox (DESIGN.md "Rebuild messages"): a scan, or ``libwatch
rebuild``, sets ``rebuild.<kind> = pending``; ``publish_pending`` reads those
records page by page, publishes one message per (record, kind) with publisher
confirms, and flips to ``queued`` only the confirmed ones whose ``rebuild.hash``
is still the published hash. A crash between the confirm and the flip leaves
them pending, so they are published again: at-least-once, never zero times.

A non-UTF-8 file name: the record's exact bytes (``path_b64``) are joined to the
root and decoded with ``os.fsdecode`` (PEP 383 surrogate escapes), and the body
is then written as ASCII JSON with ``\\udcXX`` escapes (``messages.encode``).
``os.fsencode(imagePath)`` gives the exact bytes back.

``collectionId`` is the ``collections._id`` of the record's folder; should that
document be missing (a scan killed between its file and collection writes), it is
``<library>:<folder>`` instead, so that the request is still published and valid.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from pymongo.database import Database

from libwatch import bus, messages
from libwatch.catalog import libraries as catalog_libraries
from libwatch.catalog import rebuilds
from libwatch.catalog.rebuilds import FileState, Scope
from libwatch.config import Settings
from libwatch.core.paths import join, raw_of
from libwatch.errors import BusError, PublishFailed, UsageError
from libwatch.messages import KINDS

log = logging.getLogger("libwatch.outbox")

PREFIX_ENV: Final = "LIBWATCH_AMQP_PREFIX"
# Environment variable → (Topology field, factor to its unit).
DEAD_LETTER_ENV: Final = {
    "LIBWATCH_DEAD_LETTER_MAX_LENGTH": ("dead_letter_max_length", 1),
    "LIBWATCH_DEAD_LETTER_MAX_BYTES": ("dead_letter_max_bytes", 1),
    "LIBWATCH_DEAD_LETTER_TTL_DAYS": ("dead_letter_ttl_s", 86_400),
}

Db = Database[dict[str, Any]]


def default_topology() -> bus.Topology:
    """The production topology, or one whose names carry ``$LIBWATCH_AMQP_PREFIX`` (tests, staging).

    The dead-letter queue's bounds come from ``$LIBWATCH_DEAD_LETTER_MAX_LENGTH``
    (messages), ``..._MAX_BYTES`` and ``..._TTL_DAYS`` when set; every process that
    declares the topology (scans and workers) must use the same values.
    Raises UsageError for a value that is not a positive whole number.
    """
    prefix = os.environ.get(PREFIX_ENV, "")
    topology = bus.Topology.prefixed(prefix) if prefix else bus.Topology()
    limits = {field: scale * value for env, (field, scale) in DEAD_LETTER_ENV.items()
              if (value := _positive(env)) is not None}
    return replace(topology, **limits)


def _positive(env: str) -> int | None:
    text = os.environ.get(env)
    if text is None or not text.strip():
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"{env} must be a positive whole number, not {text!r}")
    return value


def image_path(root: str, record: FileState) -> str:
    """The absolute path of a record as message text (surrogate escapes for undecodable bytes)."""
    return os.fsdecode(join(os.fsencode(root), raw_of(record.path, record.path_b64)))


@dataclass(frozen=True, slots=True)
class _Key:
    kind: str
    id: str
    hash: str


def _messages(root: str, library: str, collections: Mapping[str, str], page: Sequence[FileState],
              kinds: Sequence[str], priority: int | None) -> Iterator[bus.OutgoingMessage]:
    requested_at = messages.utc_timestamp()
    for record in page:
        for kind in kinds:
            if record.hash is None or not record.wants(kind, rebuilds.PENDING):
                continue
            request = messages.RebuildRequest(
                kind=kind, image_id=record.id,
                collection_id=collections.get(record.collection) or f"{library}:{record.collection}",
                library_id=library, image_path=image_path(root, record), content_hash=record.hash,
                force_regenerate=record.force, requested_at=requested_at,
                priority=priority if priority is not None else record.priority or messages.DEFAULT_PRIORITY)
            yield bus.OutgoingMessage(request.routing_key, messages.encode(request), request.message_id,
                                      request.priority, key=_Key(kind, record.id, record.hash))


def _publish_page(db: Db, publisher: bus.Publisher, outgoing: Iterable[bus.OutgoingMessage]) -> tuple[int, list[str]]:
    """Publish, then flip the confirmed ones (also when the broker goes away halfway)."""
    confirmed: dict[str, list[tuple[str, str]]] = {kind: [] for kind in KINDS}
    refused: list[str] = []
    try:
        for result in publisher.publish_batch(outgoing):
            key = result.key
            assert isinstance(key, _Key)
            if result.ok:
                confirmed[key.kind].append((key.id, key.hash))
            else:
                refused.append(result.error)
    finally:
        now = datetime.now(UTC)
        for kind, published in confirmed.items():
            if published:
                rebuilds.mark_queued(db, kind, published, now=now)
    return sum(len(p) for p in confirmed.values()), refused


def publish_pending(db: Db, settings: Settings, *, library: str | None = None, kinds: Sequence[str] = KINDS,
                    priority: int | None = None, scope: Scope | None = None,
                    topology: bus.Topology | None = None,
                    progress: Callable[[int], None] = lambda published: None) -> dict[str, int]:
    """Publish every pending request of ``library`` (all libraries when None; or of ``scope``).

    ``progress`` gets the number of requests confirmed, a page at a time.

    Returns ``{"published": n, "pending": left}``. Raises PublishFailed (exit 69)
    when the broker is unreachable or refuses a message (unroutable, nacked): the
    requests not confirmed stay pending for the next run. ``priority`` overrides
    the priority stored with each request.
    """
    if not settings.amqp_url:
        raise UsageError("no RabbitMQ configured (--amqp-url / LIBWATCH_AMQP_URL): "
                         "render locally with `libwatch rebuild --run`")
    scopes = [scope] if scope is not None else [Scope(name) for name in _library_names(db, library)]
    roots = rebuilds.library_roots(db)
    published, refused = 0, []
    try:
        with bus.Publisher(settings.amqp_url, topology or default_topology()) as publisher:
            for each in scopes:
                collections = rebuilds.collection_ids(db, each.library)
                for page in rebuilds.pending_pages(db, each, kinds):
                    sent, failures = _publish_page(db, publisher, _messages(
                        roots[each.library], each.library, collections, page, kinds, priority))
                    published += sent
                    refused += failures
                    progress(sent)
    except BusError as error:
        raise PublishFailed(f"{error}; {published} rebuild requests published, the rest stay pending") from error
    if refused:
        raise PublishFailed(f"RabbitMQ did not accept {len(refused)} rebuild requests ({refused[0]}); "
                            f"{published} published, the rest stay pending")
    left = sum(rebuilds.count_pending(db, each, kinds) for each in scopes)
    log.info("published %d rebuild requests, %d still pending", published, left)
    return {"published": published, "pending": left}


def _library_names(db: Db, library: str | None) -> list[str]:
    if library is not None:
        return [catalog_libraries.get(db, library).name]
    return [lib.name for lib in catalog_libraries.all_libraries(db)]
