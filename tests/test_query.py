"""The query plan: loaders, immutability, pushdown (explain + what reached the server),
and a differential test: every plan shape pushed into MongoDB equals the same plan
evaluated by Polars on the whole collection loaded as a frame."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import loom_frames as lm
from loom_frames import AggregationStages, Persistable, StrLower, declare_persist_db, fld
from loom_frames.schema import model_resolver

EXAMPLES = int(os.environ.get("LOOM_HYPOTHESIS_EXAMPLES", "300"))
DAY0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)


@pytest.fixture
def Item(db_name: str) -> type[Persistable]:  # noqa: N802
    @declare_persist_db(db_name=db_name, collection_name="items")
    class Item(Persistable):
        cat: str | None = None
        a: int | None = None
        x: float | None = None
        t: dt.datetime | None = None
        flag: bool | None = None
        email: StrLower = "x@y.z"

    return Item


@pytest.fixture
def items(Item: type[Persistable]) -> list[Persistable]:  # noqa: N803
    rows = [
        Item(cat=c, a=i, x=i / 2, t=DAY0 + dt.timedelta(hours=7 * i), flag=i % 2 == 0,
             email=f"U{i}@X.io")
        for i, c in enumerate(["a", "b", "a", "c", "b", "a", None, "c"])
    ]
    Item.persist_many(rows)
    return rows


# ------------------------------------------------------------------ loaders
def test_loaders(Item: Any, items: list[Any]) -> None:  # noqa: N803
    q = Item.filter(fld["a"] >= 2)
    assert q.count() == 6 and q.exists()
    assert not Item.filter(fld["a"] > 100).exists()
    assert sorted(o.a for o in q.load_many()) == [2, 3, 4, 5, 6, 7]
    assert Item.filter(fld["email"] == "U3@x.IO").load_one().a == 3  # literal lowercased
    assert Item.filter(fld["a"] > 100).load_one() is None
    assert Item.filter().load_latest().a == 7  # same updated_time: ties by _id
    df = q.load_dataframe()
    assert list(df.columns) == ["id", "created_at", "updated_time", "cat", "a", "x", "t",
                                "flag", "email"]
    assert str(df["a"].dtype) == "Int64" and str(df["t"].dtype) == "datetime64[ms, UTC]"
    frame = q.load_polars()
    assert frame.schema["id"] == pl.String and frame.schema["t"] == pl.Datetime("ms", "UTC")
    assert set(frame["id"].to_list()) == {str(o.id) for o in items[2:]}
    table = q.load_table()
    assert table.schema.field("a").type == pa.int64() and table.num_rows == 6
    batches = list(Item.filter().iter_batches(batch_size=3))
    assert [b.num_rows for b in batches] == [3, 3, 2]
    assert all(isinstance(b, pa.RecordBatch) for b in batches)


def test_empty_results_are_typed(Item: Any) -> None:  # noqa: N803
    frame = Item.filter(fld["a"] > 1).load_polars()
    assert frame.height == 0 and frame.schema == Item.polars_schema()
    grouped = Item.filter().group_by("cat").agg(n=fld["a"].count(), m=fld["x"].mean())
    empty = grouped.load_polars()
    assert empty.schema == pl.Schema({"cat": pl.String, "n": pl.UInt32, "m": pl.Float64})
    assert grouped.load_dataframe().shape == (0, 3)


def test_query_is_immutable(Item: Any, items: list[Any]) -> None:  # noqa: N803
    base = Item.filter(fld["a"] >= 1)
    limited = base.limit(2)
    sorted_ = base.sort("a", descending=True)
    assert base.count() == 7
    assert limited.count() == 2 and len(base.load_many()) == 7
    assert [o.a for o in sorted_.limit(3).load_many()] == [7, 6, 5]
    assert base.steps != limited.steps


def test_load_many_after_projection_is_a_clear_error(Item: Any, items: list[Any]) -> None:  # noqa: N803
    with pytest.raises(lm.PlanError, match="load_polars"):
        Item.filter().select("a").load_many()
    with pytest.raises(lm.PlanError):
        Item.filter().group_by("cat").agg(n=fld["a"].count()).load_many()


def test_a_whole_load_asks_for_batches_as_pymongoarrow_does(Item: Any, commands: Any) -> None:
    # The server's own batches (101 documents, then up to 16 MiB): a first batch of
    # 100,000 saved a round trip, but cost SecantusDB 10% more CPU (bench_read.py).
    from pymongoarrow.api import find_arrow_all

    Item.persist_many([Item(a=i) for i in range(300)])
    commands.clear()
    assert Item.filter().load_table().num_rows == 300
    assert len(Item.filter().load_many()) == 300
    assert Item.agg(AggregationStages().match({})).load_many()[0]["a"] == 0
    ours = [(c["name"], c["command"].get("batchSize")) for c in commands.commands]
    assert ours == [("find", None), ("getMore", None)] * 2 + [("aggregate", None),
                                                              ("getMore", None)]
    assert commands.returned == 900
    commands.clear()
    find_arrow_all(Item.collection(), {})
    assert [(c["name"], c["command"].get("batchSize")) for c in commands.commands] == ours[:2]
    commands.clear()
    assert [b.num_rows for b in Item.filter().iter_batches(batch_size=200)] == [200, 100]
    assert [c["name"] for c in commands.commands] == ["find", "getMore"]  # as asked


def test_load_many_pauses_the_garbage_collector_and_restores_it(
    Item: Any, items: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from loom_frames.read import objects

    during: list[bool] = []
    real = objects.hydrator

    def watching(model: Any) -> Any:
        build = real(model)

        def watched(doc: Any) -> Any:
            during.append(gc.isenabled())
            return build(doc)

        return watched

    monkeypatch.setattr(objects, "hydrator", watching)
    assert gc.isenabled()
    assert len(Item.filter().load_many()) == 8
    assert during == [False] * 8 and gc.isenabled()
    Item.collection().insert_one({"a": "not an int"})
    with pytest.raises(lm.DocumentValidationError, match="not an int"):
        Item.filter().load_many()
    assert gc.isenabled()  # restored after a failure too
    gc.disable()
    try:
        Item.filter(fld["a"] >= 0).load_many()
        assert not gc.isenabled()  # the caller's choice is kept
    finally:
        gc.enable()


def test_typos_fail_when_the_query_is_built(Item: Any) -> None:  # noqa: N803
    with pytest.raises(lm.FieldNotFoundError, match="did you mean 'cat'"):
        Item.filter(fld["cta"] == "a")
    with pytest.raises(lm.FieldNotFoundError):
        Item.filter().sort("aa")
    with pytest.raises(lm.InvalidExpressionError):
        Item.filter(fld["a"] > "x")
    with pytest.raises(lm.PlanError, match="not an aggregation"):
        Item.filter().group_by("cat").agg(n=fld["a"])
    with pytest.raises(lm.PlanError, match=">= 1"):
        Item.filter().limit(0)
    with pytest.raises(lm.PlanError, match="lm.fld"):
        Item.filter({"a": 1})


# ------------------------------------------------------------------ pushdown
def test_filter_sort_limit_is_one_find(Item: Any, items: list[Any], commands: Any) -> None:  # noqa: N803
    # nulls_last=True is MongoDB's own descending order: a plain find (Polars' default,
    # nulls first, needs a null flag on an Optional field: an aggregate)
    q = (Item.filter(fld["a"] > 1, fld["cat"] == "a")
         .sort("a", descending=True, nulls_last=True).limit(1))
    cmd = q.compile().to_dict()
    assert cmd["filter"] == {"a": {"$gt": 1}, "cat": {"$eq": "a"}}
    assert cmd["sort"] == {"a": -1, "_id": 1} and cmd["limit"] == 1
    assert "find" in str(q.explain()) and "limit" in str(q.explain())
    assert [o.a for o in q.load_many()] == [5]
    (find,) = commands.named("find")
    assert find["limit"] == 1 and find["filter"] == cmd["filter"]
    assert commands.returned == 1


def test_a_query_shows_itself_as_its_plan(Item: Any) -> None:  # noqa: N803
    q = Item.filter(fld["a"] > 1).sort("a").limit(3)
    text = repr(q)
    assert text.startswith("<Query Item>\nItem: one MongoDB find on ") and " at 0x" not in text
    assert 'filter: {"a": {"$gt": 1}}' in text and "limit: 3" in text
    assert "locally: type conversion" in text
    # the projection is plain: stored keys only, nothing computed per document
    projection = q.explain().command.to_dict()["projection"]
    assert f'projection: {json.dumps(projection)}' in text
    assert set(projection.values()) == {1} and "$" not in json.dumps(projection)
    html = q._repr_html_()
    assert html.startswith("<pre>") and "&quot;$gt&quot;" in html
    grouped = Item.filter().group_by("cat").agg(n=fld["a"].count())
    assert "$group" in repr(grouped) and "$let" not in repr(grouped)


def test_select_is_the_find_projection(Item: Any, items: list[Any], commands: Any) -> None:  # noqa: N803
    frame = Item.filter(fld["a"] < 2).select("a", "cat").load_polars()
    assert frame.columns == ["a", "cat"] and frame["a"].to_list() == [0, 1]
    (find,) = commands.named("find")
    projection = find["projection"]
    assert projection.get("a") == 1 and projection.get("cat") == 1 and projection["_id"] == 0
    assert "x" not in projection and "email" not in projection


def test_group_by_is_pushed_and_returns_only_groups(Item: Any, items: list[Any], commands: Any) -> None:  # noqa: N803
    q = Item.filter().group_by("cat").agg(n=fld["a"].count(), total=fld["a"].sum())
    assert q.compile().operation == "aggregate"
    assert "$group" in str(q.explain())
    frame = q.load_polars().sort("cat", nulls_last=False)
    assert frame.to_dicts() == [
        {"cat": None, "n": 1, "total": 6}, {"cat": "a", "n": 3, "total": 7},
        {"cat": "b", "n": 2, "total": 5}, {"cat": "c", "n": 2, "total": 10},
    ]
    assert commands.returned == 4  # the groups, never the documents


def test_time_bucketing_group_by(Item: Any, items: list[Any]) -> None:  # noqa: N803
    q = (Item.filter().group_by(day=fld["t"].dt.truncate("1d"))
         .agg(n=fld["a"].count(), first_a=fld["a"].min()).sort("day"))
    frame = q.load_polars()
    assert frame.schema["day"] == pl.Datetime("ms", "UTC")
    assert frame["day"].to_list() == [DAY0, DAY0 + dt.timedelta(days=1), DAY0 + dt.timedelta(days=2)]
    assert frame["n"].to_list() == [4, 3, 1] and frame["first_a"].to_list() == [0, 4, 7]


def test_with_columns_and_alias(Item: Any, items: list[Any]) -> None:  # noqa: N803
    frame = (Item.filter(fld["a"] <= 2).with_columns(double=fld["a"] * 2)
             .select("a", fld["double"], (fld["x"] + 1).alias("x1")).sort("a").load_polars())
    assert frame.to_dicts() == [{"a": 0, "double": 0, "x1": 1.0}, {"a": 1, "double": 2, "x1": 1.5},
                                {"a": 2, "double": 4, "x1": 2.0}]


def test_filter_after_group_is_a_having(Item: Any, items: list[Any]) -> None:  # noqa: N803
    q = Item.filter().group_by("cat").agg(n=fld["a"].count()).filter(fld["n"] >= 2).sort("cat")
    assert q.load_polars()["cat"].to_list() == ["a", "b", "c"]


def test_aggregation_stages_builder(Item: Any, items: list[Any]) -> None:  # noqa: N803
    stages = (AggregationStages().match(fld["a"] >= 1).add_fields({"twice": {"$multiply": ["$a", 2]}})
              .project({"_id": 0, "cat": 1, "twice": 1}).sort({"twice": -1}).skip(1).limit(2))
    rows = Item.agg(stages).load_many()
    assert rows == [{"cat": None, "twice": 12}, {"cat": "a", "twice": 10}]
    assert Item.agg(AggregationStages().count("n")).load_many() == [{"n": 8}]
    unwound = Item.agg(AggregationStages().match({"a": 0}).project({"_id": 0, "v": [1, 2]})
                       .unwind("v")).load_many()
    assert unwound == [{"v": 1}, {"v": 2}]
    schema = pa.schema({"cat": pa.string(), "n": pa.int64()})
    typed = Item.agg(AggregationStages().group({"_id": "$cat", "n": {"$sum": 1}})
                     .project({"_id": 0, "cat": "$_id", "n": 1}), schema=schema).sort("cat")
    assert typed.load_polars().schema == pl.Schema({"cat": pl.String, "n": pl.Int64})
    assert AggregationStages().limit(1) != AggregationStages().limit(2)
    with pytest.raises(ValueError):
        AggregationStages().group({"n": {"$sum": 1}})


# ------------------------------------------------------------------ differential
CATS = st.sampled_from(["a", "b", "c", None])
INTS = st.one_of(st.none(), st.integers(-5, 5))
FLOATS = st.one_of(st.none(), st.sampled_from([-1.5, 0.0, -0.0, 2.0, 3.25, math.nan, math.inf]))
TIMES = st.one_of(st.none(), st.integers(0, 96).map(lambda h: DAY0 + dt.timedelta(hours=h)))
BOOLS = st.one_of(st.none(), st.booleans())

ROWS = st.lists(st.fixed_dictionaries({"cat": CATS, "a": INTS, "x": FLOATS, "t": TIMES,
                                       "flag": BOOLS}), min_size=0, max_size=12)

FILTERS = st.sampled_from([
    None, fld["a"] > 0, fld["a"] != 2, fld["cat"].is_in(["a", "b"]), fld["x"] >= 0.0,
    ~(fld["flag"] == True), fld["t"] < DAY0 + dt.timedelta(days=2),  # noqa: E712
    (fld["a"] < 3) | fld["cat"].is_null(), fld["x"].is_not_null() & (fld["a"] >= -2),
])
AGGS = {
    "count": lambda e: e.count(), "sum": lambda e: e.sum(), "mean": lambda e: e.mean(),
    "min": lambda e: e.min(), "max": lambda e: e.max(), "std": lambda e: e.std(),
    "var": lambda e: e.var(), "n_unique": lambda e: e.n_unique(), "median": lambda e: e.median(),
    "quantile": lambda e: e.quantile(0.25),
}
KEYS = st.sampled_from([("cat", fld["cat"]), ("flag", fld["flag"]),
                        ("day", fld["t"].dt.truncate("1d"))])
SHAPES = st.one_of(
    st.tuples(st.just("sort"), st.sampled_from(["a", "x", "t", "cat"]), st.booleans(),
              st.integers(1, 6)),
    st.tuples(st.just("select"), st.lists(st.sampled_from(["a", "x", "cat", "t"]), min_size=1,
                                          max_size=3, unique=True)),
    st.tuples(st.just("group"), KEYS, st.sampled_from(sorted(AGGS)), st.sampled_from(["a", "x"])),
    st.tuples(st.just("compute"), st.sampled_from(["a", "x"])),
)


def _mongo_order(frame: pl.DataFrame, key: str, descending: bool) -> pl.DataFrame:
    """Sort as the query does: nulls first (Polars' default, both directions), then NaN
    below every number (MongoDB's order); ties by id."""
    col = pl.col(key)
    keys = [col.is_not_null()]
    if frame.schema[key] == pl.Float64:
        keys.append(col.is_not_nan().fill_null(True))
    keys.append(col)
    flags = [False] + [descending] * (len(keys) - 1)
    return frame.sort([*keys, pl.col("id")], descending=[*flags, False], nulls_last=False)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=ROWS, predicate=FILTERS, shape=SHAPES)
def test_pushed_plan_equals_polars_on_the_whole_collection(
    Item: Any, rows: list[dict[str, Any]], predicate: Any, shape: tuple[Any, ...]  # noqa: N803
) -> None:
    coll = Item.collection()
    coll.delete_many({})
    if rows:
        coll.insert_many([{"_id": ObjectId(), **{k: v for k, v in r.items() if v is not None
                                                  or k == "a"}} for r in rows])
    everything = Item.filter().load_polars()
    query = Item.filter(predicate) if predicate is not None else Item.filter()
    resolver = model_resolver(Item)
    local = everything if predicate is None else everything.filter(predicate.to_polars(resolver))
    kind = shape[0]
    if kind == "sort":
        _, key, desc, k = shape
        got = query.sort(key, descending=desc).limit(k).load_polars()
        want = _mongo_order(local, key, desc).head(k)
        assert got["id"].to_list() == want["id"].to_list()
        return
    if kind == "select":
        got = query.select(*shape[1]).load_polars()
        want = local.select(shape[1])
        assert_frame_equal(got, want, check_row_order=False)
        return
    if kind == "compute":
        expr = (fld[shape[1]] * 2 + 1).abs()
        got = query.select("id", out=expr).load_polars().sort("id")
        computed = expr.to_polars(resolver).alias("out")
        assert_frame_equal(got, local.select("id", computed).sort("id"))
        return
    _, (key_name, key_expr), agg_name, field = shape
    agg = AGGS[agg_name](fld[field])
    got = query.group_by(**{key_name: key_expr}).agg(v=agg).load_polars()
    want = local.group_by(key_expr.to_polars(resolver).alias(key_name)).agg(
        agg.to_polars(resolver).alias("v"))
    assert_frame_equal(got.sort(key_name), want.sort(key_name),
                       rel_tol=1e-9, abs_tol=1e-9)
