"""Bad input fails early and clearly; user values can never become operators."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from bson import ObjectId

from loom_frames.errors import FieldNotFoundError, InvalidExpressionError, LoomError
from loom_frames.expr import FieldRef, Kind, SimpleResolver, fld

USERS = SimpleResolver("User", {
    "id": FieldRef("_id", ("id",), Kind.OBJECTID),
    "age": Kind.INT,
    "name": Kind.STR,
    "email": FieldRef("email", ("email",), Kind.STR, normalize=str.lower),
    "ts": Kind.DATETIME,
    "day": Kind.DATE,
    "flag": Kind.BOOL,
    "tags": FieldRef("tags", ("tags",), Kind.LIST, item=FieldRef("tags", ("tags",), Kind.STR)),
    "score": Kind.FLOAT,
})


# ---------------------------------------------------------------------------- injection
@pytest.mark.parametrize(("value", "query"), [
    ({"$ne": None}, {"name": {"$eq": {"$ne": None}}}),
    ({"$gt": ""}, {"name": {"$eq": {"$gt": ""}}}),
    ("$where", {"name": {"$eq": "$where"}}),
    ([{"$ne": 1}], {"name": {"$eq": [{"$ne": 1}]}}),
])
def test_injection_value_compiles_to_a_literal(value: Any, query: dict[str, Any]) -> None:
    assert (fld["name"] == value).to_mongo() == query


def test_injection_value_is_a_literal_in_aggregation() -> None:
    assert (fld["name"] == "$other").to_mongo_expr() == {"$eq": ["$name", {"$literal": "$other"}]}
    assert (fld["name"] == {"$ne": None}).to_mongo_expr() == \
        {"$eq": ["$name", {"$literal": {"$ne": None}}]}
    assert (fld["a"] + 1).is_in(["$x"]).to_mongo_expr() == \
        {"$in": [{"$add": ["$a", 1]}, {"$literal": ["$x"]}]}


def test_text_matches_escape_regex_metacharacters() -> None:
    assert fld["s"].contains(".*").to_mongo() == {"s": {"$regex": "\\.\\*"}}
    assert fld["s"].starts_with("^(").to_mongo() == {"s": {"$regex": "^\\^\\("}}


# ------------------------------------------------------------------------- field names
@pytest.mark.parametrize("name", ["$where", "a.$b", "$", "a\x00b", "", "a..b", ".a", "a."])
def test_invalid_field_names_are_rejected_at_build_time(name: str) -> None:
    with pytest.raises(InvalidExpressionError, match="invalid field name"):
        fld[name]
    with pytest.raises(InvalidExpressionError):
        fld(name)


def test_field_name_must_be_a_string() -> None:
    with pytest.raises(InvalidExpressionError, match="must be a str"):
        fld[3]  # type: ignore[index]


def test_unknown_field_names_the_model_and_suggests() -> None:
    with pytest.raises(FieldNotFoundError) as err:
        (fld["agee"] > 3).bind(USERS)
    message = str(err.value)
    assert "User" in message and "'agee'" in message and "did you mean 'age'" in message
    assert isinstance(err.value, KeyError) and isinstance(err.value, LoomError)


def test_unknown_field_in_compile_with_resolver() -> None:
    with pytest.raises(FieldNotFoundError, match="did you mean 'name'"):
        (fld["nmae"] == "x").to_polars(USERS)


# ------------------------------------------------------------------------- type errors
@pytest.mark.parametrize(("build", "match"), [
    (lambda: fld["age"] > "x", r"cannot compare fld\['age'\] \(int\) with 'x' \(str\)"),
    (lambda: fld["age"] == True, "cannot compare"),
    (lambda: fld["name"] > 3, "cannot compare"),
    (lambda: fld["name"].dt.year(), r"\.dt operation needs date or datetime"),
    (lambda: fld["age"].str.to_lower(), "string operation"),
    (lambda: fld["age"].starts_with("a"), "string operation"),
    (lambda: fld["name"] + 1, "arithmetic needs"),
    (lambda: fld["name"] % 2, "arithmetic needs"),
    (lambda: fld["age"] ** -1, "non-negative literal exponent"),
    (lambda: fld["name"].cast("Int64").cast("Date"), r"cast\(Date\) converts"),
    (lambda: fld["score"].cast("String"), "Hint: round"),
    (lambda: fld["name"].list.len(), "list"),
    (lambda: fld["age"].list.contains(3), "list"),
    (lambda: fld["tags"].list.contains(3), "holds str elements"),
    (lambda: fld["tags"] > ["a"], "lists and documents can only be compared with =="),
    (lambda: fld["tags"] > fld["name"], "list field"),
    (lambda: fld["ts"] > 5, "cannot compare"),
    (lambda: fld["day"].dt.hour(), "no time of day"),
    (lambda: fld["day"].dt.truncate("1h"), "no time of day"),
    (lambda: fld["age"].is_in(["x"]), "cannot compare"),
    (lambda: fld["name"].mean(), r"\.mean\(\) needs"),
    (lambda: fld["age"] & fld["flag"], "not a condition"),
    (lambda: fld["id"] == "not-hex", "not a valid value for field '_id'"),
])
def test_type_errors_at_bind_time(build: Any, match: str) -> None:
    with pytest.raises(InvalidExpressionError, match=match):
        build().bind(USERS)


def test_binding_normalises_literals() -> None:
    oid = ObjectId()
    bound = (fld["email"] == "Bob@Example.COM").bind(USERS)
    assert bound.to_mongo() == {"email": {"$eq": "bob@example.com"}}
    assert (fld["id"] == str(oid)).bind(USERS).to_mongo() == {"_id": {"$eq": oid}}
    assert (fld["ts"] == dt.date(2024, 1, 2)).bind(USERS).to_mongo() == \
        {"ts": {"$eq": dt.datetime(2024, 1, 2, tzinfo=dt.UTC)}}


@pytest.mark.parametrize(("build", "match"), [
    (lambda: fld["t"].dt.year() > "2024", "cannot compare"),
    (lambda: fld["s"].str.to_lower() == "Bob", "can never equal"),
    (lambda: fld["s"].str.to_upper() != "bob", "can never equal"),
    (lambda: fld["a"] + "x", "arithmetic needs"),
    (lambda: fld["a"] % "x", "arithmetic needs"),
    (lambda: fld["a"].dt.strftime("%Y %b"), "no one meaning"),
    (lambda: fld["a"].str.replace("a.", "b"), "literal=True"),
    (lambda: fld["a"].cum_sum() + 1, "is a window"),
    (lambda: (fld["a"] + 1).over("b"), "over\\(\\) takes a window function"),
    (lambda: fld["a"].list.len() > "x", "cannot compare"),
    (lambda: fld["a"] > [1, 2], "can only be compared with =="),
    (lambda: fld["a"].mean() + 1, "outermost"),
    (lambda: fld["a"].mean().sum(), "cannot be nested"),
    (lambda: fld["a"] == 2**64, "64-bit"),
    (lambda: fld["a"] == re.compile("x"), "use .regex()"),
    (lambda: fld["a"] == object(), "unsupported literal"),
    (lambda: fld["a"] == {1: 2}, "document keys must be str"),
    (lambda: fld["a"] == fld["b"].mean(), "aggregation"),
])
def test_type_errors_at_build_time(build: Any, match: str) -> None:
    with pytest.raises(InvalidExpressionError, match=match):
        build()


# ------------------------------------------------------------------------- None, is_in
def test_comparing_to_none_points_to_is_null() -> None:
    with pytest.raises(InvalidExpressionError, match=r"use \.is_null\(\)"):
        fld["a"] == None  # noqa: B015
    with pytest.raises(InvalidExpressionError, match=r"use \.is_not_null\(\)"):
        fld["a"] != None  # noqa: B015
    with pytest.raises(InvalidExpressionError, match="never match"):
        fld["a"] > None  # noqa: B015


@pytest.mark.parametrize("values", [5, "abc", b"ab", {"a": 1}, None, fld["a"]])
def test_is_in_needs_a_collection(values: Any) -> None:
    with pytest.raises(InvalidExpressionError, match="takes a collection"):
        fld["a"].is_in(values)
    with pytest.raises(InvalidExpressionError, match="takes a collection"):
        fld["a"].not_in(values)


def test_is_in_values_are_literals_and_scalars() -> None:
    with pytest.raises(InvalidExpressionError, match="literal values"):
        fld["a"].is_in([fld["b"]])
    with pytest.raises(InvalidExpressionError, match="scalars"):
        fld["a"].is_in([[1, 2]])


@pytest.mark.parametrize(("build", "match"), [
    (lambda: fld["a"].between(1, 2, closed="open"), "closed"),
    (lambda: fld["a"].between(None, 2), "cannot be None"),
    (lambda: fld["a"].round(-1), "0 to 15"),
    (lambda: fld["a"].quantile(1.5), "0 <= q <= 1"),
    (lambda: fld["a"].regex("x", "g"), "imsx"),
    (lambda: fld["a"].starts_with(3), "takes a str"),
    (lambda: fld["t"].dt.truncate("1h30m"), "interval like"),
    (lambda: fld["t"].dt.truncate("0d"), "interval like"),
    (lambda: (fld["a"] + 1).exists(), "applies to a field"),
    (lambda: fld["a"].alias("a.b"), "cannot name a column"),
    (lambda: fld["a"].alias("$x"), "cannot name a column"),
    (lambda: (fld["a"] > 1) & True, "combines two expressions"),
    (lambda: fld["tags"].list.contains(None), "is_in"),
])
def test_bad_arguments(build: Any, match: str) -> None:
    with pytest.raises(InvalidExpressionError, match=match):
        build()


# ---------------------------------------------------------------------------- __bool__
def test_and_keyword_raises_with_hint() -> None:
    with pytest.raises(TypeError, match="use & not and"):
        (fld["a"] > 1) and (fld["b"] > 2)


def test_chained_comparison_raises_with_hint() -> None:
    with pytest.raises(TypeError, match="chained comparisons"):
        1 < fld["a"] < 5  # noqa: B015


def test_in_operator_raises_with_hint() -> None:
    with pytest.raises(TypeError, match=r"is_in"):
        fld["a"] in [1, 2]  # noqa: B015
    with pytest.raises(TypeError, match=r"is_in"):
        1 in fld["a"]  # noqa: B015


def test_if_expression_raises() -> None:
    with pytest.raises(TypeError, match="ambiguous"):
        if fld["a"] > 1:
            pass


def test_expressions_are_immutable() -> None:
    expr = fld["a"] > 1
    with pytest.raises(AttributeError, match="immutable"):
        expr._node = fld["b"].node  # type: ignore[misc]
    with pytest.raises(AttributeError):
        expr.node.left = fld["b"].node  # type: ignore[attr-defined, misc]
    values = [1, 2]
    member = fld["a"].is_in(values)
    values.append(3)
    assert member.to_mongo() == {"a": {"$in": [1, 2]}}
