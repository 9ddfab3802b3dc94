"""repr reads like the code that built it, evaluates back to an equal tree; trees hash."""

from __future__ import annotations

import datetime
import decimal

import pytest
from bson import ObjectId

from loom_frames.expr import Expr, Kind, SimpleResolver, fld

OID = ObjectId("65a1b2c3d4e5f60718293a4b")
NAMESPACE = {"fld": fld, "datetime": datetime, "ObjectId": ObjectId,
             "Decimal": decimal.Decimal}

CASES: list[tuple[Expr, str]] = [
    ((fld["age"] > 25) & (fld["is_active"] == True),
     "(fld['age'] > 25) & (fld['is_active'] == True)"),
    (fld("age") >= 25, "fld['age'] >= 25"),
    (5 < fld["a"], "fld['a'] > 5"),
    (fld["a"] > -5, "fld['a'] > -5"),
    (fld["address.city"] == "Oslo", "fld['address.city'] == 'Oslo'"),
    ((fld["a"] == 1) | (fld["b"] == 2) | (fld["c"] == 3),
     "(fld['a'] == 1) | (fld['b'] == 2) | (fld['c'] == 3)"),
    (~(fld["a"] > 1), "~(fld['a'] > 1)"),
    (~fld["flag"], "~fld['flag']"),
    (fld["a"].is_in([1, 2]), "fld['a'].is_in([1, 2])"),
    (fld["a"].not_in((1, None)), "fld['a'].not_in([1, None])"),
    (fld["a"].is_null(), "fld['a'].is_null()"),
    (fld["a"].is_not_null(), "fld['a'].is_not_null()"),
    (fld["a"].exists(), "fld['a'].exists()"),
    (fld["a"].exists(False), "fld['a'].exists(False)"),
    (fld["a"].between(1, 5), "fld['a'].between(1, 5)"),
    (fld["a"].between(1, 5, closed="left"), "fld['a'].between(1, 5, closed='left')"),
    (fld["s"].starts_with("x"), "fld['s'].starts_with('x')"),
    (fld["s"].ends_with("x"), "fld['s'].ends_with('x')"),
    (fld["s"].contains("x"), "fld['s'].contains('x')"),
    (fld["s"].regex("^a", "i"), "fld['s'].regex('^a', 'i')"),
    (fld["s"].str.to_lower() == "bob", "fld['s'].str.to_lower() == 'bob'"),
    (fld["s"].str.to_upper(), "fld['s'].str.to_upper()"),
    (fld["tags"].list.contains("x"), "fld['tags'].list.contains('x')"),
    (fld["tags"].list.len() > 2, "fld['tags'].list.len() > 2"),
    ((fld["a"] + 1) * fld["b"], "(fld['a'] + 1) * fld['b']"),
    (1 - fld["a"], "1 - fld['a']"),
    ((fld["a"] % 3) / 2, "(fld['a'] % 3) / 2"),
    (-fld["a"], "-fld['a']"),
    ((-fld["a"]).abs(), "(-fld['a']).abs()"),
    (fld["a"].round(2), "fld['a'].round(2)"),
    ((fld["a"] + 1).abs() > 3, "(fld['a'] + 1).abs() > 3"),
    (fld["t"].dt.year() == 2024, "fld['t'].dt.year() == 2024"),
    (fld["t"].dt.truncate("15m"), "fld['t'].dt.truncate('15m')"),
    (fld["t"].dt.weekday(), "fld['t'].dt.weekday()"),
    (fld["b"] == float("nan"), "fld['b'] == float('nan')"),  # noqa: PLW0177
    (fld["b"] < float("inf"), "fld['b'] < float('inf')"),
    (fld["b"] > -float("inf"), "fld['b'] > -float('inf')"),
    (fld["t"] > datetime.datetime(2024, 1, 1),
     "fld['t'] > datetime.datetime(2024, 1, 1, 0, 0, tzinfo=datetime.timezone.utc)"),
    (fld["d"] == datetime.date(2024, 1, 1), "fld['d'] == datetime.date(2024, 1, 1)"),
    (fld["_id"] == OID, "fld['_id'] == ObjectId('65a1b2c3d4e5f60718293a4b')"),
    (fld["p"] > decimal.Decimal("1.5"), "fld['p'] > Decimal('1.5')"),
    (fld["n"] == {"$ne": None}, "fld['n'] == {'$ne': None}"),
    (fld["tags"] == ["a", "b"], "fld['tags'] == ['a', 'b']"),
    (fld["age"].mean(), "fld['age'].mean()"),
    (fld["age"].quantile(0.9).alias("p90"), "fld['age'].quantile(0.9).alias('p90')"),
    (fld["x"].n_unique(), "fld['x'].n_unique()"),
]


@pytest.mark.parametrize(("expr", "source"), CASES, ids=[s for _, s in CASES])
def test_repr_reads_like_code(expr: Expr, source: str) -> None:
    assert repr(expr) == source


@pytest.mark.parametrize(("expr", "source"), CASES, ids=[s for _, s in CASES])
def test_repr_round_trips(expr: Expr, source: str) -> None:
    rebuilt = eval(source, NAMESPACE)
    assert rebuilt.equals(expr)
    assert hash(rebuilt) == hash(expr)


def test_equal_trees_are_equal_and_hash_alike() -> None:
    first = (fld["a"] > 1) & fld["b"].is_in([1, 2])
    second = (fld["a"] > 1) & fld["b"].is_in([1, 2])
    assert first.equals(second) and first.node == second.node
    assert hash(first) == hash(second)
    assert len({first.node, second.node}) == 1  # nodes are the structural keys
    with pytest.raises(TypeError, match="ambiguous"):  # == on Expr builds a comparison
        {first, second}  # noqa: B018


def test_and_is_flattened_so_grouping_does_not_matter() -> None:
    a, b, c = fld["a"] > 1, fld["b"] > 2, fld["c"] > 3
    assert ((a & b) & c).equals(a & (b & c))


@pytest.mark.parametrize(("left", "right"), [
    (fld["a"] == 1, fld["a"] == True),
    (fld["a"] == 1, fld["a"] == 1.0),
    (fld["b"] == 0.0, fld["b"] == -0.0),
    (fld["a"] > 1, fld["a"] >= 1),
    (fld["a"] > 1, fld["b"] > 1),
    (fld["a"].is_in([1, 2]), fld["a"].is_in([2, 1])),
])
def test_different_trees_are_not_equal(left: Expr, right: Expr) -> None:
    assert not left.equals(right)
    assert left.node != right.node


def test_nan_literals_are_equal() -> None:
    nan = float("nan")
    assert (fld["b"] == nan).equals(fld["b"] == float("nan"))  # noqa: PLW0177
    assert hash(fld["b"] == nan) == hash(fld["b"] == float("nan"))  # noqa: PLW0177


def test_bound_and_unbound_trees_differ_but_print_the_same() -> None:
    resolver = SimpleResolver("M", {"a": Kind.INT})
    unbound = fld["a"] > 1
    bound = unbound.bind(resolver)
    assert repr(bound) == repr(unbound)
    assert not bound.equals(unbound)
    assert bound.equals(unbound.bind(resolver))


def test_output_names() -> None:
    assert fld["age"].output_name == "age"
    assert fld["address.city"].output_name == "city"
    assert (1 + fld["a"]).output_name == "a"
    assert fld["a"].mean().alias("m").output_name == "m"
