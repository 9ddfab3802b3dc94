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
    assert "MongoDB[" in plan and "one MongoDB find per collect" in plan
    assert "last_pushdown()" in plan and "$let" not in plan


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

    Reading.collection().insert_many([{"sensor": "extra", "count": i} for i in range(150)])
    commands.clear()
    stream = Reading.filter().sort("count").iter_batches(batch_size=30)
    first = next(stream)
    # the server's own replies (101 documents first), read as they come: one so far
    assert first.num_rows == 30 and [c["name"] for c in commands.commands] == ["find"]
    batches = [first, *stream]
    assert [b.num_rows for b in batches] == [30] * 8 + [10]  # cut across replies
    assert [c["name"] for c in commands.commands] == ["find", "getMore"]
    whole = Reading.filter().sort("count").load_table()
    assert_frame_equal(pl.from_arrow(pa.Table.from_batches(batches)), pl.from_arrow(whole))
    assert scan_query(Reading.filter()).collect().height == 250


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


def test_translate_table_of_what_lm_fld_says_too() -> None:
    r = SimpleResolver("T", {"a": Kind.INT, "b": Kind.INT, "x": Kind.FLOAT, "s": Kind.STR,
                             "t": Kind.DATETIME})
    cases = [
        (pl.col("t").dt.month() == 3, {"$expr": {"$eq": [{"$month": "$t"}, 3]}}),
        (pl.col("t").dt.year() >= 2024, {"$expr": {"$gte": [{"$year": "$t"}, 2024]}}),
        (pl.col("t").dt.convert_time_zone("Europe/London").dt.day() == 1,
         {"$expr": {"$eq": [{"$dayOfMonth": {"date": "$t", "timezone": "Europe/London"}}, 1]}}),
        (pl.col("a") > pl.col("b"),
         {"$expr": {"$and": [{"$gt": ["$a", "$b"]}, {"$gt": ["$b", None]}]}}),
        (pl.col("a") % 2 == 0,
         {"$expr": {"$eq": [{"$mod": [{"$add": [{"$mod": ["$a", 2]}, 2]}, 2]}, 0]}}),
        (pl.col("s").str.contains("SF"), {"s": {"$regex": "SF"}}),
        (pl.col("a").fill_null(0) > 60, {"a": {"$gt": 60}}),
        (pl.col("a").fill_null(100) > 60, {"$or": [{"a": {"$gt": 60}}, {"a": {"$eq": None}}]}),
        (pl.col("x").fill_null(100) <= 60, {"x": {"$lte": 60}}),
    ]
    for predicate, expected in cases:
        pushed, kept = translate(predicate, r)
        assert kept == [] and pushed is not None, predicate
        assert pushed.to_mongo() == expected, predicate
    # lowered strings: MongoDB maps ASCII letters only, so non-ASCII strings are fetched too
    pushed, _ = translate(pl.col("s").str.to_lowercase() == "sfo", r)
    assert pushed is not None and pushed.to_mongo()["$or"][1] == {"s": {"$regex": "[^\\x00-\\x7f]"}}
    # ... which is a superset: never pushed under a ~ (it would turn into a subset)
    assert translate(~(pl.col("s").str.to_lowercase() == "sfo"), r)[0] is None
    # a pattern with regex syntax stays local (Rust and PCRE differ)
    assert translate(pl.col("s").str.contains("S.F"), r)[0] is None


@pytest.fixture
def Flight(db_name: str) -> type[Persistable]:  # noqa: N802
    @declare_persist_db(db_name=db_name, collection_name="flights")
    class Flight(Persistable):
        origin: str
        dest: str
        dep_time: int | None = None
        arr_time: int | None = None
        delay: float | None = None
        at: dt.datetime

    return Flight


