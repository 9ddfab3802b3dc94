"""Compile tables: expression -> MongoDB query / aggregation expression / Polars result."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import polars as pl
import pytest
from bson import Decimal128, ObjectId
from expr_harness import RESOLVER

from loom_frames.errors import InvalidExpressionError, UnsupportedExpressionError
from loom_frames.expr import Expr, FieldRef, Kind, SimpleResolver, col, fld

UTC = dt.UTC
NAN = float("nan")
INF = float("inf")
OID = ObjectId("65a1b2c3d4e5f60718293a4b")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)

# ------------------------------------------------------------------- query documents
QUERIES: list[tuple[Expr, dict[str, Any]]] = [
    (fld["age"] > 25, {"age": {"$gt": 25}}),
    (fld("age") >= 25, {"age": {"$gte": 25}}),
    (25 < fld["age"], {"age": {"$gt": 25}}),
    (fld["age"] < 25, {"age": {"$lt": 25}}),
    (fld["age"] <= 25, {"age": {"$lte": 25}}),
    (fld["age"] == 25, {"age": {"$eq": 25}}),
    (fld["age"] != 25, {"age": {"$ne": 25}}),
    (fld["address.city"] == "Oslo", {"address.city": {"$eq": "Oslo"}}),
    ((fld["age"] > 25) & (fld["is_active"] == True),
     {"age": {"$gt": 25}, "is_active": {"$eq": True}}),
    ((fld["age"] > 25) & (fld["age"] < 65),
     {"age": {"$gt": 25, "$lt": 65}}),  # one operator document per field (conjoin)
    ((fld["a"] == 1) & ((fld["b"] == 2) & (fld["c"] == 3)),
     {"a": {"$eq": 1}, "b": {"$eq": 2}, "c": {"$eq": 3}}),
    ((fld["a"] == 1) | (fld["b"] == 2) | (fld["c"] == 3),
     {"$or": [{"a": {"$eq": 1}}, {"b": {"$eq": 2}}, {"c": {"$eq": 3}}]}),
    (~(fld["a"] == 1), {"a": {"$ne": 1}}),
    (~(fld["a"] != 1), {"a": {"$eq": 1}}),
    (~(fld["a"] > 1), {"$nor": [{"a": {"$gt": 1}}]}),
    (~~(fld["a"] > 1), {"a": {"$gt": 1}}),
    (~((fld["a"] == 1) | (fld["b"] == 2)), {"$nor": [{"a": {"$eq": 1}}, {"b": {"$eq": 2}}]}),
    (~((fld["a"] == 1) & (fld["b"] == 2)), {"$nor": [{"a": {"$eq": 1}, "b": {"$eq": 2}}]}),
    (fld["flag"], {"flag": {"$eq": True}}),
    (~fld["flag"], {"$nor": [{"flag": {"$eq": True}}]}),
    (fld["a"].is_in([1, 2]), {"a": {"$in": [1, 2]}}),
    (fld["a"].is_in({3, 1, 2}), {"a": {"$in": [1, 2, 3]}}),
    (fld["a"].is_in(x for x in (1, None)), {"a": {"$in": [1, None]}}),
    (fld["a"].not_in([1, 2]), {"a": {"$nin": [1, 2]}}),
    (~fld["a"].is_in([1]), {"a": {"$nin": [1]}}),
    (fld["a"].is_in([]), {"a": {"$in": []}}),
    (fld["a"].is_null(), {"a": {"$eq": None}}),
    (fld["a"].is_not_null(), {"a": {"$ne": None}}),
    (~fld["a"].is_null(), {"a": {"$ne": None}}),
    (fld["a"].exists(), {"a": {"$exists": True}}),
    (fld["a"].exists(False), {"a": {"$exists": False}}),
    (~fld["a"].exists(), {"a": {"$exists": False}}),
    (fld["a"].between(1, 5), {"a": {"$gte": 1, "$lte": 5}}),
    (fld["a"].between(1, 5, closed="left"), {"a": {"$gte": 1, "$lt": 5}}),
    (fld["a"].between(1, 5, closed="right"), {"a": {"$gt": 1, "$lte": 5}}),
    (fld["a"].between(1, 5, closed="none"), {"a": {"$gt": 1, "$lt": 5}}),
    (fld["s"].starts_with("a.b"), {"s": {"$regex": "^a\\.b"}}),
    (fld["s"].ends_with("(x)"), {"s": {"$regex": "\\(x\\)\\z"}}),
    (fld["s"].contains("1+1=2?"), {"s": {"$regex": "1\\+1=2\\?"}}),
    (fld["s"].contains("a\x00b"), {"s": {"$regex": "a\\x00b"}}),
    (fld["s"].contains("é$^"), {"s": {"$regex": "é\\$\\^"}}),
    (fld["s"].regex("^a.*z$"), {"s": {"$regex": "^a.*z$"}}),
    (fld["s"].regex("^a", "mi"), {"s": {"$regex": "^a", "$options": "im"}}),
    (fld["s"].str.regex("^a", 2 | 8), {"s": {"$regex": "^a", "$options": "im"}}),
    (fld["tags"].list.contains("x"), {"tags": {"$eq": "x"}}),
    (fld["tags"].list.len() == 2, {"tags": {"$size": 2}}),
    (fld["tags"].list.len() != 0, {"tags": {"$not": {"$size": 0}}}),
    (fld["name"] == {"$ne": None}, {"name": {"$eq": {"$ne": None}}}),
    (fld["name"] == "$where", {"name": {"$eq": "$where"}}),
    (fld["name"].is_in([{"$gt": ""}]), {"name": {"$eq": {"$gt": ""}}}),
    (fld["name"].is_in(["a", {"$gt": ""}]),
     {"$or": [{"name": {"$in": ["a"]}}, {"name": {"$eq": {"$gt": ""}}}]}),
    (fld["name"].not_in([{"$gt": ""}]), {"$nor": [{"name": {"$eq": {"$gt": ""}}}]}),
    (fld["t"] > dt.datetime(2024, 1, 1, 12, 0, 0, 123456),
     {"t": {"$gt": dt.datetime(2024, 1, 1, 12, 0, 0, 123000, tzinfo=UTC)}}),
    (fld["d"] == dt.date(2024, 1, 1), {"d": {"$eq": dt.datetime(2024, 1, 1, tzinfo=UTC)}}),
    (fld["price"] > decimal.Decimal("9.99"), {"price": {"$gt": Decimal128("9.99")}}),
    (fld["_id"] == OID, {"_id": {"$eq": OID}}),
    (fld["b"] == NAN, {"b": {"$eq": NAN}}),
    (fld["a"] > fld["b"],
     {"$expr": {"$and": [{"$gt": ["$a", "$b"]}, {"$gt": ["$b", None]}, {"$ne": ["$b", NAN]}]}}),
    ((fld["a"] + 1) == 3, {"$expr": {"$eq": [{"$add": ["$a", 1]}, 3]}}),
    ((fld["a"] * 2) < 3, {"$expr": {"$and": [{"$lt": [{"$multiply": ["$a", 2]}, 3]},
                                              {"$gt": [{"$multiply": ["$a", 2]}, None]},
                                              {"$ne": [{"$multiply": ["$a", 2]}, NAN]}]}}),
    (fld["ts"].dt.year() == 2024, {"$expr": {"$eq": [{"$year": "$ts"}, 2024]}}),
    ((fld["a"] + 1).is_null(), {"$expr": {"$lte": [{"$add": ["$a", 1]}, None]}}),
    ((fld["a"] + 1).is_in([2]), {"$expr": {"$in": [{"$add": ["$a", 1]}, {"$literal": [2]}]}}),
]


@pytest.mark.parametrize(("expr", "expected"), QUERIES, ids=[repr(e) for e, _ in QUERIES])
def test_query_document(expr: Expr, expected: dict[str, Any]) -> None:
    assert repr(expr.to_mongo()) == repr(expected)  # repr: NaN and key order count


BOUND_QUERIES: list[tuple[Expr, dict[str, Any]]] = [
    (fld["id"] == str(OID), {"_id": {"$eq": OID}}),
    (fld["_id"].is_in([str(OID)]), {"_id": {"$in": [OID]}}),
    (fld["a"] > fld["b"],
     {"$expr": {"$and": [{"$gt": ["$a", "$b"]}, {"$gt": ["$b", None]}, {"$ne": ["$b", NAN]}]}}),
    (fld["b"] > fld["a"], {"$expr": {"$and": [{"$gt": ["$b", "$a"]}, {"$gt": ["$a", None]}]}}),
    (fld["a"] == fld["b"], {"$expr": {"$and": [{"$eq": ["$a", "$b"]}, {"$gt": ["$a", None]}]}}),
    (fld["b"] >= fld["b"],
     {"$expr": {"$and": [{"$gte": ["$b", "$b"]}, {"$gt": ["$b", None]},
                         {"$or": [{"$ne": ["$b", NAN]}, {"$eq": ["$b", NAN]}]}]}}),
    (fld["tags"] == "x", {"tags": {"$eq": "x"}}),
    (fld["tags"] == ["x", "y"], {"tags": {"$eq": ["x", "y"]}}),
    (fld["tags"].is_null(), {"tags": {"$eq": None, "$not": {"$type": "array"}}}),
    (fld["tags"].is_not_null(), {"$nor": [{"tags": {"$eq": None, "$not": {"$type": "array"}}}]}),
    (fld["nums"].between(1, 3), {"nums": {"$elemMatch": {"$gte": 1, "$lte": 3}}}),
    (fld["t"] == dt.date(2024, 1, 1), {"t": {"$eq": dt.datetime(2024, 1, 1, tzinfo=UTC)}}),
]


@pytest.mark.parametrize(("expr", "expected"), BOUND_QUERIES,
                         ids=[repr(e) for e, _ in BOUND_QUERIES])
def test_bound_query_document(expr: Expr, expected: dict[str, Any]) -> None:
    assert repr(expr.to_mongo(RESOLVER)) == repr(expected)
    assert repr(expr.bind(RESOLVER).to_mongo()) == repr(expected)


# ---------------------------------------------------------- aggregation expressions
AGGREGATION: list[tuple[Expr, Any]] = [
    (fld["a"], "$a"),
    (fld["a"] + fld["b"], {"$add": ["$a", "$b"]}),
    (fld["a"] - 1, {"$subtract": ["$a", 1]}),
    (2 - fld["a"], {"$subtract": [2, "$a"]}),
    (fld["a"] * 3, {"$multiply": ["$a", 3]}),
    (fld["a"] / 2, {"$divide": ["$a", 2]}),
    (fld["a"] / 0, {"$literal": None}),
    (fld["a"] / fld["b"], {"$cond": [{"$eq": ["$b", 0]}, None, {"$divide": ["$a", "$b"]}]}),
    # an unbound field may hold a double: fmod(+-inf, 3) is NaN, never $mod of infinity
    (fld["a"] % 3, {"$cond": [{"$in": ["$a", [INF, -INF]]}, {"$mod": [NAN, 3]},
                              {"$mod": [{"$cond": [{"$in": ["$a", [INF, -INF]]}, 0.0, "$a"]},
                                        3]}]}),
    (-fld["a"], {"$multiply": [-1, "$a"]}),
    (fld["a"].abs(), {"$abs": "$a"}),
    (abs(fld["a"]), {"$abs": "$a"}),
    (fld["a"].round(2), {"$round": ["$a", 2]}),
    (round(fld["a"]), {"$round": ["$a", 0]}),
    (fld["t"].dt.year(), {"$year": "$t"}),
    (fld["t"].dt.month(), {"$month": "$t"}),
    (fld["t"].dt.day(), {"$dayOfMonth": "$t"}),
    (fld["t"].dt.hour(), {"$hour": "$t"}),
    (fld["t"].dt.weekday(), {"$isoDayOfWeek": "$t"}),
    (fld["t"].dt.truncate("1h"), {"$dateTrunc": {"date": "$t", "unit": "hour"}}),
    (fld["t"].dt.truncate("1w"),
     {"$dateTrunc": {"date": "$t", "unit": "week", "startOfWeek": "monday"}}),
    (fld["t"].dt.truncate("1mo"), {"$dateTrunc": {"date": "$t", "unit": "month"}}),
    (fld["t"].dt.truncate("1q"), {"$dateTrunc": {"date": "$t", "unit": "quarter"}}),
    (fld["t"].dt.truncate("1y"), {"$dateTrunc": {"date": "$t", "unit": "year"}}),
    (fld["t"].dt.truncate("15m"),
     {"$subtract": ["$t", {"$min": [
         {"$mod": [{"$add": [{"$mod": [{"$subtract": ["$t", EPOCH]}, 900000]}, 900000]},
                   900000]},
         {"$subtract": [{"$subtract": ["$t", EPOCH]}, -62135596800000]}]}]}),
    (fld["s"].str.to_lower(), {"$cond": [{"$lte": ["$s", None]}, None, {"$toLower": "$s"}]}),
    (fld["s"].str.to_upper(), {"$cond": [{"$lte": ["$s", None]}, None, {"$toUpper": "$s"}]}),
    (fld["tags"].list.len(), {"$cond": [{"$isArray": "$tags"}, {"$size": "$tags"}, None]}),
    (fld["a"] > 1, {"$gt": ["$a", 1]}),
    (fld["a"] < 1, {"$and": [{"$lt": ["$a", 1]}, {"$gt": ["$a", None]}, {"$ne": ["$a", NAN]}]}),
    (fld["a"] == 1, {"$eq": ["$a", 1]}),
    (fld["a"] != 1, {"$not": [{"$eq": ["$a", 1]}]}),
    (fld["b"] >= NAN, {"$eq": ["$b", NAN]}),
    (fld["b"] > NAN, {"$literal": False}),
    (fld["s"] == "$x", {"$eq": ["$s", {"$literal": "$x"}]}),
    (fld["doc"] == {"$ne": 1}, {"$eq": ["$doc", {"$literal": {"$ne": 1}}]}),
    (fld["a"].is_null(), {"$lte": ["$a", None]}),
    (fld["a"].is_not_null(), {"$gt": ["$a", None]}),
    (fld["a"].exists(), {"$ne": [{"$type": "$a"}, "missing"]}),
    (fld["a"].is_in([1, None]), {"$or": [{"$in": ["$a", {"$literal": [1]}]},
                                          {"$lte": ["$a", None]}]}),
    (fld["s"].starts_with("a"), {"$regexMatch": {"input": "$s", "regex": "^a"}}),
    (fld["s"].regex("a", "i"), {"$regexMatch": {"input": "$s", "regex": "a", "options": "i"}}),
    (fld["tags"].list.contains("x"),
     {"$in": ["x", {"$cond": [{"$isArray": "$tags"}, "$tags", []]}]}),
    ((fld["a"] > 1) & fld["flag"], {"$and": [{"$gt": ["$a", 1]}, {"$eq": ["$flag", True]}]}),
    (~fld["flag"], {"$not": [{"$eq": ["$flag", True]}]}),
    (fld["a"].alias("x"), "$a"),
    (fld["age"].mean(), {"$avg": "$age"}),
    (fld["age"].sum(), {"$sum": "$age"}),
    (fld["age"].min(), {"$min": "$age"}),
    (fld["age"].max(), {"$max": "$age"}),
    (fld["age"].first(), {"$first": "$age"}),
    (fld["age"].last(), {"$last": "$age"}),
    (fld["age"].std(), {"$stdDevSamp": "$age"}),
    (fld["age"].median(), {"$median": {"input": "$age", "method": "approximate"}}),
    (fld["age"].count(), {"$sum": {"$cond": [{"$gt": ["$age", None]}, 1, 0]}}),
    ((fld["a"] > 1).sum(), {"$sum": {"$toInt": {"$gt": ["$a", 1]}}}),
]


@pytest.mark.parametrize(("expr", "expected"), AGGREGATION, ids=[repr(e) for e, _ in AGGREGATION])
def test_aggregation_expression(expr: Expr, expected: Any) -> None:
    assert repr(expr.to_mongo_expr()) == repr(expected)


def test_list_comparison_in_aggregation_matches_any_element() -> None:
    expr = (fld["tags"] == "x").to_mongo_expr(RESOLVER)
    assert expr == {"$anyElementTrue": [{"$map": {
        "input": {"$cond": [{"$isArray": "$tags"}, "$tags", []]}, "as": "el",
        "in": {"$eq": ["$$el", "x"]}}}]}


ACCUMULATORS: list[tuple[Expr, str, dict[str, Any], Any]] = [
    (fld["age"].mean(), "age", {"$avg": "$age"}, None),
    (fld["age"].var(), "age", {"$stdDevSamp": "$age"}, {"$pow": ["$$acc", 2]}),
    (fld["age"].quantile(0.9).alias("p90"), "p90",
     {"$percentile": {"input": "$age", "p": [0.9], "method": "approximate"}},
     {"$arrayElemAt": ["$$acc", 0]}),
    (fld["city"].n_unique(), "city", {"$addToSet": "$city"},
     {"$size": {"$setDifference": ["$$acc", [None]]}}),
    (fld["address.city"].count(), "city",
     {"$sum": {"$cond": [{"$gt": ["$address.city", None]}, 1, 0]}}, None),
]


@pytest.mark.parametrize(("expr", "name", "group", "post"), ACCUMULATORS,
                         ids=[repr(a[0]) for a in ACCUMULATORS])
def test_accumulator(expr: Expr, name: str, group: dict[str, Any], post: Any) -> None:
    acc = expr.to_mongo_accumulator()
    assert (acc.name, acc.group, acc.post) == (name, group, post)
    assert acc.finalize() == (f"${name}" if post is None
                              else {"$let": {"vars": {"acc": f"${name}"}, "in": post}})


def test_aggregation_needing_a_post_step_is_not_a_plain_expression() -> None:
    with pytest.raises(InvalidExpressionError, match="to_mongo_accumulator"):
        fld["city"].n_unique().to_mongo_expr()


def test_aggregation_cannot_filter() -> None:
    with pytest.raises(InvalidExpressionError, match="aggregation"):
        fld["age"].mean().to_mongo()
    with pytest.raises(InvalidExpressionError, match="aggregation"):
        fld["age"].mean() > 3  # noqa: B015


def test_value_is_not_a_condition() -> None:
    with pytest.raises(InvalidExpressionError, match="not a condition"):
        (fld["a"] + 1).to_mongo()
    with pytest.raises(InvalidExpressionError, match="not an aggregation"):
        fld["a"].to_mongo_accumulator()


# -------------------------------------------------------------------------- polars
FRAME = pl.DataFrame(
    {
        "id": ["a", "b", "c", "d", "e"],
        "a": [1, 2, None, -7, 0],
        "b": [1.5, NAN, None, -0.0, float("inf")],
        "s": ["Bob", "ALICE", None, "bob\n", "Émile"],
        "flag": [True, False, None, True, False],
        "tags": [["x", "y"], [], None, ["y", None], ["z"]],
        "t": [dt.datetime(2024, 3, 14, 15, 9, 26, 535000, tzinfo=UTC), None,
              dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(2000, 1, 2, tzinfo=UTC),
              dt.datetime(1969, 12, 31, 23, 59, tzinfo=UTC)],
        "address": [{"city": "Oslo"}, {"city": None}, None, {"city": "Paris"}, {"city": "Oslo"}],
    },
    schema_overrides={"t": pl.Datetime("ms", "UTC")},
)

POLARS_FILTERS: list[tuple[Expr, list[str]]] = [
    (fld["a"] > 0, ["a", "b"]),
    (fld["a"] != 1, ["b", "c", "d", "e"]),
    (~(fld["a"] > 0), ["c", "d", "e"]),
    (fld["a"].not_in([1, 2]), ["c", "d", "e"]),
    (fld["a"].is_in([1, None]), ["a", "c"]),
    (fld["b"] > 0, ["a", "e"]),
    (fld["b"] == NAN, ["b"]),
    (fld["b"] >= NAN, ["b"]),
    (fld["b"] < NAN, []),
    (fld["b"] == 0, ["d"]),
    (fld["b"].is_in([NAN, 0.0]), ["b", "d"]),
    (fld["a"] < fld["b"], ["a", "d", "e"]),
    (fld["b"] > fld["a"], ["a", "d", "e"]),
    (fld["s"].str.to_lower() == "bob", ["a"]),
    (fld["s"].str.to_lower() == "émile", []),  # ASCII only: 'É' stays upper case
    (fld["s"].ends_with("bob"), []),
    (fld["s"].ends_with("b\n"), ["d"]),
    (fld["s"].starts_with("b"), ["d"]),
    (fld["s"].contains("."), []),
    (fld["s"].regex("^b", "i"), ["a", "d"]),
    (fld["s"] != "Bob", ["b", "c", "d", "e"]),
    (fld["flag"], ["a", "d"]),
    (~fld["flag"], ["b", "c", "e"]),
    (fld["tags"].list.contains("y"), ["a", "d"]),
    (fld["tags"].list.len() == 0, ["b"]),
    (fld["tags"].list.len() != 2, ["b", "c", "e"]),
    ((fld["a"] % 3) == -1, ["d"]),
    ((fld["a"] / 0).is_null(), ["a", "b", "c", "d", "e"]),
    ((fld["a"] / fld["b"]) > 0, ["a"]),
    (fld["t"].dt.weekday() == 4, ["a"]),
    (fld["t"].dt.truncate("1d") == dt.datetime(2024, 3, 14, tzinfo=UTC), ["a"]),
    (fld["t"].dt.truncate("2w") == dt.datetime(1969, 12, 22, tzinfo=UTC), ["e"]),
    (fld["t"].dt.truncate("3y") == dt.datetime(1, 1, 1, tzinfo=UTC), ["c"]),
    (fld["t"] < dt.date(1970, 1, 1), ["c", "e"]),
    (fld["address.city"] == "Oslo", ["a", "e"]),
    (fld["address.city"].is_null(), ["b", "c"]),
    (fld["id"].is_in(["a", "e"]), ["a", "e"]),
]


@pytest.mark.parametrize(("expr", "expected"), POLARS_FILTERS,
                         ids=[repr(e) for e, _ in POLARS_FILTERS])
def test_polars_filter(expr: Expr, expected: list[str]) -> None:
    assert FRAME.filter(expr.to_polars())["id"].to_list() == expected


def test_polars_expressions_are_structurally_as_expected() -> None:
    assert (fld["a"] == 1).to_polars().meta.eq((pl.col("a") == 1).fill_null(False))
    assert fld["a"].is_null().to_polars().meta.eq(pl.col("a").is_null())
    assert fld["address.city"].to_polars().meta.eq(
        pl.col("address").struct.field("city").alias("city"))
    assert fld["age"].mean().alias("m").to_polars().meta.eq(pl.col("age").mean().alias("m"))


POLARS_VALUES: list[tuple[Expr, list[Any]]] = [
    (fld["a"] + 1, [2, 3, None, -6, 1]),
    (fld["a"] % 3, [1, 2, None, -1, 0]),
    (fld["a"] % -3, [1, 2, None, -1, 0]),
    (fld["a"] / 2, [0.5, 1.0, None, -3.5, 0.0]),
    (-fld["a"], [-1, -2, None, 7, 0]),
    (fld["s"].str.to_lower(), ["bob", "alice", None, "bob\n", "Émile"]),
    (fld["s"].str.to_upper(), ["BOB", "ALICE", None, "BOB\n", "ÉMILE"]),
    (fld["tags"].list.len(), [2, 0, None, 2, 1]),
    (fld["t"].dt.year(), [2024, None, 1, 2000, 1969]),
    (fld["t"].dt.weekday(), [4, None, 1, 7, 3]),
    (fld["a"] > 0, [True, True, False, False, False]),
]


@pytest.mark.parametrize(("expr", "expected"), POLARS_VALUES,
                         ids=[repr(e) for e, _ in POLARS_VALUES])
def test_polars_values(expr: Expr, expected: list[Any]) -> None:
    assert FRAME.select(expr.to_polars())[expr.output_name].to_list() == expected


POLARS_AGGREGATIONS: list[tuple[Expr, Any]] = [
    (fld["a"].count(), 4),
    (fld["a"].sum(), -4),
    (fld["a"].mean(), -1.0),
    (fld["a"].min(), -7),
    (fld["a"].max(), 2),
    (fld["a"].first(), 1),
    (fld["a"].last(), 0),
    (fld["a"].median(), 0),
    (fld["a"].quantile(0.75), 1),
    (fld["a"].n_unique(), 4),
    (fld["s"].n_unique(), 4),
    (fld["flag"].sum(), 2),
]


@pytest.mark.parametrize(("expr", "expected"), POLARS_AGGREGATIONS,
                         ids=[repr(e) for e, _ in POLARS_AGGREGATIONS])
def test_polars_aggregation(expr: Expr, expected: Any) -> None:
    assert FRAME.select(expr.to_polars()).item() == expected


def test_polars_std_and_var_are_sample_statistics() -> None:
    frame = pl.DataFrame({"x": [1.0, 2.0, 4.0]})
    std, var = frame.select(fld["x"].std().alias("s").to_polars(),
                            fld["x"].var().alias("v").to_polars()).row(0)
    assert std == pytest.approx(1.5275252316519468)
    assert var == pytest.approx(std**2)


def test_polars_exists_is_refused() -> None:
    with pytest.raises(UnsupportedExpressionError, match="missing fields and nulls"):
        fld["a"].exists().to_polars()


def test_polars_bound_object_id_compares_hex_strings() -> None:
    frame = pl.DataFrame({"id": [str(OID), "0" * 24]})
    resolver = SimpleResolver("M", {"id": FieldRef("_id", ("id",), Kind.OBJECTID)})
    assert frame.filter((fld["_id"] == OID).to_polars(resolver))["id"].to_list() == [str(OID)]
    assert frame.filter((fld["id"] == str(OID)).to_polars(resolver))["id"].to_list() == \
        [str(OID)]


def test_col_is_fld() -> None:
    assert col is fld
    assert col("a").equals(fld["a"])
