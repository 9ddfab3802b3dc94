"""Test fixtures: one real MongoDB wire server per session, never a mock.

``MONGODB_URI`` set: the suite runs against that server (it must be disposable: tests
drop the databases they create). Otherwise one ephemeral SecantusDB server is started as
its own process, in memory, with test commands (fail points) enabled and authentication
on, as the embedded server always is: ``mongo_uri`` carries its credentials, so other
processes can use it too.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from typing import Any

import bson
import pymongo
import pytest
from pymongo import monitoring

import loom_frames as lm
from loom_frames.embedded import EmbeddedServer


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    server = EmbeddedServer.ephemeral(test_commands=True)
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


class CommandLog(monitoring.CommandListener):
    """What the library sent to MongoDB, and how many documents came back."""

    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []
        self.returned = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append({"name": event.command_name, "command": dict(event.command)})

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor")
        if cursor:
            for item in cursor.get("firstBatch", cursor.get("nextBatch", [])):
                # raw-batch cursors (pymongoarrow) reply with one bytes blob per batch
                self.returned += len(bson.decode_all(item)) if isinstance(item, bytes) else 1

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def named(self, *names: str) -> list[dict[str, Any]]:
        """The commands called one of ``names`` (their bodies)."""
        return [c["command"] for c in self.commands if c["name"] in names]

    def writes(self) -> list[dict[str, Any]]:
        names = {"insert", "update", "findAndModify", "delete"}
        return [c for c in self.commands if c["name"] in names]

    def clear(self) -> None:
        self.commands.clear()
        self.returned = 0


@pytest.fixture
def commands(mongo_uri: str, client: pymongo.MongoClient[Any]) -> Iterator[CommandLog]:
    """The library's client swapped, for one test, for one whose commands are recorded."""
    log = CommandLog()
    watched: pymongo.MongoClient[Any] = pymongo.MongoClient(
        mongo_uri, event_listeners=[log], tz_aware=True, tzinfo=dt.UTC,
        uuidRepresentation="standard",
    )
    lm.connect(client=watched)
    yield log
    lm.connect(client=client)
    watched.close()
