"""Any body, any headers, any message id: the worker rejects each bad message and never fails (issue 12.1)."""
from __future__ import annotations

import json
from typing import Any

import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libwatch import messages
from libwatch.bus import Topology
from libwatch.config import Settings
from libwatch.renderpool import RenderJob
from libwatch.services.worker import Worker, WorkerOptions

from .conftest import Photos, drain

pytestmark = pytest.mark.broker

VALID: dict[str, Any] = {
    "schema": messages.SCHEMA, "kind": "cache", "imageId": "65a1f0c2e4b0a1b2c3d4e5f6",
    "collectionId": "65a1f0c2e4b0a1b2c3d4e5f0", "libraryId": "photos", "imagePath": "/",  # set per test
    "contentHash": "xxh3-128:" + "0123456789abcdef" * 2, "forceRegenerate": False,
    "requestedAt": "2026-11-28T18:00:00Z",
}
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=12)


@st.composite
def altered(draw: st.DrawFn) -> dict[str, Any]:
    """A valid-looking body with fields replaced by, added as or removed for anything."""
    body = dict(VALID)
    for key in draw(st.lists(st.sampled_from([*VALID, "extra"]), max_size=3)):
        if draw(st.booleans()):
            body[key] = draw(json_values)
        else:
            body.pop(key, None)
    return body


def bodies(root: str) -> st.SearchStrategy[bytes]:
    def as_json(body: dict[str, Any]) -> bytes:
        if body.get("imagePath") == "/":
            body["imagePath"] = f"{root}/a.jpg"
        return json.dumps(body).encode()

    return st.one_of(
        st.binary(max_size=2048),
        altered().map(as_json),
        st.integers(1, 60_000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        st.integers(messages.MAX_BODY_BYTES - 2, messages.MAX_BODY_BYTES * 3).map(lambda n: b'"' + b"x" * n + b'"'),
    )


headers = st.one_of(st.none(), st.dictionaries(
    st.text(max_size=10), st.one_of(st.none(), st.booleans(), st.integers(-2**31, 2**31 - 1), st.text(max_size=50)),
    max_size=4))
message_ids = st.one_of(st.none(), st.text(max_size=40))


def _expected_invalid(body: bytes, root: str) -> bool:
    try:
        messages.decode(body, root_of={"photos": root}.get)
    except messages.InvalidMessage:
        return True
    return False


@pytest.mark.slow
def test_the_worker_rejects_every_bad_message_and_never_fails(photos: Photos, broker_settings: Settings,
                                                              topology: Topology, amqp_url: str) -> None:
    root = str(photos.root)
    rendered: list[RenderJob] = []

    def render(jobs: Any) -> Any:
        rendered.extend(jobs)
        return iter(())

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.lists(st.tuples(st.sampled_from(messages.KINDS), bodies(root), headers, message_ids),
                    min_size=1, max_size=8))
    def run(sent: list[tuple[str, bytes, dict[str, Any] | None, str | None]]) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = connection.channel()
        channel.confirm_delivery()
        for kind, body, extra, message_id in sent:
            channel.basic_publish(topology.exchange, Topology.routing_key(kind), body,
                                  pika.BasicProperties(delivery_mode=2, message_id=message_id, headers=extra),
                                  mandatory=True)
        connection.close()
        counts = Worker(photos.db, broker_settings, WorkerOptions(idle_exit_s=0.3), topology=topology,
                        render=render).run().counts
        invalid = sum(_expected_invalid(body, root) for _kind, body, _h, _m in sent)
        assert counts["received"] == len(sent)
        assert counts.get("invalid", 0) == invalid
        assert counts.get("skipped", 0) == len(sent) - invalid  # valid, but for no image of the catalog
        assert len(drain(amqp_url, topology.dead_letter_queue)) == invalid
        assert rendered == []

    Worker(photos.db, broker_settings, WorkerOptions(idle_exit_s=0.1), topology=topology, render=render).run()
    run()
