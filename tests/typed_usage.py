"""Static checks of the public API's types (run by mypy in tests/test_typing.py; never
executed). Each ``assert_type`` states what a user's editor and type checker see."""

from __future__ import annotations

from typing import assert_type

import pandas as pd
import polars as pl

import loom as lm_alias
import loom_frames as lm
from loom.info import Persistable as AliasPersistable
from loom_frames import Persistable, declare_persist_db
from loom_frames.query import GroupedQuery, Query
from loom_frames.write.frames import WriteResult


@declare_persist_db(db_name="typed", collection_name="users")
class User(Persistable):
    name: str
    age: int


def check() -> None:
    query = User.filter(lm.fld["age"] > 25)
    assert_type(query, Query[User])
    assert_type(query.sort("age", descending=True).head(), Query[User])
    assert_type(query.load_one(), User | None)
    assert_type(query.load_many(), list[User])
    assert_type(query.load_latest(), User | None)
    assert_type(User.from_id("64f8a0000000000000000000"), User | None)
    assert_type(query.load_polars(), pl.DataFrame)
    assert_type(query.collect(), pl.DataFrame)
    assert_type(query.load_dataframe(), pd.DataFrame)
    assert_type(query.collect_schema(), pl.Schema)
    assert_type(query.count(), int)
    assert_type(query.group_by("name"), GroupedQuery[User])
    assert_type(query.group_by("name").len(), Query[User])
    assert_type(query.group_by("name").agg(n=lm.fld["age"].count()), Query[User])
    assert_type(User.scan(), pl.LazyFrame)
    assert_type(query.scan(), pl.LazyFrame)
    raw = lm.scan_collection("my_app", "users", schema={"name": pl.String})
    assert_type(raw, pl.LazyFrame)
    assert_type(raw.head(2).collect(), pl.DataFrame)
    frame = pl.DataFrame({"name": ["a"], "age": [1]})
    assert_type(User.insert_dataframe(frame), WriteResult)
    assert_type(User.upsert_dataframe(frame, on=["name"]), WriteResult)
    assert_type(lm.when(lm.fld["age"] > 1).then(lm.lit(1)).otherwise(0), lm.Expr)
    assert_type(lm_alias.fld["age"].cast(pl.Float64), lm.Expr)
    assert_type(User(name="a", age=1).persist(), User)
    assert issubclass(User, AliasPersistable)
