"""The rebuild message body: its exact keys, round trips, and every reason to reject one."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from libwatch.messages import KINDS, SCHEMA, InvalidMessage, RebuildRequest, decode, encode

HASH = "xxh3-128:" + "0123456789abcdef" * 2
ROOTS = {"photos": "/srv/photos"}


def request(**changes: object) -> RebuildRequest:
    base = RebuildRequest(
        kind="thumbnail",
        image_id="65a1f0c2e4b0a1b2c3d4e5f6",
        collection_id="65a1f0c2e4b0a1b2c3d4e5f0",
        library_id="photos",
        image_path="/srv/photos/2024/trip/a.jpg",
        content_hash=HASH,
        requested_at="2026-11-28T18:00:00Z",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def body(**changes: object) -> bytes:
    data = json.loads(encode(request()))
    data.update(changes)
    for key, value in changes.items():
        if value is ...:
            del data[key]
    return json.dumps(data).encode()


def test_the_body_has_exactly_the_designed_keys_in_compact_utf8() -> None:
    raw = encode(request(image_path="/srv/photos/été/a.jpg"))
    assert json.loads(raw) == {
        "schema": "libwatch.rebuild/1",
        "kind": "thumbnail",
        "imageId": "65a1f0c2e4b0a1b2c3d4e5f6",
        "collectionId": "65a1f0c2e4b0a1b2c3d4e5f0",
        "libraryId": "photos",
        "imagePath": "/srv/photos/été/a.jpg",
        "contentHash": HASH,
        "forceRegenerate": True,
        "requestedAt": "2026-11-28T18:00:00Z",
    }
    assert b" " not in raw.replace(b"/srv/photos", b"")
    assert "été".encode() in raw


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(kind: str) -> None:
    req = request(kind=kind, force_regenerate=False, priority=9)
    # The priority travels as an AMQP property, not in the body.
    assert decode(encode(req), root_of=ROOTS.get) == replace(req, priority=5)
    assert req.message_id == f"65a1f0c2e4b0a1b2c3d4e5f6:{HASH}:{kind}"
    assert req.routing_key == f"rebuild.{kind}"


def test_encode_stamps_the_request_time_when_none_is_given() -> None:
    stamped = decode(encode(request(requested_at="")))
    assert stamped.requested_at.endswith("Z") and stamped.requested_at.startswith("20")


def test_an_undecodable_file_name_survives_the_trip_exactly() -> None:
    raw_name = b"/srv/photos/caf\xe9.jpg"
    req = request(image_path=os.fsdecode(raw_name))
    body_bytes = encode(req)
    body_bytes.decode("ascii")  # still plain JSON any consumer can read
    assert os.fsencode(decode(body_bytes, root_of=ROOTS.get).image_path) == raw_name


REJECTIONS = [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (body(schema="libwatch.rebuild/2"), "wrong schema"),
    (body(schema=...), "wrong schema"),
    (body(kind="preview"), "unknown kind"),
    (body(kind=...), "unknown kind"),
    (body(imageId=...), "missing field 'imageId'"),
    (body(collectionId=...), "missing field 'collectionId'"),
    (body(libraryId=...), "missing field 'libraryId'"),
    (body(imagePath=...), "missing field 'imagePath'"),
    (body(contentHash=...), "missing field 'contentHash'"),
    (body(imageId=42), "field 'imageId' must be a non-empty str"),
    (body(imageId=""), "field 'imageId' must be a non-empty str"),
    (body(forceRegenerate="yes"), "field 'forceRegenerate' must be a non-empty bool"),
    (body(forceRegenerate=1), "field 'forceRegenerate' must be a non-empty bool"),
    (body(contentHash="md5:abc"), "bad contentHash"),
    (body(contentHash="xxh3-128:" + "AB" * 16), "bad contentHash"),
    (body(contentHash="xxh3-128:abc"), "bad contentHash"),
    (body(imagePath="2024/trip/a.jpg"), "not absolute"),
    (body(imagePath="/srv/photos/../etc/passwd"), "contains '..'"),
    (body(imagePath="/srv/photos/a\u0000.jpg"), "NUL"),
    (body(imagePath="/srv/photos2/a.jpg"), "outside the root"),
    (body(imagePath="/etc/passwd"), "outside the root"),
    (body(libraryId="holidays"), "unknown library 'holidays'"),
    (body(requestedAt="yesterday"), "requestedAt is not an ISO-8601"),
    (body(requestedAt="2026-11-28T18:00:00"), "no time zone"),
]


@pytest.mark.parametrize(("raw", "reason"), REJECTIONS)
def test_every_rejection_has_a_one_line_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode(raw, root_of=ROOTS.get)
    assert reason in caught.value.reason
    assert "\n" not in caught.value.reason
    assert isinstance(caught.value, ValueError)


def test_paths_inside_the_root_are_accepted_however_the_root_is_spelled() -> None:
    ok = decode(body(imagePath="/srv/photos/./2024//a.jpg"), root_of={"photos": "/srv/photos/"}.get)
    assert ok.image_path == "/srv/photos/./2024//a.jpg"
    assert decode(body(imagePath="/srv/photos/a.jpg")).library_id == "photos"  # no root_of: no root check


def test_schema_constant() -> None:
    assert SCHEMA == "libwatch.rebuild/1"
