"""Doctest namespace: the models the package's docstring examples use (``Item``, ``Order``,
``User``, ``Event``), as their module docstrings declare them, plus ``lm`` and ``pl``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _doctest_models(doctest_namespace: dict[str, Any]) -> None:
    import polars as pl

    import loom_frames as lm
    from loom_frames import Persistable, declare_persist_db

    @declare_persist_db(db_name="app", collection_name="items")
    class Item(Persistable):
        sku: str
        price: float

    @declare_persist_db(db_name="app", collection_name="orders")
    class Order(Persistable):
        sku: str
        qty: int
        tags: list[str] = []

    @declare_persist_db(db_name="app", collection_name="users")
    class User(Persistable):
        name: str
        age: int

    @declare_persist_db(db_name="app", collection_name="events")
    class Event(Persistable):
        kind: str
        count: int
        at: dt.datetime | None = None

    doctest_namespace.update(lm=lm, pl=pl, Item=Item, Order=Order, User=User, Event=Event)
