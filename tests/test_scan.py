"""Polars LazyFrame sources: pushdown of columns, predicates and limits, and correctness
when a predicate cannot be translated (the scan always re-applies it)."""

from __future__ import annotations

import datetime as dt
import math
import os
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import loom_frames as lm
from loom_frames import Persistable, declare_persist_db, fld
from loom_frames.expr import Kind, SimpleResolver
from loom_frames.expr.from_polars import translate
from loom_frames.scan import last_pushdown

EXAMPLES = int(os.environ.get("LOOM_HYPOTHESIS_EXAMPLES", "300"))
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def Reading(db_name: str) -> type[Persistable]:  # noqa: N802
    @declare_persist_db(db_name=db_name, collection_name="readings")
    class Reading(Persistable):
        sensor: str | None = None
        count: int | None = None
        value: float | None = None
        ok: bool | None = None
        at: dt.datetime | None = None
        note: str | None = None
        site: str | None = None
        unit: str | None = None

    return Reading


@pytest.fixture
def rows(Reading: Any) -> list[Any]:  # noqa: N803
    objs = [
        Reading(sensor=f"s{i % 10}", count=i * 1000, value=(math.nan if i % 13 == 0 else i / 4),
                ok=i % 3 == 0, at=T0 + dt.timedelta(minutes=i), note=None if i % 5 else "n",
                site="x", unit="C")
        for i in range(100)
    ]
    Reading.persist_many(objs)
    return objs


# ------------------------------------------------------------------ API
def test_scan_is_lazy_and_typed(Reading: Any, commands: Any) -> None:  # noqa: N803
    lf = Reading.scan()
    assert isinstance(lf, pl.LazyFrame)
    assert lf.collect_schema() == Reading.polars_schema()
    assert commands.named("find", "aggregate") == []  # nothing read before collect
    plan = lf.explain()
    assert "MongoDB[" in plan and "find before pushdown" in plan
    assert '"__loom_report": "<server-side type check of' in plan and "$let" not in plan


def test_typical_pipeline_pushes_filter_projection_and_limit(
    Reading: Any, rows: list[Any], commands: Any  # noqa: N803
) -> None:
    out = (Reading.scan().filter(pl.col("count") > 50_000).select("sensor", "count")
           .head(10).collect())
    assert out.columns == ["sensor", "count"] and out.height == 10
    assert out["count"].to_list() == [i * 1000 for i in range(51, 61)]
    (find,) = commands.named("find")
    assert find["filter"] == {"count": {"$gt": 50000}}
    projected = {k for k, v in find["projection"].items() if v == 1}
    assert projected == {"sensor", "count"}
    assert commands.returned == 49  # the matching documents only
    last = last_pushdown()  # what that collect sent, as the user can see it
    assert last is not None and last.command["filter"] == find["filter"]
    assert {k for k, v in last.command["projection"].items() if v == 1} == projected
    assert 'filter: {"count": {"$gt": 50000}}' in str(last)
    # Polars hands a source its row limit only when no filter comes before it:
    commands.clear()
    out = Reading.scan().select("sensor", "count").head(10).collect()
    assert out["count"].to_list() == [i * 1000 for i in range(10)]
    (find,) = commands.named("find")
    assert find["limit"] == 10 and commands.returned == 10
    assert last_pushdown().command["limit"] == 10  # type: ignore[union-attr]


def test_limit_then_filter_means_first_rows_then_filter(Reading: Any, rows: list[Any]) -> None:  # noqa: N803
    got = Reading.scan().head(10).filter(pl.col("count") > 3000).collect()
    assert got["count"].to_list() == [4000, 5000, 6000, 7000, 8000, 9000]


def test_string_equality_and_projection_of_two_of_eight(Reading: Any, rows: list[Any], commands: Any) -> None:  # noqa: N803
    out = Reading.scan().filter(pl.col("sensor") == "s7").select("count", "value").collect()
    assert out.height == 10 and out.columns == ["count", "value"]
    (find,) = commands.named("find")
    assert find["filter"] == {"sensor": {"$eq": "s7"}}
    assert commands.returned == 10


