"""Joins compiled to the concise ``$lookup`` (localField/foreignField) with Polars'
meaning, and the other side's columns pruned to those used: against the real server,
each result compared with Polars' join of the loaded frames."""

from __future__ import annotations

import inspect
import time
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import loom_frames as lm
from loom_frames import Persistable, declare_persist_db, fld
from loom_frames import plan as plan_module

MISSING = object()  # a key left out of the stored document


def _load(query: Any) -> pl.DataFrame:
    """The rows, read by the one MongoDB command (never a join run in Polars)."""
    if "engine" in inspect.signature(query.load_polars).parameters:
        return query.load_polars(engine="mongodb")  # type: ignore[no-any-return]
    return query.load_polars()  # type: ignore[no-any-return]


def _one_command(commands: Any, query: Any) -> pl.DataFrame:
    commands.clear()
    frame = _load(query)
    reads = commands.named("find", "aggregate")
    assert len(reads) == 1, reads
    return frame


def _same(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got.columns == want.columns
    by = got.columns
    assert_frame_equal(got.sort(by, nulls_last=True), want.sort(by, nulls_last=True),
                       check_dtypes=True)


def _lookups(query: Any) -> list[dict[str, Any]]:
    return [s["$lookup"] for s in query.compile().pipeline if "$lookup" in s]


def _polars_join(left: pl.DataFrame, right: pl.DataFrame, left_on: list[str],
                 right_on: list[str], how: str, suffix: str = "_right") -> pl.DataFrame:
    """Polars' join, the keys compared as Float64 (an int key equals a float one)."""
    temps = [f"__k{i}" for i in range(len(left_on))]

    def keyed(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
        return frame.with_columns(
            pl.col(k).cast(pl.Float64) if frame.schema[k].is_numeric() else pl.col(k)
            for k in keys).rename(dict(zip(keys, temps, strict=True)))

    right_keyed = keyed(right, right_on)
    left_temp = left.with_columns(
        (pl.col(k).cast(pl.Float64) if left.schema[k].is_numeric() else pl.col(k)).alias(t)
        for k, t in zip(left_on, temps, strict=True))
    out = left_temp.join(right_keyed, on=temps, how=how, suffix=suffix)  # type: ignore[arg-type]
    return out.drop(temps)


@pytest.fixture
def models(db_name: str, db: Any) -> Any:
    @declare_persist_db(db_name=db_name, collection_name="lefts")
    class Left(Persistable):
        k: int | None = None
        tag: str | None = None
        x: int = 0

    @declare_persist_db(db_name=db_name, collection_name="rights")
    class Right(Persistable):
        k: float | None = None
        tag: str | None = None
        v: str | None = None
        w: int = 0

    Left.persist_many([
        Left(k=1, tag="a", x=1), Left(k=1, tag="b", x=2), Left(k=2, tag="a", x=3),
        Left(k=3, tag=None, x=4), Left(k=None, tag="a", x=5), Left(k=4, tag="a", x=6),
        Left(k=2, tag="b", x=7), Left(k=5, tag="a", x=8),
    ])
    Right.persist_many([
        Right(k=1.0, tag="a", v="one-a", w=10), Right(k=1.0, tag="b", v="one-b", w=20),
        Right(k=2.0, tag="a", v="two-a", w=30), Right(k=2.0, tag="a", v="two-a2", w=40),
        Right(k=None, tag="a", v="null", w=50), Right(k=2.5, tag="a", v="half", w=60),
        Right(k=3.0, tag=None, v="three", w=70), Right(k=5.0, tag="c", v="five", w=80),
    ])
    # keys left out of the stored documents: missing, not null
    db.lefts.update_many({"x": {"$in": [6, 8]}}, {"$unset": {"k": "", "tag": ""}})
    db.rights.update_many({"w": {"$in": [60, 80]}}, {"$unset": {"k": "", "tag": ""}})
    db.rights.insert_one({"k": 4.0, "v": "raw", "w": 90})  # no created_at, no tag
    return Left, Right


# ------------------------------------------------------------------ the lookup form
def test_lookup_uses_local_and_foreign_field(models: Any) -> None:
    left, right = models
    (lookup,) = _lookups(left.filter().join(right, on="k"))
    assert (lookup["localField"], lookup["foreignField"]) == ("k", "k")
    assert "let" not in lookup
    assert lookup["pipeline"][0] == {"$match": {"k": {"$ne": None}}}  # null keys: no match
    (lookup,) = _lookups(left.filter().join(right, on=["k", "tag"]))
    assert (lookup["localField"], lookup["foreignField"]) == ("k", "k")
    assert lookup["let"] == {"k1": "$tag"}  # further keys: $expr after the narrowing
    assert lookup["pipeline"][1] == {"$match": {"$expr": {"$and": [
        {"$eq": ["$tag", "$$k1"]}, {"$gt": ["$$k1", None]}]}}}
    # a filtered or renamed other side still matches its stored key
    renamed = right.filter(fld["w"] > 10).select(key=fld["k"], v=fld["v"])
    (lookup,) = _lookups(left.filter().join(renamed, left_on="k", right_on="key"))
    assert (lookup["localField"], lookup["foreignField"]) == ("k", "k")
    assert {"$match": {"w": {"$gt": 10}}} in lookup["pipeline"]


@pytest.mark.parametrize("how", ["inner", "left"])
@pytest.mark.parametrize("keys", [["k"], ["k", "tag"]], ids=["single", "compound"])
def test_join_equals_polars(models: Any, commands: Any, how: str, keys: list[str]) -> None:
    left, right = models
    lefts, rights = _load(left.filter()), _load(right.filter())
    got = _one_command(commands, left.filter().join(right, on=keys, how=how))
    _same(got, _polars_join(lefts, rights, keys, keys, how))
    assert got["k"].dtype == pl.Int64  # the left key, as Polars keeps it
    assert "one-a" in got["v"].to_list() and "null" not in got["v"].to_list()


def test_other_side_filtered_and_renamed(models: Any, commands: Any) -> None:
    left, right = models
    lefts, rights = _load(left.filter()), _load(right.filter())
    other = right.filter(fld["w"] >= 20)
    got = _one_command(commands, left.filter(fld["x"] > 1).join(other, on="k", how="left"))
    want = _polars_join(lefts.filter(pl.col("x") > 1), rights.filter(pl.col("w") >= 20),
                        ["k"], ["k"], "left")
    _same(got, want)
    renamed = right.filter(fld["w"] > 10).select(key=fld["k"], val=fld["v"])
    got = _one_command(commands, left.filter().join(renamed, left_on="k", right_on="key"))
    other_frame = rights.filter(pl.col("w") > 10).select(key="k", val="v")
    _same(got, _polars_join(lefts, other_frame, ["k"], ["key"], "inner"))


def test_key_computed_by_the_other_side(models: Any, commands: Any) -> None:
    """foreignField matches the stored documents before the lookup's pipeline: a key the
    other side computes, or rows it limits, keep the let/$expr match after its stages."""
    left, right = models
    lefts, rights = _load(left.filter()), _load(right.filter())
    grouped = right.filter().group_by("k").agg(total=fld["w"].sum(), top=fld["v"].max())
    query = left.filter().join(grouped, on="k", how="left")
    (lookup,) = _lookups(query)
    assert "localField" not in lookup and lookup["let"] == {"k0": "$k"}
    assert "$group" in lookup["pipeline"][0]
    got = _one_command(commands, query)
    want_groups = rights.group_by("k").agg(total=pl.col("w").sum(), top=pl.col("v").max())
    _same(got, _polars_join(lefts, want_groups, ["k"], ["k"], "left"))

    shifted = right.filter().with_columns(k=fld["k"] + 1)  # the key replaced
    query = left.filter().join(shifted, on="k")
    assert "localField" not in _lookups(query)[0]
    _same(_one_command(commands, query),
          _polars_join(lefts, rights.with_columns(pl.col("k") + 1), ["k"], ["k"], "inner"))

    top = right.filter().sort("w", descending=True).limit(4)  # the top 4 of all rows
    query = left.filter().join(top, on="k", how="left")
    assert "localField" not in _lookups(query)[0]
    want = _polars_join(lefts, rights.sort("w", descending=True).head(4), ["k"], ["k"], "left")
    _same(_one_command(commands, query), want)


def test_chained_three_way_join(db_name: str, commands: Any) -> None:
    @declare_persist_db(db_name=db_name, collection_name="cities")
    class City(Persistable):
        name: str | None = None
        country: str

    @declare_persist_db(db_name=db_name, collection_name="customers")
    class Customer(Persistable):
        code: str
        city: str | None = None

    @declare_persist_db(db_name=db_name, collection_name="orders")
    class Order(Persistable):
        customer: str | None = None
        qty: int

    City.persist_many([City(name="Oslo", country="NO"), City(name="Rome", country="IT"),
                       City(name=None, country="XX")])
    Customer.persist_many([Customer(code="c1", city="Oslo"), Customer(code="c2", city=None),
                           Customer(code="c3", city="Rome"), Customer(code="c4", city="Paris")])
    Order.persist_many([Order(customer=c, qty=i) for i, c in
                        enumerate(["c1", "c2", "c3", "c4", None, "c1", "c3", "c9"])])
    orders, customers, cities = (_load(m.filter()) for m in (Order, Customer, City))
    for how in ("inner", "left"):
        query = (Order.filter().join(Customer, left_on="customer", right_on="code", how=how)
                 .join(City, left_on="city", right_on="name", how=how, suffix="_city"))
        first, second = _lookups(query)
        assert (second["localField"], second["foreignField"]) == ("city", "name")
        want = orders.join(customers, left_on="customer", right_on="code", how=how).join(
            cities, left_on="city", right_on="name", how=how,  # type: ignore[arg-type]
            suffix="_city")
        _same(_one_command(commands, query), want)
        narrow = query.select("qty", "country")
        first, second = _lookups(narrow)
        # the first join carries the second one's key only, the second its one column
        assert first["pipeline"][-1] == {"$project": {"_id": 0, "city": 1}}
        assert second["pipeline"][-1] == {"$project": {"_id": 0, "country": 1}}
        _same(_one_command(commands, narrow), want.select("qty", "country"))


# ------------------------------------------------------------------- pruning
def _projected(lookup: dict[str, Any]) -> set[str]:
    project = lookup["pipeline"][-1]["$project"]
    return {k for k, v in project.items() if v}


def _unpruned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_module, "_prune",
                        lambda source, steps, needed=None: list(steps))


def _pruning_queries(left: Any, right: Any) -> dict[str, tuple[Any, set[str]]]:
    """Queries over a join, and the other side's fields its lookup carries (pruned)."""
    joined = left.filter().join(right, on="k", how="left")
    return {
        "all": (joined, {"_id", "created_at", "updated_time", "tag", "v", "w"}),
        "select": (joined.select("x", "v"), {"v"}),
        "filter-then-select": (joined.filter(fld["w"] > 15).select("x", "v"), {"v", "w"}),
        "group": (joined.group_by("tag").agg(total=fld["w"].sum()), {"w"}),
        "group-right-key": (joined.group_by("tag_right").agg(n=lm.len()), {"tag"}),
        "with-columns": (joined.with_columns(y=fld["w"] * 2).select("x", "y"), {"w"}),
        "replaced": (joined.with_columns(w=fld["x"]).select("w"), {"_id"}),
        "sort": (joined.sort("w").select("x", "id_right"), {"w", "_id"}),
        "semi-join": (joined.select("x"), {"_id"}),
        "no-select-after": (joined.filter(fld["w"] > 15), {"_id", "created_at",
                                                            "updated_time", "tag", "v", "w"}),
    }


def test_pruned_lookup_carries_used_columns(models: Any, commands: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    left, right = models
    results = {}
    for name, (query, carried) in _pruning_queries(left, right).items():
        (lookup,) = _lookups(query)
        assert _projected(lookup) == carried, name
        results[name] = (query.collect_schema(), _one_command(commands, query))
    _unpruned(monkeypatch)  # the same queries carrying every column: the same results
    for name, (query, _) in _pruning_queries(left, right).items():
        schema, got = results[name]
        assert query.collect_schema() == schema, name
        (lookup,) = _lookups(query)
        assert "created_at" in lookup["pipeline"][-1]["$project"], name
        by = [c for c in got.columns if got.schema[c] != pl.Null]
        assert_frame_equal(got.sort(by, nulls_last=True),
                           _load(query).sort(by, nulls_last=True), check_dtypes=True)


# --------------------------------------------------------------- differential
_LEFT_KEYS = st.sampled_from([MISSING, None, 0, 1, 2, 3])
_RIGHT_KEYS = st.sampled_from([MISSING, None, 0.0, 1.0, 2.0, 2.5])
_TAGS = st.sampled_from([MISSING, None, "a", "b"])


def _document(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not MISSING}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lefts=st.lists(st.tuples(_LEFT_KEYS, _TAGS), max_size=8),
       rights=st.lists(st.tuples(_RIGHT_KEYS, _TAGS), max_size=8),
       how=st.sampled_from(["inner", "left"]), compound=st.booleans())
def test_random_keys_equal_polars(models: Any, db: Any, lefts: list[tuple[Any, Any]],
                                  rights: list[tuple[Any, Any]], how: str,
                                  compound: bool) -> None:
    left, right = models
    db.lefts.delete_many({})
    db.rights.delete_many({})
    if lefts:
        db.lefts.insert_many([_document(k=k, tag=t, x=i) for i, (k, t) in enumerate(lefts)])
    if rights:
        db.rights.insert_many([_document(k=k, tag=t, w=i) for i, (k, t) in enumerate(rights)])
    keys = ["k", "tag"] if compound else ["k"]
    query = left.filter().join(right, on=keys, how=how).select("x", "w")
    assert _lookups(query)[0]["localField"] == "k"
    want = _polars_join(_load(left.filter()), _load(right.filter()), keys, keys, how)
    _same(_load(query), want.select("x", "w"))


def test_concise_lookup_is_fast(db_name: str, db: Any) -> None:
    """A join over 5,000 x 2,000 rows: well under the time of one scan per left row."""

    @declare_persist_db(db_name=db_name, collection_name="facts")
    class Fact(Persistable):
        key: int
        x: int

    @declare_persist_db(db_name=db_name, collection_name="dims")
    class Dim(Persistable):
        key: int
        name: str

    db.facts.insert_many([{"key": i % 2500, "x": i} for i in range(5000)])
    db.dims.insert_many([{"key": i, "name": f"n{i}"} for i in range(2000)])
    db.dims.create_index("key")
    started = time.perf_counter()
    got = _load(Fact.filter().join(Dim, on="key").select("x", "name"))
    assert got.height == 4000
    assert time.perf_counter() - started < 20  # the let/$expr form took over 80 s
