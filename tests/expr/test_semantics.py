"""Named regression tests: each pins one rule of the shared semantics on both engines.

Every test loads the same documents into MongoDB and into a frame, runs the expression
on both (``Differential.check`` asserts the ``_id`` sets are equal) and asserts the
expected selection. Many were first found by the property tests in test_differential.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest
from expr_harness import RESOLVER, Differential, oid, same_value

from loom_frames.expr import Expr, fld

UTC = dt.UTC
NAN, INF = float("nan"), float("inf")


def docs(*rows: dict[str, Any]) -> list[dict[str, Any]]:
    """Documents with ``_id`` = oid(1), oid(2), ... in order."""
    return [{"_id": oid(i + 1), **row} for i, row in enumerate(rows)]


def ids(*numbers: int) -> set[str]:
    return {str(oid(i)) for i in numbers}


def check(differential: Differential, rows: list[dict[str, Any]], expr: Expr,
          expected: set[str], bound: bool = True) -> None:
    assert differential.check(rows, expr, RESOLVER if bound else None) == expected


A_ROWS = docs({"a": 1}, {"a": 2}, {"a": None}, {})
B_ROWS = docs({"b": NAN}, {"b": 1.0}, {"b": -0.0}, {"b": 0.0}, {"b": None}, {}, {"b": INF},
              {"b": -INF})


# ---------------------------------------------------------------- null and missing
@pytest.mark.parametrize("bound", [True, False])
def test_ne_matches_missing_field_and_null(differential: Differential, bound: bool) -> None:
    check(differential, A_ROWS, fld["a"] != 1, ids(2, 3, 4), bound)


def test_not_in_matches_missing_field_and_null(differential: Differential) -> None:
    check(differential, A_ROWS, fld["a"].not_in([1]), ids(2, 3, 4))


def test_invert_matches_null(differential: Differential) -> None:
    check(differential, A_ROWS, ~(fld["a"] > 1), ids(1, 3, 4))


def test_comparisons_never_match_null(differential: Differential) -> None:
    check(differential, A_ROWS, fld["a"] < 5, ids(1, 2))


def test_is_in_none_matches_null_and_missing(differential: Differential) -> None:
    check(differential, A_ROWS, fld["a"].is_in([None, 2]), ids(2, 3, 4))
    check(differential, A_ROWS, fld["a"].not_in([None, 2]), ids(1))


def test_bool_field_as_condition_is_true_only(differential: Differential) -> None:
    rows = docs({"flag": True}, {"flag": False}, {"flag": None}, {})
    check(differential, rows, fld["flag"], ids(1))
    check(differential, rows, ~fld["flag"], ids(2, 3, 4))


def test_field_vs_field_ignores_null_and_nan(differential: Differential) -> None:
    rows = docs({"a": 1, "b": 0.5}, {"a": 1, "b": NAN}, {"a": 1}, {"b": 0.5}, {"a": 1, "b": None})
    check(differential, rows, fld["a"] > fld["b"], ids(1))
    check(differential, rows, fld["b"] < fld["a"], ids(1))
    check(differential, rows, fld["a"] != fld["b"], ids(1, 2, 3, 4, 5))


# ------------------------------------------------------------------------------ NaN
@pytest.mark.parametrize("bound", [True, False])
def test_nan_equals_nan(differential: Differential, bound: bool) -> None:
    check(differential, B_ROWS, fld["b"] == NAN, ids(1), bound)
    check(differential, B_ROWS, fld["b"].is_in([NAN]), ids(1), bound)


@pytest.mark.parametrize("bound", [True, False])
def test_nan_is_not_greater_or_less_than_numbers(differential: Differential, bound: bool) -> None:
    check(differential, B_ROWS, fld["b"] > 0.5, ids(2, 7), bound)
    check(differential, B_ROWS, fld["b"] < 0.5, ids(3, 4, 8), bound)
    check(differential, B_ROWS, fld["b"] > -INF, ids(2, 3, 4, 7), bound)
    check(differential, B_ROWS, fld["b"] >= -INF, ids(2, 3, 4, 7, 8), bound)


def test_nan_literal_orders_nothing_but_nan_gte_nan(differential: Differential) -> None:
    check(differential, B_ROWS, fld["b"] > NAN, set())
    check(differential, B_ROWS, fld["b"] < NAN, set())
    check(differential, B_ROWS, fld["b"] >= NAN, ids(1))
    check(differential, B_ROWS, fld["b"] <= NAN, ids(1))


def test_nan_gte_nan_between_fields(differential: Differential) -> None:
    rows = docs({"b": NAN, "a": 1}, {"b": 2.0, "a": 1})
    check(differential, rows, fld["b"] >= fld["b"], ids(1, 2))
    check(differential, rows, fld["b"] > fld["a"], ids(2))
    check(differential, rows, fld["a"] < fld["b"], ids(2))


def test_negative_zero_equals_zero(differential: Differential) -> None:
    check(differential, B_ROWS, fld["b"] == 0, ids(3, 4))
    check(differential, B_ROWS, fld["b"] == -0.0, ids(3, 4))
    check(differential, B_ROWS, fld["b"].is_in([-0.0]), ids(3, 4))


def test_ints_and_floats_compare_numerically(differential: Differential) -> None:
    rows = docs({"a": 2}, {"a": 3}, {"b": 2.0}, {"b": 2.5})
    check(differential, rows, fld["a"] == 2.0, ids(1))
    check(differential, rows, fld["a"] < 2.5, ids(1))
    check(differential, rows, fld["b"] == 2, ids(3))
    check(differential, rows, fld["a"].is_in([2.0, 2.5]), ids(1))
    check(differential, rows, fld["a"].is_in([9.3e18]), set())  # beyond int64: no match


# ---------------------------------------------------------------------------- lists
LIST_ROWS = docs({"tags": ["a", "b"], "nums": [1, 5]}, {"tags": ["b", None], "nums": [3]},
                 {"tags": [], "nums": []}, {"tags": None, "nums": None}, {},
                 {"tags": ["x"], "nums": [1, None]})


def test_list_equality_matches_any_element(differential: Differential) -> None:
    check(differential, LIST_ROWS, fld["tags"] == "b", ids(1, 2))
    check(differential, LIST_ROWS, fld["tags"].list.contains("b"), ids(1, 2))


def test_list_equality_with_a_list_literal_is_whole_array(differential: Differential) -> None:
    check(differential, LIST_ROWS, fld["tags"] == ["a", "b"], ids(1))
    check(differential, LIST_ROWS, fld["tags"] == ["b", "a"], set())
    check(differential, LIST_ROWS, fld["tags"] == [], ids(3))
    check(differential, LIST_ROWS, fld["nums"] == [1, None], ids(6))
    check(differential, LIST_ROWS, fld["tags"] != ["a", "b"], ids(2, 3, 4, 5, 6))


def test_list_ordering_matches_any_element(differential: Differential) -> None:
    check(differential, LIST_ROWS, fld["tags"] > "a", ids(1, 2, 6))
    check(differential, LIST_ROWS, fld["nums"] > 2, ids(1, 2))
    check(differential, LIST_ROWS, fld["nums"] < 2, ids(1, 6))


def test_list_ne_matches_when_no_element_equals(differential: Differential) -> None:
    check(differential, LIST_ROWS, fld["tags"] != "b", ids(3, 4, 5, 6))
    check(differential, LIST_ROWS, fld["tags"].not_in(["b"]), ids(3, 4, 5, 6))


def test_list_between_needs_one_element_in_range(differential: Differential) -> None:
    check(differential, LIST_ROWS, fld["nums"].between(2, 4), ids(2))
    check(differential, LIST_ROWS, (fld["nums"] >= 2) & (fld["nums"] <= 4), ids(1, 2))


def test_list_is_null_ignores_null_elements(differential: Differential) -> None:
    check(differential, LIST_ROWS, fld["tags"].is_null(), ids(4, 5))
    check(differential, LIST_ROWS, fld["tags"].is_not_null(), ids(1, 2, 3, 6))


def test_list_is_in_none_matches_null_elements_too(differential: Differential) -> None:
    check(differential, LIST_ROWS, fld["tags"].is_in([None]), ids(2, 4, 5))


def test_list_len(differential: Differential) -> None:
    check(differential, LIST_ROWS, fld["nums"].list.len() == 2, ids(1, 6))
    check(differential, LIST_ROWS, fld["nums"].list.len() != 2, ids(2, 3, 4, 5))
    check(differential, LIST_ROWS, fld["nums"].list.len() < 1, ids(3))


# -------------------------------------------------------------------------- strings
STR_ROWS = docs({"s": "ab"}, {"s": "ab\n"}, {"s": "xab"}, {"s": "AB"}, {"s": "ÀB"}, {"s": None},
                {}, {"s": "a.b"}, {"s": "a\x00b"})


def test_ends_with_does_not_match_before_a_final_newline(differential: Differential) -> None:
    check(differential, STR_ROWS, fld["s"].ends_with("ab"), ids(1, 3))


def test_string_match_text_is_literal(differential: Differential) -> None:
    check(differential, STR_ROWS, fld["s"].contains("."), ids(8))
    check(differential, STR_ROWS, fld["s"].contains("\x00"), ids(9))
    check(differential, STR_ROWS, fld["s"].starts_with("a."), ids(8))


def test_to_lower_is_ascii_only(differential: Differential) -> None:
    check(differential, STR_ROWS, fld["s"].str.to_lower() == "ab", ids(1, 4))
    check(differential, STR_ROWS, fld["s"].str.to_lower() == "Àb", ids(5))
    check(differential, STR_ROWS, fld["s"].str.to_upper().starts_with("À"), ids(5))


def test_to_lower_of_missing_is_null_not_empty_string(differential: Differential) -> None:
    rows = docs({"s": ""}, {"s": None}, {})
    check(differential, rows, fld["s"].str.to_lower() == "", ids(1))
    check(differential, rows, fld["s"].str.to_lower().is_null(), ids(2, 3))


def test_regex_flags(differential: Differential) -> None:
    check(differential, STR_ROWS, fld["s"].regex("^ab", "i"), ids(1, 2, 4))
    check(differential, STR_ROWS, fld["s"].regex("b\\z"), ids(1, 3, 8, 9))


# ----------------------------------------------------------------------- arithmetic
def test_mod_truncates_like_mongodb(differential: Differential) -> None:
    rows = docs({"a": -7}, {"a": 7}, {"a": -6}, {"a": None})
    check(differential, rows, (fld["a"] % 3) == -1, ids(1))
    check(differential, rows, (fld["a"] % -3) == 1, ids(2))
    check(differential, rows, (fld["a"] % 3) == 0, ids(3))


def test_division_by_zero_is_null(differential: Differential) -> None:
    rows = docs({"a": 1, "b": 0.0}, {"a": 1, "b": -0.0}, {"a": 1, "b": 2.0}, {"a": 0, "b": 0.0})
    check(differential, rows, (fld["a"] / fld["b"]).is_null(), ids(1, 2, 4))
    check(differential, rows, (fld["a"] % fld["a"]).is_null(), ids(4))
    check(differential, rows, (fld["a"] / 0).is_null(), ids(1, 2, 3, 4))


def test_division_by_a_literal_is_exact_ieee(differential: Differential) -> None:
    # Polars divides by a scalar through its reciprocal, one ulp off here.
    expr = fld["a"] / 3569381433730173.0
    differential.load(docs({"a": 3}, {"a": 1}, {"a": 2}))
    differential.assert_same_values(expr)
    assert differential.polars_values(expr)[str(oid(1))] == 3 / 3569381433730173.0


def test_round_is_half_to_even(differential: Differential) -> None:
    rows = docs({"b": 0.5}, {"b": 1.5}, {"b": 2.5}, {"b": -0.5})
    check(differential, rows, fld["b"].round(0) == 2, ids(2, 3))
    check(differential, rows, fld["b"].round(0) == 0, ids(1, 4))


def test_int64_overflow_is_a_documented_difference(differential: Differential) -> None:
    # MongoDB turns an overflowing long product into a double; Polars wraps around.
    expr = fld["a"] * 2**62
    differential.load(docs({"a": 4}))
    assert differential.mongo_values(expr) == {str(oid(1)): 2.0**64}
    assert differential.polars_values(expr) == {str(oid(1)): 0}


# ------------------------------------------------------------------------ datetimes
T_ROWS = docs({"t": dt.datetime(2024, 3, 14, 15, 9, 26, 535000, tzinfo=UTC)},
              {"t": dt.datetime(1, 1, 1, tzinfo=UTC)},
              {"t": dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)},
              {"t": dt.datetime(1969, 12, 31, 23, 59, tzinfo=UTC)},
              {"t": dt.datetime(2000, 1, 2, tzinfo=UTC)}, {"t": None}, {})


def test_weekday_is_iso(differential: Differential) -> None:
    check(differential, T_ROWS, fld["t"].dt.weekday() == 7, ids(5))  # a Sunday
    check(differential, T_ROWS, fld["t"].dt.weekday() == 1, ids(2))  # 0001-01-01, a Monday


def test_date_parts_of_extreme_datetimes(differential: Differential) -> None:
    check(differential, T_ROWS, fld["t"].dt.year() == 9999, ids(3))
    check(differential, T_ROWS, fld["t"].dt.year() < 2, ids(2))
    check(differential, T_ROWS, fld["t"].dt.hour() == 23, ids(3, 4))


def test_truncate_week_starts_on_monday(differential: Differential) -> None:
    check(differential, T_ROWS, fld["t"].dt.truncate("1w") == dt.datetime(2024, 3, 11, tzinfo=UTC),
          ids(1))
    check(differential, T_ROWS, fld["t"].dt.truncate("1w") == dt.datetime(1999, 12, 27, tzinfo=UTC),
          ids(5))


@pytest.mark.parametrize(("every", "start", "expected"), [
    ("2w", dt.datetime(2024, 3, 4, tzinfo=UTC), {1}),
    ("2d", dt.datetime(1969, 12, 30, tzinfo=UTC), {4}),
    ("15m", dt.datetime(2024, 3, 14, 15, 0, tzinfo=UTC), {1}),
    ("5mo", dt.datetime(2024, 3, 1, tzinfo=UTC), {1}),
    ("3y", dt.datetime(2024, 1, 1, tzinfo=UTC), {1}),  # 2024 - 1970 is a multiple of 3
    ("7y", dt.datetime(2019, 1, 1, tzinfo=UTC), {1}),
    ("2q", dt.datetime(2000, 1, 1, tzinfo=UTC), {5}),
    ("5mo", dt.datetime(1969, 8, 1, tzinfo=UTC), {4}),  # bins: ..., 1969-08, 1970-01
])
def test_truncate_bins_align_like_polars(differential: Differential, every: str,
                                         start: dt.datetime, expected: set[int]) -> None:
    check(differential, T_ROWS, fld["t"].dt.truncate(every) == start, ids(*expected))


def test_truncate_milliseconds_are_exact(differential: Differential) -> None:
    # SecantusDB's $toLong of this date is 1 ms low; the compiler subtracts the epoch.
    rows = docs({"t": dt.datetime(2038, 1, 19, 4, 0, 0, 2000, tzinfo=UTC)})
    differential.load(rows)
    differential.assert_same_values(fld["t"].dt.truncate("15m"))
    check(differential, rows, fld["t"].dt.truncate("15m") == dt.datetime(2038, 1, 19, 4, tzinfo=UTC),
          ids(1))


@pytest.mark.parametrize("every", ["1ms", "1s", "1m"])
def test_truncate_in_a_zone_keeps_the_instant_where_clocks_go_back(
        differential: Differential, every: str) -> None:
    # 1971-10-31 02:00 UTC is 02:00 GMT in London, a wall time that also was 02:00 BST an
    # hour earlier: truncating the local time re-localised it to 01:00 UTC (Polars'
    # "earliest"), MongoDB keeps the instant. Found by test_differential in a fresh run.
    rows = docs({"t": dt.datetime(1971, 10, 31, 2, 0, tzinfo=UTC)},
                {"t": dt.datetime(1971, 10, 31, 1, 0, tzinfo=UTC)})
    differential.load(rows)
    differential.assert_same_values(fld["t"].dt.truncate(every, time_zone="Europe/London"))


@pytest.mark.parametrize("every", ["7m", "3h", "2w", "5mo", "3y"])
def test_truncate_bins_never_start_before_year_one(differential: Differential,
                                                   every: str) -> None:
    check(differential, T_ROWS, fld["t"].dt.truncate(every) == dt.datetime(1, 1, 1, tzinfo=UTC),
          ids(2))


def test_truncate_of_missing_datetime_is_null(differential: Differential) -> None:
    check(differential, T_ROWS, fld["t"].dt.truncate("5mo").is_null(), ids(6, 7))


def test_datetime_literals_are_utc_milliseconds(differential: Differential) -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    local = dt.datetime(2024, 3, 14, 16, 9, 26, 535999, tzinfo=paris)  # = row 1, +999 us
    check(differential, T_ROWS, fld["t"] == local, ids(1))
    check(differential, T_ROWS, fld["t"] >= dt.datetime(2024, 3, 14, 15, 9, 26, 535999), ids(1, 3))


def test_date_literal_means_midnight_utc(differential: Differential) -> None:
    check(differential, T_ROWS, fld["t"] == dt.date(2000, 1, 2), ids(5))
    check(differential, T_ROWS, fld["t"] < dt.date(1970, 1, 1), ids(2, 4))


# ----------------------------------------------------------------------- ids, safety
def test_object_id_field_binds_hex_strings(differential: Differential) -> None:
    rows = docs({}, {}, {})
    check(differential, rows, fld["id"] == str(oid(2)), ids(2))
    check(differential, rows, fld["_id"].is_in([oid(1), str(oid(3))]), ids(1, 3))
    check(differential, rows, fld["id"] > oid(1), ids(2, 3))


def test_injected_operator_is_matched_literally(differential: Differential) -> None:
    rows = docs({"s": "x"}, {"s": None}, {"s": "$ne"})
    differential.load(rows)
    differential.collection.update_one({"_id": oid(2)}, {"$set": {"s": {"$ne": None}}})
    assert differential.mongo_ids(fld["s"] == {"$ne": None}, None) == ids(2)
    assert differential.mongo_ids(fld["s"] != {"$ne": None}, None) == ids(1, 3)
    assert differential.mongo_ids(fld["s"].is_in([{"$ne": None}, "$ne"]), None) == ids(2, 3)
    assert differential.mongo_ids(fld["s"] == "$ne", None) == ids(3)


def test_dollar_string_is_a_literal_in_expr(differential: Differential) -> None:
    rows = docs({"s": "$S"}, {"s": "s"}, {"s": None})
    check(differential, rows, fld["s"].str.to_lower() == "$s", ids(1))
    check(differential, rows, (fld["s"].str.to_upper()).is_in(["$S"]), ids(1))


def test_computed_boolean_constant_is_a_value(differential: Differential) -> None:
    # A bare false in $project would mean "exclude the field".
    differential.load(docs({"b": 1.0}, {}))
    differential.assert_same_values(fld["b"] < NAN)
    assert differential.mongo_values(fld["b"] < NAN) == {str(oid(1)): False, str(oid(2)): False}


def test_exists_runs_in_mongodb_only(differential: Differential) -> None:
    differential.load(A_ROWS)
    assert differential.mongo_ids(fld["a"].exists(), None) == ids(1, 2, 3)
    assert differential.mongo_ids(fld["a"].exists(False), None) == ids(4)
    assert differential.mongo_ids(~fld["a"].exists(), None) == ids(4)


# --------------------------------------------------------------------- aggregations
GROUP_ROWS = docs(
    {"g": 1, "b": 1.0, "a": 1, "s": "x", "flag": True},
    {"g": 1, "b": 4.0, "a": 2, "s": "y", "flag": False},
    {"g": 1, "b": None, "a": 2, "s": None},
    {"g": 1, "b": 2.0, "a": 5, "s": "x", "flag": True},
    {"g": 1, "b": 10.0, "a": -3, "s": "x"},
    {"g": 2, "b": 3.0, "a": 7, "s": "z", "flag": False},
    {"g": 3},
    {"g": 4, "b": -0.0, "a": 0, "s": "w"},
    {"g": 4, "b": 0.0, "a": 0, "s": "w", "flag": True},
    {"g": 5, "b": 1.0}, {"g": 5, "b": float("nan")}, {"g": 5, "b": 3.0},
    {"g": 6, "b": float("nan")}, {"g": 6},
)
AGGREGATIONS = [
    fld["b"].count(), fld["b"].sum(), fld["b"].mean(), fld["b"].min(), fld["b"].max(),
    fld["b"].first(), fld["b"].last(), fld["b"].std(), fld["b"].var(), fld["b"].median(),
    fld["b"].quantile(0.25), fld["b"].quantile(0.75), fld["a"].quantile(0.9),
    fld["a"].n_unique(), fld["s"].n_unique(), fld["b"].n_unique(), fld["a"].sum(),
    fld["a"].median(), fld["flag"].sum(), fld["flag"].mean(), (fld["a"] * 2).max(),
    (fld["a"] > 1).sum(),
]


def test_group_accumulators_agree_with_polars(differential: Differential) -> None:
    differential.load(GROUP_ROWS)
    names = [f"r{i}" for i in range(len(AGGREGATIONS))]
    accs = [e.alias(name).to_mongo_accumulator(RESOLVER) for e, name in zip(AGGREGATIONS, names,
                                                                              strict=True)]
    pipeline = [
        {"$sort": {"_id": 1}},
        {"$group": {"_id": "$g", **{acc.name: acc.group for acc in accs}}},
        {"$set": {acc.name: acc.finalize() for acc in accs}},
    ]
    mongo = {d["_id"]: d for d in differential.collection.aggregate(pipeline)}
    frame = differential.frame.with_columns(
        g=pl.Series([row["g"] for row in GROUP_ROWS]))
    polars = {row["g"]: row for row in frame.group_by("g", maintain_order=True).agg(
        [e.alias(name).to_polars(RESOLVER) for e, name in zip(AGGREGATIONS, names, strict=True)]
    ).to_dicts()}
    assert mongo.keys() == polars.keys() == {1, 2, 3, 4, 5, 6}
    for group in mongo:
        for expr, name in zip(AGGREGATIONS, names, strict=True):
            got, want = mongo[group][name], polars[group][name]
            if isinstance(got, float) and isinstance(want, float):
                assert got == pytest.approx(want, rel=1e-12, nan_ok=True), (group, expr)
            else:
                assert same_value(got, want), (group, expr, got, want)
    assert mongo[1]["r9"] == 2.0  # median of 1, 2, 4, 10: a value of the group
    assert mongo[1]["r14"] == 2  # distinct non-null strings: x, y
    assert mongo[5]["r9"] == 1.0 and mongo[6]["r9"] is None  # median skips NaN like null