@pytest.mark.filterwarnings("ignore::polars.exceptions.PolarsInefficientMapWarning")
def test_untranslatable_predicates_are_still_applied(Reading: Any, rows: list[Any], commands: Any) -> None:  # noqa: N803
    everything = Reading.filter().load_polars()
    udf = pl.col("sensor").map_elements(lambda s: s.endswith("3"), return_dtype=pl.Boolean)
    window = pl.col("count") > pl.col("count").mean()
    regex = pl.col("sensor").str.contains("s[12]$")
    for predicate in (udf, window, regex, udf & (pl.col("count") < 40_000)):
        got = Reading.scan().filter(predicate).collect()
        assert_frame_equal(got, everything.filter(predicate))
        assert got.height > 0
    got = Reading.scan().filter(udf).head(2).collect()
    assert got["sensor"].to_list() == ["s3", "s3"]


def test_nan_rows_kept_as_polars_keeps_them(Reading: Any, rows: list[Any]) -> None:  # noqa: N803
    got = Reading.scan().filter(pl.col("value") > 20).collect()
    want = Reading.filter().load_polars().filter(pl.col("value") > 20)
    assert got.height == want.height and got["value"].is_nan().sum() > 0


def test_query_scan_continues_a_pushed_group_by(Reading: Any, rows: list[Any], commands: Any) -> None:  # noqa: N803
    grouped = Reading.filter(fld["count"] >= 0).group_by("sensor").agg(n=fld["count"].count())
    out = grouped.scan().filter(pl.col("sensor") != "s0").sort("sensor").collect()
    assert out["sensor"].to_list() == [f"s{i}" for i in range(1, 10)]
    assert out["n"].to_list() == [10] * 9
    (agg,) = commands.named("aggregate")
    assert any("$group" in stage for stage in agg["pipeline"])
    assert commands.returned == 9


def test_scan_collection_without_a_model(Reading: Any, rows: list[Any], db_name: str) -> None:  # noqa: N803
    lf = lm.scan_collection(db_name, "readings", schema={"sensor": pl.String, "count": pl.Int64})
    assert lf.collect_schema() == pl.Schema({"sensor": pl.String, "count": pl.Int64})
    assert lf.filter(pl.col("count") < 3000).collect()["count"].to_list() == [0, 1000, 2000]
    arrow = lm.scan_collection(db_name, "readings", schema=pa.schema({"value": pa.float64()}))
    assert arrow.collect().height == 100
    with pytest.raises(lm.PlanError):
        lm.scan_collection(db_name, "readings", schema={})


def test_batches_stream(Reading: Any, rows: list[Any], commands: Any) -> None:  # noqa: N803
    from loom_frames.scan import scan_query

    batches = list(Reading.filter().iter_batches(batch_size=30))
    assert [b.num_rows for b in batches] == [30, 30, 30, 10]
    assert len(commands.named("getMore")) == 3  # read as the server sends them
    assert scan_query(Reading.filter()).collect().height == 100


def test_translate_table() -> None:
    r = SimpleResolver("T", {"a": Kind.INT, "x": Kind.FLOAT, "s": Kind.STR, "b": Kind.BOOL,
                             "t": Kind.DATETIME})
    cases = [
        (pl.col("a") > 5, {"a": {"$gt": 5}}),
        (pl.lit(5) < pl.col("a"), {"a": {"$gt": 5}}),
        (pl.col("s").is_in(["p", "q"]), {"s": {"$in": ["p", "q"]}}),
        (pl.col("s").is_null(), {"s": {"$eq": None}}),
        (pl.col("s").str.starts_with("ab"), {"s": {"$regex": "^ab"}}),
        (pl.col("b"), {"b": {"$eq": True}}),
        (pl.col("t") >= dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
         {"t": {"$gte": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}}),
    ]
    for predicate, expected in cases:
        pushed, kept = translate(predicate, r)
        assert kept == [] and pushed is not None, predicate
        assert pushed.to_mongo() == expected, predicate
    pushed, kept = translate((pl.col("a") > 1) & pl.col("s").str.contains("a+"), r)
    assert pushed is not None and pushed.to_mongo() == {"a": {"$gt": 1}} and len(kept) == 1
    pushed, _ = translate(pl.col("x") > 1.5, r)  # NaN > 1.5 in Polars: kept in the filter
    assert pushed is not None and "$or" in pushed.to_mongo()
    assert translate(pl.col("x") < math.nan, r)[0] is None


