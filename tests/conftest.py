"""Test fixtures: one real MongoDB wire server per session, never a mock.

``MONGODB_URI`` set: the suite runs against that server (it must be disposable: tests
drop the databases they create). Otherwise one ephemeral SecantusDB server is started as
its own process (``secantusd-py --storage-path :memory: --enable-test-commands``).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest

import loom_frames as lm
from loom_frames.connection import _EmbeddedServer


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    server = _EmbeddedServer.start(":memory:", extra_args=("--enable-test-commands",))
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture(scope="session")
def client(mongo_uri: str) -> Iterator[pymongo.MongoClient[Any]]:
    """A plain pymongo client (aware UTC datetimes), also the library's client."""
    client = lm.connect(mongo_uri)
    yield client
    lm.disconnect()


@pytest.fixture(autouse=True)
def _drop_new_databases(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test cleans up: databases it created are dropped afterwards."""
    if "client" not in request.fixturenames and "db" not in request.fixturenames:
        yield
        return
    client: pymongo.MongoClient[Any] = request.getfixturevalue("client")
    before = set(client.list_database_names())
    yield
    for name in set(client.list_database_names()) - before:
        if name not in ("admin", "local", "config"):
            client.drop_database(name)


@pytest.fixture
def db(client: pymongo.MongoClient[Any]) -> Iterator[Any]:
    """A fresh database of its own for one test, dropped afterwards."""
    database = client.get_database(
        f"loomtest_{uuid.uuid4().hex[:12]}", codec_options=lm.CODEC_OPTIONS
    )
    yield database
    client.drop_database(database.name)


@pytest.fixture
def db_name(db: Any) -> str:
    """The name of the test's own database (declare models in it)."""
    return str(db.name)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)  # type: ignore[misc]
