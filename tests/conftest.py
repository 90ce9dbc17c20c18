"""Shared fixtures: one real SecantusDB server per session, a database per test, the real broker.

SecantusDB's stop() is slow, so the server lives for the whole session and each test gets
its own database name. Tests that need RabbitMQ use `amqp_url`; it skips with a reason when
the broker is unreachable, and fails instead under LIBWATCH_REQUIRE_BROKER=1 (CI). Pillow's
image corpus beside the checkout is an extra pass the same way (`corpus`, LIBWATCH_REQUIRE_CORPUS=1).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymongo
import pytest

from libwatch.catalog.schema import ensure_schema
from libwatch.catalog.store import embedded_server
from libwatch.config import Settings

from support import unavailable

BROKER_URL = os.environ.get("LIBWATCH_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "pillow-images"


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real SecantusDB server for the whole session."""
    with embedded_server(tmp_path_factory.mktemp("secantus")) as server:
        yield server.uri


@pytest.fixture(scope="session")
def mongo_client(mongo_uri: str) -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri, tz_aware=True)
    yield client
    client.close()


@pytest.fixture
def db_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def db(mongo_client: pymongo.MongoClient[dict[str, Any]], db_name: str) -> Iterator[Any]:
    """This test's own catalog database, schema in place."""
    database = mongo_client[db_name]
    ensure_schema(database)
    yield database
    mongo_client.drop_database(db_name)


def _broker_reachable(url: str) -> bool:
    host, port = "127.0.0.1", 5672
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The real RabbitMQ; skipped with a reason when it is down, unless LIBWATCH_REQUIRE_BROKER=1."""
    if not _broker_reachable(BROKER_URL):
        unavailable("RabbitMQ is not reachable at 127.0.0.1:5672 (start it: rabbitmq-server -detached)",
                    "LIBWATCH_REQUIRE_BROKER")
    return BROKER_URL


@pytest.fixture(scope="session")
def corpus() -> Path:
    """Pillow's test images in ../shared/corpus: skipped with a reason when absent, unless
    LIBWATCH_REQUIRE_CORPUS=1 (CI). The tests' own images come from imaging/images.py."""
    if not CORPUS.is_dir():
        unavailable(f"Pillow's image corpus is not at {CORPUS} (an extra pass beside the generated images)",
                    "LIBWATCH_REQUIRE_CORPUS")
    return CORPUS


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def settings(mongo_uri: str, db_name: str, db: Any, tmp_path: Path) -> Settings:
    """Settings pointing at this test's database on the session server, no broker."""
    return Settings(mongo_uri=mongo_uri, database=db_name, amqp_url=None, cache_dir=tmp_path / "cache",
                    home=tmp_path / "home")


@dataclass(frozen=True)
class Completed:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    """The environment for running `libwatch` against this test's catalog."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIBWATCH_") and k != "JOURNAL_STREAM"}
    env.update(LIBWATCH_CONFIG=os.devnull, LIBWATCH_MONGO_URI=settings.mongo_uri or "",
               LIBWATCH_DATABASE=settings.database, LIBWATCH_HOME=str(settings.home),
               LIBWATCH_CACHE_DIR=str(settings.cache_dir), COLUMNS="200", NO_COLOR="1")
    return env


@pytest.fixture
def libwatch(cli_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """Run the real `libwatch` command in a subprocess: libwatch("scan", "photos", env={...})."""

    def run(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120,
            input: str | None = None) -> Completed:
        full_env = {**cli_env, **(env or {})}
        done = subprocess.run([sys.executable, "-m", "libwatch", *args], env=full_env, capture_output=True,
                              text=True, timeout=timeout, input=input)
        return Completed(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def topology(amqp_url: str) -> Iterator[Any]:
    """A RabbitMQ topology of the test's own on the shared broker, deleted afterwards with its messages."""
    from libwatch.bus import Topology

    from broker import delete_topology

    topo = Topology.prefixed(f"test-{uuid.uuid4().hex[:8]}.")
    yield topo
    delete_topology(amqp_url, topo)