# ------------------------------------------------------------------ differential
INTS = st.one_of(st.none(), st.integers(-3, 3))
FLOATS = st.one_of(st.none(), st.sampled_from([-1.0, 0.0, -0.0, 0.5, 2.0, math.nan, math.inf]))
TEXTS = st.one_of(st.none(), st.sampled_from(["", "a", "ab", "ba", "Ab", "é", "日本"]))
TIMES = st.one_of(st.none(), st.integers(-2, 2).map(lambda d: T0 + dt.timedelta(days=d)))
DOCS = st.lists(st.fixed_dictionaries({"count": INTS, "value": FLOATS, "sensor": TEXTS,
                                       "ok": st.one_of(st.none(), st.booleans()),
                                       "at": TIMES}), max_size=10)


def _leaf() -> st.SearchStrategy[pl.Expr]:
    ops = ["__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"]
    cmp = st.sampled_from(ops)
    return st.one_of(
        st.builds(lambda op, v: getattr(pl.col("count"), op)(v), cmp, st.integers(-3, 3)),
        st.builds(lambda op, v: getattr(pl.col("value"), op)(v), cmp,
                  st.sampled_from([-1.0, 0.0, 0.5, 2.0, math.inf, math.nan])),
        st.builds(lambda op, v: getattr(pl.col("sensor"), op)(v), cmp,
                  st.sampled_from(["", "a", "ab", "b", "é"])),
        st.builds(lambda op, v: getattr(pl.col("at"), op)(v), cmp, TIMES.filter(bool)),
        st.builds(lambda v: pl.col("ok") == v, st.booleans()),
        st.builds(lambda vs: pl.col("count").is_in(vs), st.lists(st.integers(-3, 3), max_size=3)),
        st.builds(lambda vs: pl.col("sensor").is_in(vs),
                  st.lists(st.sampled_from(["a", "ab", "é"]), max_size=2)),
        st.sampled_from([pl.col(c).is_null() for c in ("count", "value", "sensor", "at")]),
        st.sampled_from([pl.col(c).is_not_null() for c in ("count", "value", "sensor")]),
        st.builds(lambda lo, hi, c: pl.col("count").is_between(lo, hi, closed=c),
                  st.integers(-3, 3), st.integers(-3, 3),
                  st.sampled_from(["both", "left", "right", "none"])),
        st.builds(lambda t: pl.col("sensor").str.starts_with(t), st.sampled_from(["", "a", "b"])),
        st.builds(lambda t: pl.col("sensor").str.ends_with(t), st.sampled_from(["b", "é"])),
        st.builds(lambda t: pl.col("sensor").str.contains(t, literal=True),
                  st.sampled_from(["a", "."])),
        st.just(pl.col("ok")),
        st.just(pl.col("value") > pl.col("value").mean()),  # a window: never pushed
    )


PREDICATES = st.recursive(
    _leaf(),
    lambda inner: st.one_of(
        st.builds(lambda a, b: a & b, inner, inner),
        st.builds(lambda a, b: a | b, inner, inner),
        st.builds(lambda a: ~a, inner),
    ),
    max_leaves=6,
)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(docs=DOCS, predicate=PREDICATES, limit=st.one_of(st.none(), st.integers(1, 4)))
def test_scan_filter_equals_polars_filter_row_for_row(
    Reading: Any, docs: list[dict[str, Any]], predicate: pl.Expr, limit: int | None  # noqa: N803
) -> None:
    coll = Reading.collection()
    coll.delete_many({})
    if docs:
        coll.insert_many([{k: v for k, v in d.items() if v is not None or k == "count"}
                          for d in docs])
    want = Reading.filter().load_polars().filter(predicate)
    lf = Reading.scan().filter(predicate)
    if limit is not None:
        lf, want = lf.head(limit), want.head(limit)
    assert_frame_equal(lf.collect(), want)
