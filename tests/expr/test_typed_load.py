"""Typed results: what a query loads equals what Polars computes, dtypes included.

The value differential (test_differential.py) compares MongoDB's raw documents with
Polars; this one goes through the whole typed path a user takes: ``Model.filter()
.group_by(...).agg(...)`` / ``.with_columns(...)`` / ``.select(...)``, compiled to one
command, read by pymongoarrow into the plan's Arrow types, loaded with ``load_polars()``,
and compared with Polars evaluating the same expressions (``to_polars()``) on the same
documents loaded as a frame: values and dtypes. It is how a sum of booleans, typed as a
boolean by the plan but returned as an integer by MongoDB, would have been caught.

``LOOM_HYPOTHESIS_EXAMPLES`` sets the number of examples (default 300; about 7 s each test
on SecantusDB).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Callable
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, note, reject, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from test_differential import (
    _date_part,
    _truncation,
    cases,
    int_exprs,
    num_exprs,
    predicates,
    small_ints,
    values,
)

import loom_frames as lm
from loom_frames import Persistable, declare_persist_db, fld
from loom_frames.expr import Expr
from loom_frames.schema import model_resolver

EXAMPLES = int(os.environ.get("LOOM_HYPOTHESIS_EXAMPLES", "300"))
T0 = dt.datetime(2024, 3, 10, 5, 30, tzinfo=dt.UTC)  # New York's clock change is at 07:00


@pytest.fixture
def Doc(db_name: str) -> type[Persistable]:  # noqa: N802
    @declare_persist_db(db_name=db_name, collection_name="docs")
    class Doc(Persistable):
        a: int | None = None
        b: float | None = None
        s: str | None = None
        flag: bool | None = None
        t: dt.datetime | None = None
        tags: list[str | None] | None = None
        nums: list[int | None] | None = None

    return Doc


# ------------------------------------------------------------------ regressions
@pytest.fixture
def flights(Doc: Any) -> None:  # noqa: N803
    Doc.persist_many([
        Doc(s="JFK", a=None, b=1.5, flag=True, t=T0),
        Doc(s="JFK", a=517, b=-2.0, flag=False, t=T0 + dt.timedelta(hours=2)),
        Doc(s="JFK", a=None, b=None, flag=None, t=T0 + dt.timedelta(hours=3)),
        Doc(s="EWR", a=544, b=0.5, flag=True, t=T0 + dt.timedelta(days=1)),
    ])


def test_a_summed_boolean_loads_as_a_count(Doc: Any, flights: None, commands: Any) -> None:  # noqa: N803
    query = Doc.filter().group_by("s").agg(
        k=fld["a"].is_null().sum(), pos=(fld["b"] > 0).sum(), ok=fld["flag"].sum(),
        n=fld["a"].count(),
    ).sort("s")
    frame = query.load_polars()
    assert frame.to_dicts() == [{"s": "EWR", "k": 0, "pos": 1, "ok": 1, "n": 1},
                                {"s": "JFK", "k": 2, "pos": 1, "ok": 1, "n": 1}]
    assert frame.schema == pl.Schema({"s": pl.String, "k": pl.UInt32, "pos": pl.UInt32,
                                      "ok": pl.UInt32, "n": pl.UInt32})
    assert commands.returned == 2  # the groups only
    # nothing silently nulled with on_invalid="null", and the scan agrees
    assert_frame_equal(query.load_polars(on_invalid="null"), frame)
    assert_frame_equal(query.scan().collect(), frame)
    # Polars on the same documents gives the same frame, dtypes included
    res = model_resolver(Doc)
    local = Doc.filter().load_polars().group_by("s").agg(
        fld["a"].is_null().sum().alias("k").to_polars(res), (fld["b"] > 0).sum().alias("pos")
        .to_polars(res), fld["flag"].sum().alias("ok").to_polars(res),
        fld["a"].count().alias("n").to_polars(res)).sort("s")
    assert_frame_equal(local, frame)
    # and as Polars itself would write it
    native = Doc.filter().load_polars().group_by("s").agg(
        k=pl.col("a").is_null().sum(), pos=(pl.col("b") > 0).sum(), ok=pl.col("flag").sum(),
        n=pl.col("a").count()).sort("s")
    assert_frame_equal(native, frame)


def test_result_dtypes_are_polars_own(Doc: Any, flights: None) -> None:  # noqa: N803
    t = fld["t"]
    frame = Doc.filter().select(
        "s", year=t.dt.year(), month=t.dt.month(), hour=t.dt.hour(time_zone="America/New_York"),
        day=t.dt.truncate("1d", time_zone="America/New_York"), n=fld["tags"].list.len(),
        wide=t.dt.hour() * 1000,
    ).sort("s", "hour").load_polars()
    assert frame.schema == pl.Schema({  # what Polars gives for the same expressions
        "s": pl.String, "year": pl.Int32, "month": pl.Int8, "hour": pl.Int8,
        "day": pl.Datetime("ms", "America/New_York"), "n": pl.UInt32, "wide": pl.Int64})
    assert frame["year"].to_list() == [2024] * 4 and frame["month"].to_list() == [3] * 4
    # 05:30 UTC on March 10 is 00:30 EST; 07:30 UTC is 03:30 EDT (clocks went forward at
    # 07:00 UTC), and 05:30 UTC on March 11 is 01:30 EDT
    assert frame["hour"].to_list() == [1, 0, 3, 4]
    new_york = [d.replace(tzinfo=None) for d in frame["day"].dt.replace_time_zone(None)]
    assert new_york == [dt.datetime(2024, 3, 11), *[dt.datetime(2024, 3, 10)] * 3]
    assert frame["wide"].to_list() == [5000, 5000, 7000, 8000]  # int64, never wrapped
    pandas = Doc.filter().group_by("s").agg(n=fld["a"].count()).load_dataframe()
    assert str(pandas["n"].dtype) == "UInt32"


def test_a_computed_value_that_does_not_fit_names_the_column_and_expression(
    Doc: Any, flights: None  # noqa: N803
) -> None:
    query = Doc.filter(fld["a"] > 0).with_columns(big=fld["a"] * 2**62).select("s", "big")
    with pytest.raises(lm.DocumentValidationError) as caught:
        query.load_polars()
    message = str(caught.value)
    assert "computed column 'big' = fld['a'] * 4611686018427387904 holds" in message
    assert "(double)" in message and "fix the stored value" not in message
    assert "_id=ObjectId(" in message and "Hint:" in message
    grouped = Doc.filter().group_by("s").agg(total=(fld["a"] * 2**62).sum())
    with pytest.raises(lm.DocumentValidationError, match=r"computed column 'total' = "
                       r"\(fld\['a'\] \* 4611686018427387904\)\.sum\(\) holds .* a result row"):
        grouped.load_polars(engine="mongodb")
    assert query.load_polars(on_invalid="null")["big"].null_count() == 2


# ------------------------------------------------------------------ differential
AGGREGATIONS: dict[str, Callable[[Expr], Expr]] = {
    "count": lambda e: e.count(), "n_unique": lambda e: e.n_unique(),
    "min": lambda e: e.min(), "max": lambda e: e.max(), "first": lambda e: e.first(),
    "last": lambda e: e.last(), "sum": lambda e: e.sum(), "mean": lambda e: e.mean(),
    "std": lambda e: e.std(), "var": lambda e: e.var(), "median": lambda e: e.median(),
    "quantile": lambda e: e.quantile(0.3),
}
ANY_VALUE = ("count", "n_unique", "min", "max", "first", "last")


@st.composite
def aggregations(draw: st.DrawFn, zone: str | None = None) -> Expr:
    """A random aggregation of a random value expression (numbers, booleans, date parts,
    counts, strings, datetimes)."""
    numeric = draw(st.sampled_from(["num", "int", "cond", "flag", "part", "len"]))
    if draw(st.integers(0, 3)) == 0:  # values any aggregation of ANY_VALUE takes
        arg = draw(st.sampled_from([fld["s"], fld["s"].str.to_lower(), fld["t"], fld["id"],
                                    _truncation(draw, zone)]))
        return AGGREGATIONS[draw(st.sampled_from(ANY_VALUE))](arg)
    arg = {
        "num": lambda: draw(num_exprs()), "int": lambda: draw(int_exprs()),
        "cond": lambda: draw(predicates(zone=zone)), "flag": lambda: fld["flag"],
        "part": lambda: _date_part(draw, zone),
        "len": lambda: draw(st.sampled_from([fld["tags"], fld["nums"]])).list.len(),
    }[numeric]()
    return AGGREGATIONS[draw(st.sampled_from(sorted(AGGREGATIONS)))](arg)


@st.composite
def keys(draw: st.DrawFn, zone: str | None = None) -> Expr:
    """Group keys of every type a key can have (no floats: -0.0 and 0.0 group together in
    MongoDB, whichever comes first names the group)."""
    return draw(st.sampled_from([
        fld["flag"], fld["s"], fld["s"].str.to_upper(), fld["a"] % 3, fld["a"] > 0,
        _date_part(draw, zone), _truncation(draw, zone), fld["tags"].list.len(),
        fld["a"] + draw(small_ints),
    ]))


def _insert(model: Any, docs: list[dict[str, Any]]) -> pl.DataFrame:
    coll = model.collection()
    coll.delete_many({})
    coll.insert_many([dict(d) for d in docs])
    return model.filter().load_polars()  # the same documents, as a frame


def _load(query: Any) -> pl.DataFrame:
    """``query.load_polars(engine="mongodb")`` (the typed path through MongoDB; placement
    may otherwise run a group-by in Polars); an example whose integer arithmetic
    overflowed int64 is rejected after checking the load refused it as documented
    (MongoDB turns the result into a double, Polars wraps it: docs/semantics.md, "int64
    overflow")."""
    try:
        return query.load_polars(engine="mongodb")
    except lm.DocumentValidationError as exc:
        held = re.search(r"holds (\S+) \(double\), expected an integer", str(exc))
        if held is None or abs(float(held.group(1))) < 2.0**63 or "computed" not in str(exc):
            raise
        reject()


def _compare(got: pl.DataFrame, want: pl.DataFrame, by: list[str]) -> None:
    got, want = got.sort(by, nulls_last=True), want.sort(by, nulls_last=True)
    note(f"got:\n{got}\nwant:\n{want}")
    assert_frame_equal(got, want, check_dtypes=True, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cases(aggregations, min_size=1, max_size=6), key=st.data())
def test_group_by_loads_what_polars_computes(
    Doc: Any, case: tuple[str | None, list[dict[str, Any]], list[Expr]], key: Any  # noqa: N803
) -> None:
    zone, docs, aggs = case
    frame = _insert(Doc, docs)
    group = key.draw(st.lists(keys(zone), min_size=1, max_size=2,
                              unique_by=lambda e: repr(e)))
    res = model_resolver(Doc)
    names = {f"k{i}": e for i, e in enumerate(group)}
    outputs = {f"v{i}": e for i, e in enumerate(aggs)}
    note(f"zone={zone}\ngroup_by({names})\nagg({outputs})")
    got = _load(Doc.filter().group_by(**names).agg(**outputs))
    want = frame.group_by(*(e.to_polars(res).alias(k) for k, e in names.items())).agg(
        *(e.to_polars(res).alias(k) for k, e in outputs.items()))
    _compare(got, want, list(names))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cases(values, min_size=1, max_size=8), how=st.sampled_from(["with", "select"]))
def test_computed_columns_load_what_polars_computes(
    Doc: Any, case: tuple[str | None, list[dict[str, Any]], list[Expr]], how: str  # noqa: N803
) -> None:
    zone, docs, exprs = case
    frame = _insert(Doc, docs)
    res = model_resolver(Doc)
    columns = {f"c{i}": e for i, e in enumerate(exprs)}
    note(f"zone={zone}\n{how}({columns})")
    query = Doc.filter()
    if how == "with":
        query = query.with_columns(**columns).select("id", *columns)
    else:
        query = query.select("id", **columns)
    got = _load(query)
    want = frame.select("id", *(e.to_polars(res).alias(k) for k, e in columns.items()))
    _compare(got, want, ["id"])


def test_float_tolerance_is_only_for_rounding() -> None:
    # The comparisons above allow 1e-9 relative error (sums and deviations are computed
    # in another order); NaN and infinities must still match exactly.
    with pytest.raises(AssertionError):
        assert_frame_equal(pl.DataFrame({"x": [math.inf]}), pl.DataFrame({"x": [math.nan]}),
                           rel_tol=1e-9, abs_tol=1e-9)
