"""Fixtures for the expression tests: a real MongoDB wire server, never a mock.

The server is the session's one (``mongo_uri`` in tests/conftest.py: ``MONGODB_URI``, or
an ephemeral ``secantusd-py`` in its own process).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from expr_harness import Differential
from pymongo.collection import Collection


@pytest.fixture(scope="session")
def mongo_client(mongo_uri: str) -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    """A pymongo client (tz-aware UTC datetimes, standard UUIDs) on the session's server."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongo_uri, tz_aware=True, tzinfo=dt.UTC, uuidRepresentation="standard",
        serverSelectionTimeoutMS=3000,
    )
    yield client
    client.close()


@pytest.fixture
def scratch_collection(
    mongo_client: pymongo.MongoClient[dict[str, Any]],
) -> Iterator[Collection[dict[str, Any]]]:
    """A fresh, empty collection for one test, dropped afterwards."""
    collection = mongo_client["loom_expr_tests"][f"c_{uuid.uuid4().hex[:16]}"]
    yield collection
    collection.drop()


@pytest.fixture
def differential(scratch_collection: Collection[dict[str, Any]]) -> Differential:
    """Check that MongoDB and Polars select the same documents for an expression."""
    return Differential(scratch_collection)