@pytest.fixture
def flights(Flight: Any) -> int:  # noqa: N803
    origins, dests = ["JFK", "jfk", "EWR", "LGA"], ["SFO", "LAX", "MSFX", "ORD", "BOS"]
    Flight.persist_many([
        Flight(origin=origins[i % 4], dest=dests[i % 5],
               dep_time=None if i % 7 == 0 else 500 + 10 * i,
               arr_time=None if i % 11 == 0 else 900 + 10 * i - 60 * (i % 3) * i,
               delay=math.nan if i % 13 == 0 else (i % 9) * 12.5,
               at=dt.datetime(2023 + i % 5 // 3, 1 + i % 12, 1 + i % 28, i % 24, 30, tzinfo=dt.UTC))
        for i in range(120)
    ])
    return 120


PUSHED_SHAPES = {
    "month": pl.col("at").dt.month() == 3,
    "day": pl.col("at").dt.day() > 20,
    "year": pl.col("at").dt.year() >= 2024,
    "hour in New York": pl.col("at").dt.convert_time_zone("America/New_York").dt.hour() < 3,
    "column vs column": pl.col("arr_time") > pl.col("dep_time"),
    "to_lowercase": pl.col("origin").str.to_lowercase() == "jfk",
    "modulo": pl.col("dep_time") % 20 == 0,
    "int vs float": pl.col("dep_time") > 1250.5,
    "contains without literal=True": pl.col("dest").str.contains("SF"),
    "fill_null": pl.col("dep_time").fill_null(0) > 1000,
    "int vs float column": pl.col("arr_time") < pl.col("delay"),
}


@pytest.mark.parametrize("name", list(PUSHED_SHAPES))
def test_scan_pushes_what_lm_fld_can_say(
    Flight: Any, flights: int, commands: Any, name: str  # noqa: N803
) -> None:
    predicate = PUSHED_SHAPES[name]
    everything = Flight.filter().load_polars()
    commands.clear()
    got = Flight.scan().filter(predicate).collect()
    assert_frame_equal(got, everything.filter(predicate))
    pushed = last_pushdown()
    assert pushed is not None and pushed.kept == (), pushed.kept
    assert 0 < got.height < flights
    assert commands.returned == got.height  # documents returned == rows matched


def test_scan_of_lowered_non_ascii_strings_fetches_them_and_filters_right(
    Flight: Any, flights: int, commands: Any  # noqa: N803
) -> None:
    at = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    Flight.persist_many([Flight(origin=o, dest="X", at=at) for o in ("ÉWR", "éwr", "Ewr")])
    predicate = pl.col("origin").str.to_lowercase() == "éwr"  # Polars: both É and é lower
    commands.clear()
    got = Flight.scan().filter(predicate).collect()
    assert set(got["origin"].to_list()) == {"éwr", "ÉWR"}
    assert commands.returned == 2  # the non-ASCII strings only, filtered by Polars


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
        # what lm.fld says too (issue 13): date parts, columns, casts, %, case, fill_null
        st.builds(lambda part, op, v: getattr(getattr(pl.col("at").dt, part)(), op)(v),
                  st.sampled_from(["year", "month", "day", "hour", "weekday"]), cmp,
                  st.sampled_from([0, 1, 2, 3, 31, 2024])),
        st.builds(lambda zone, op, v: getattr(pl.col("at").dt.convert_time_zone(zone).dt.day(),
                                              op)(v),
                  st.sampled_from(["America/New_York", "Asia/Tokyo"]), cmp, st.integers(1, 3)),
        st.builds(lambda op: getattr(pl.col("count"), op)(pl.col("value")), cmp),
        st.builds(lambda op, v: getattr(pl.col("count"), op)(v), cmp,
                  st.sampled_from([-1.5, 0.5, 2.0, math.inf])),
        st.builds(lambda m, v: (pl.col("count") % m) == v, st.sampled_from([2, 3, -2]),
                  st.integers(-2, 2)),
        st.builds(lambda how, op, v: getattr(getattr(pl.col("sensor").str, how)(), op)(v),
                  st.sampled_from(["to_lowercase", "to_uppercase"]), cmp,
                  st.sampled_from(["a", "ab", "AB", "é", "É"])),
        st.builds(lambda t: pl.col("sensor").str.contains(t), st.sampled_from(["a", "b", "é"])),
        st.builds(lambda fill, op, v: getattr(pl.col("count").fill_null(fill), op)(v),
                  st.integers(-3, 3), cmp, st.integers(-3, 3)),
        st.builds(lambda fill, op, v: getattr(pl.col("value").fill_null(fill), op)(v),
                  st.sampled_from([0.0, 1.5, math.nan]), cmp, st.sampled_from([0, 1.0])),
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


# ------------------------------------------------------------------ issue 15
def test_scan_len_is_counted_by_mongodb_and_fetches_no_document(
        Reading: Any, rows: list[Any], commands: Any) -> None:  # noqa: N803
    commands.clear()
    assert Reading.scan().select(pl.len()).collect().item() == 100
    (count,) = commands.named("find", "aggregate")
    assert count["pipeline"] == [{"$match": {}}, {"$count": "n"}]
    assert commands.returned == 1  # the count itself, no document
    assert Reading.scan().head(7).select(pl.len()).collect().item() == 7
    assert last_pushdown().command["pipeline"] == [{"$match": {}}, {"$limit": 7},
                                                   {"$count": "n"}]
    assert "rows counted by MongoDB" in str(last_pushdown())
    # a predicate's columns are fetched (the predicate is re-applied locally), nothing else
    commands.clear()
    assert Reading.scan().filter(pl.col("count") > 95_000).select(pl.len()).collect().item() == 4
    (find,) = commands.named("find", "aggregate")
    assert dict(find["projection"]) == {"_id": 0, "count": 1}
    want = pl.DataFrame([r.model_dump() for r in rows]).filter(pl.col("value") > 20)
    assert Reading.scan().filter(pl.col("value") > 20).select(pl.len()).collect().item() \
        == want.height
    # the hidden row column never shows, whatever is collected
    lazy = Reading.scan()
    assert "__loom_rows" not in lazy.collect_schema().names()
    assert "__loom_rows" not in lazy.collect().columns
    assert "__loom_rows" not in lazy.with_row_index().collect().columns
    counts = lazy.group_by("sensor").len().sort("sensor").collect()
    assert counts["len"].to_list() == [10] * 10
    both = lazy.select(pl.len(), pl.col("count").sum()).collect()
    assert both.row(0) == (100, sum(i * 1000 for i in range(100)))
    # a query's own steps are counted too (a group-by: the number of groups)
    grouped = Reading.filter().group_by("sensor").agg(n=lm.fld["count"].sum()).scan()
    assert grouped.select(pl.len()).collect().item() == 10


def test_scan_pushes_struct_fields_and_list_contains(db_name: str, commands: Any) -> None:
    from pydantic import BaseModel

    class Address(BaseModel):
        city: str

    @declare_persist_db(db_name=db_name, collection_name="people")
    class Person(Persistable):
        address: Address
        tags: list[str] = []

    Person.persist_many([Person(address=Address(city="Oslo"), tags=["a"]),
                         Person(address=Address(city="Rome"), tags=["b", "a"]),
                         Person(address=Address(city="Oslo"), tags=[])])
    lazy = Person.scan().filter(pl.col("address").struct.field("city") == "Oslo")
    assert lazy.collect().height == 2
    assert last_pushdown().command["filter"] == {"address.city": {"$eq": "Oslo"}}
    lazy = Person.scan().filter(pl.col("tags").list.contains("a"))
    assert lazy.collect().height == 2
    assert last_pushdown().command["filter"] == {"tags": {"$eq": "a"}}


def test_scan_explain_says_how_to_push_a_sort(Reading: Any) -> None:  # noqa: N803
    text = Reading.scan().sort("count").head(3).explain()
    assert "Model.filter().sort().limit(k).scan()" in text
    assert "find before pushdown {}" not in text
