"""Where each part of a plan runs, and one answer wherever it runs.

* Whole-table aggregates mean what they mean in Polars: alone in ``select`` (or in
  ``group_by().agg()`` without keys) one row, also over no rows; beside other columns
  and in ``with_columns`` broadcast to every row. Differential against Polars on the
  loaded frame, on random data with nulls, missing values, NaN and infinities, with
  both engines.
* ``engine="mongodb"`` and ``engine="polars"`` give the same frame for joins, group-bys
  and windows (random keys with nulls and missing values).
* ``engine="auto"`` places them by the server's costs, and ``explain()`` says why.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import loom_frames as lm
from loom_frames import Persistable, declare_persist_db, fld
from loom_frames.placement import COSTS
from loom_frames.schema import model_resolver

NAN, INF = float("nan"), float("inf")
ENGINES = ("mongodb", "polars")


@pytest.fixture
def models(db_name: str) -> Any:
    @declare_persist_db(db_name=db_name, collection_name="facts")
    class Fact(Persistable):
        k: str | None = None
        x: int | None = None
        y: float | None = None

    @declare_persist_db(db_name=db_name, collection_name="dims")
    class Dim(Persistable):
        k: str | None = None
        label: str | None = None
        w: float | None = None

    return Fact, Dim


def _store(model: Any, rows: list[dict[str, Any]]) -> None:
    """Insert raw documents (a key absent from a row is a missing field)."""
    model.collection().delete_many({})
    if rows:
        model.collection().insert_many([dict(r) for r in rows])


keys = st.sampled_from(["a", "b", "c", None])
facts = st.lists(st.fixed_dictionaries({}, optional={
    "k": keys,
    "x": st.one_of(st.none(), st.integers(-5, 5)),
    "y": st.one_of(st.none(), st.sampled_from([0.0, -1.5, 2.5, NAN, INF, -INF]),
                   st.floats(-1e6, 1e6)),
}), max_size=12)
dims = st.lists(st.fixed_dictionaries({}, optional={
    "k": keys, "label": st.sampled_from(["p", "q", None]),
    "w": st.one_of(st.none(), st.floats(-10, 10)),
}), max_size=5)

AGGREGATIONS = {
    "sum_x": lambda: fld["x"].sum(), "sum_y": lambda: fld["y"].sum(),
    "mean_x": lambda: fld["x"].mean(), "mean_y": lambda: fld["y"].mean(),
    "min_y": lambda: fld["y"].min(), "max_x": lambda: fld["x"].max(),
    "count_y": lambda: fld["x"].count(), "n": lambda: lm.len(),
    "std_x": lambda: fld["x"].std(), "median_x": lambda: fld["x"].median(),
    "n_unique_k": lambda: fld["k"].n_unique(),
}
BROADCAST = ("sum_x", "sum_y", "mean_x", "mean_y", "min_y", "max_x", "count_y", "n", "std_x")


def _frames_equal(got: pl.DataFrame, want: pl.DataFrame, sort: list[str] | None = None
                  ) -> None:
    if sort:
        got, want = got.sort(sort, nulls_last=True), want.sort(sort, nulls_last=True)
    assert_frame_equal(got, want, check_dtypes=False, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=facts, names=st.lists(st.sampled_from(sorted(AGGREGATIONS)), min_size=1,
                                  max_size=3, unique=True), cut=st.booleans())
@example(rows=[{"x": 1, "y": NAN}], names=["sum_x", "sum_y", "n"], cut=True)
@example(rows=[{"x": 1, "y": NAN}, {"k": "a"}], names=["mean_y", "count_y", "median_x"], cut=False)
def test_whole_table_aggregates_equal_polars(models: Any, rows: Any, names: list[str],
                                             cut: bool) -> None:
    fact, _ = models
    _store(fact, rows)
    query = fact.filter(fld["x"] > 100) if cut else fact.filter()  # cut: no rows at all
    frame = query.load_polars()
    resolver = model_resolver(fact)
    exprs = [AGGREGATIONS[name]().alias(name) for name in names]
    want = frame.select([e.to_polars(resolver) for e in exprs])
    broadcast = [e for e, name in zip(exprs, names, strict=True) if name in BROADCAST]
    for engine in ENGINES:
        got = query.select(*exprs).load_polars(engine=engine)
        assert got.height == 1, engine  # one row, as Polars gives, also of no rows
        _frames_equal(got, want)
        grouped = query.group_by().agg(*exprs).load_polars(engine=engine)
        _frames_equal(grouped, want)
        if broadcast:
            wide = query.with_columns(*broadcast).select("id", *[e.output_name for e in broadcast])
            want_wide = frame.with_columns([e.to_polars(resolver) for e in broadcast]).select(
                "id", *[e.output_name for e in broadcast])
            _frames_equal(wide.load_polars(engine=engine), want_wide, ["id"])
            mixed = query.select("id", broadcast[0]).load_polars(engine=engine)
            _frames_equal(mixed, want_wide.select("id", broadcast[0].output_name), ["id"])


def test_a_whole_table_aggregate_is_a_group_and_one_row(models: Any) -> None:
    fact, _ = models
    fact.persist_many([fact(k="a", x=1, y=2.0), fact(k="b", x=3, y=None)])
    query = fact.filter().select(fld["y"].mean(), m=fld["x"].max(), n=lm.len())
    assert "$group" in str(query.explain(engine="mongodb"))
    assert query.load_polars().to_dicts() == [{"y": 2.0, "m": 3, "n": 2}]
    assert query.count() == 1
    spread = fact.filter().with_columns(share=fld["x"].sum()).select("x", "share")
    assert sorted(spread.load_polars()["share"].to_list()) == [4, 4]
    with pytest.raises(lm.PlanError, match="broadcast to every row"):
        fact.filter().with_columns(m=fld["x"].median())


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(left=facts, right=dims, how=st.sampled_from(["inner", "left"]))
def test_engines_agree_on_joins_groups_and_windows(models: Any, left: Any, right: Any,
                                                   how: str) -> None:
    fact, dim = models
    _store(fact, left)
    _store(dim, right)
    queries = {
        "join": fact.filter().join(dim, on="k", how=how).select("x", "y", "label", "w"),
        "join_filter_group": (fact.filter(fld["x"] > -4).join(dim.filter(fld["w"] < 5), on="k",
                                                               how=how)
                              .filter(fld["label"] != "q")
                              .group_by("label").agg(t=fld["x"].sum(), m=fld["w"].max(),
                                                     n=lm.len())),
        "window": fact.filter().with_columns(r=fld["x"].rank("min").over("k"),
                                             s=fld["x"].sum().over("k")).select("x", "k", "r", "s"),
        "group_sort_limit": (fact.filter().group_by("k").agg(t=fld["y"].sum())
                             .sort("t", descending=True, nulls_last=True).select("t")),
    }
    for name, query in queries.items():
        a = query.load_polars(engine="mongodb")
        b = query.load_polars(engine="polars")
        assert a.columns == b.columns and a.schema == b.schema, name
        flat = [c for c in a.columns]
        if name == "group_sort_limit":  # a total order on t: compare in order
            assert_frame_equal(a, b, rel_tol=1e-9)
        else:
            _frames_equal(b, a, flat)
        assert query.count(engine="mongodb") == query.count(engine="polars") == a.height


def test_joins_equal_polars_on_the_loaded_frames(models: Any) -> None:
    fact, dim = models
    _store(fact, [{"k": "a", "x": 1}, {"k": None, "x": 2}, {"x": 3}, {"k": "b", "x": 4}])
    _store(dim, [{"k": "a", "label": "p"}, {"k": None, "label": "q"}, {"label": "r"}])
    facts_, dims_ = fact.filter().load_polars(), dim.filter().load_polars()
    for how in ("inner", "left"):
        want = facts_.join(dims_.select("k", "label"), on="k", how=how).select("x", "label")
        for engine in ENGINES:
            got = fact.filter().join(dim, on="k", how=how).select("x", "label")
            _frames_equal(got.load_polars(engine=engine), want, ["x"])


def test_auto_places_by_the_servers_costs(models: Any, mongo_uri: str) -> None:
    fact, dim = models
    fact.persist_many([fact(k=k, x=i, y=i / 2) for i, k in enumerate("abcab" * 40)])
    dim.persist_many([dim(k=k, label=k.upper()) for k in "abc"])
    from loom_frames.read import cursor

    costs = cursor.server_costs(fact.collection())
    embedded = "secantus" in str(fact.collection().database.client.admin.command("buildInfo"))
    assert costs is COSTS["secantusdb" if embedded else "mongod"]

    window = fact.filter().with_columns(r=fld["x"].rank().over("k"))
    assert window.explain().engines == ("mongodb", "polars")  # windows: Polars on any server
    assert "a window returns every row it reads" in str(window.explain())
    assert window.explain(engine="mongodb").engines == ("mongodb",)

    simple = fact.filter().group_by("k").agg(t=fld["x"].sum())
    heavy = fact.filter().group_by("k").agg(
        a=(fld["y"] * (1 - fld["x"]) * (1 + fld["y"])).sum(), b=(fld["y"] * (1 - fld["x"])).sum(),
        c=fld["x"].mean(), d=fld["y"].mean(), e=fld["x"].sum(), f=fld["y"].sum(), n=lm.len())
    assert simple.explain().engines == ("mongodb",)  # one accumulator: MongoDB, anywhere
    text = str(heavy.explain())
    assert "accumulator(s)" in text and "us/doc" in text  # the figures it used
    assert heavy.explain().engines == (("mongodb", "polars") if embedded else ("mongodb",))

    join = fact.filter().join(dim, on="k")  # 200 left rows, 3 right rows: loading wins
    assert join.explain().engines == ("mongodb", "polars")
    assert "$lookup" in str(join.explain()) and "left row" in str(join.explain())
    assert "$lookup" not in "\n".join(join.explain().lines()[:6])
    for query in (window, simple, heavy, join):
        _frames_equal(query.load_polars(), query.load_polars(engine="mongodb"),
                      [c for c in query.collect_schema().names()
                       if query.collect_schema()[c] != pl.Null])


def test_engine_is_checked_and_raw_pipelines_stay_in_mongodb(models: Any) -> None:
    fact, _ = models
    fact.persist_many([fact(k="a", x=1)])
    with pytest.raises(lm.PlanError, match="'auto', 'mongodb' or 'polars'"):
        fact.filter().load_polars(engine="duckdb")  # type: ignore[arg-type]
    raw = fact.filter().group_by("k").agg(n=lm.len()).agg([{"$match": {}}])
    for engine in ("auto", "polars"):
        assert raw.load_table(engine=engine).num_rows == 1
        assert "raw pipeline" in str(raw.explain(engine=engine))
        assert raw.explain(engine=engine).engines == ("mongodb",)


def test_a_polars_part_reads_only_the_columns_it_needs(models: Any, commands: Any) -> None:
    fact, dim = models
    fact.persist_many([fact(k="a", x=1, y=1.0), fact(k="b", x=2, y=2.0)])
    dim.persist_many([dim(k="a", label="A", w=1.0)])
    query = (fact.filter(fld["x"] > 0).join(dim.filter(fld["w"] > 0), on="k")
             .group_by("label").agg(t=fld["x"].sum()))
    commands.clear()
    assert query.load_polars(engine="polars").to_dicts() == [{"label": "A", "t": 1}]
    finds = {c["find"]: c for c in commands.named("find")}
    assert set(finds) == {"facts", "dims"}
    assert finds["facts"]["filter"] == {"x": {"$gt": 0}}  # each side filtered by MongoDB
    assert finds["dims"]["filter"] == {"w": {"$gt": 0}}
    assert set(finds["facts"]["projection"]) <= {"k", "x", "_id"}  # no created_at, y, ...
    assert set(finds["dims"]["projection"]) <= {"k", "label", "w", "_id"}


def test_windows_at_scale_run_in_polars(models: Any) -> None:
    fact, _ = models
    fact.collection().insert_many([{"k": "abcde"[i % 5], "x": (i * 7919) % 1000}
                                   for i in range(20_000)])
    query = fact.filter().with_columns(r=fld["x"].rank("min").over("k")).select("k", "x", "r")
    got = query.load_polars()  # the embedded server's window would take many minutes
    want = fact.filter().load_polars().select(
        "k", "x", r=pl.col("x").rank("min").over("k").cast(got.schema["r"]))
    _frames_equal(got, want, ["k", "x", "r"])
    assert not math.isnan(got["r"].mean() or 0.0)


def test_a_join_goes_to_mongodb_when_few_left_rows_meet_a_large_side(models: Any) -> None:
    """The rule on made-up figures (pure: no server): on a mongod, 10 orders joined to 6
    million lineitems are 10 lookups, not 6 million rows sent; 1.5 million orders are
    the other way round. (The embedded server is never asked for filtered counts, a count
    costs a third of a load there: it sees whole collections.)"""
    from loom_frames.placement import place
    from loom_frames.plan import Join, Source

    fact, dim = models
    join = Join(Source.of_model(dim), (), ("k",), ("k",), "inner", "_right")
    sizes = {"facts": (1_500_000, 10), "dims": (6_000_000, 6_000_000)}

    def rows(source: Source, steps: Any) -> tuple[int, int]:
        return sizes[source.collection]

    few = place(Source.of_model(fact), (join,), "auto", COSTS["mongod"], rows)
    assert few.local == () and "10 left rows" in str(few.reasons[0])
    sizes["facts"] = (1_500_000, 1_500_000)
    many = place(Source.of_model(fact), (join,), "auto", COSTS["mongod"], rows)
    assert many.local == (join,) and "Polars" in str(many.reasons[0])
    embedded = place(Source.of_model(fact), (join,), "auto", COSTS["secantusdb"], rows)
    assert embedded.local == (join,) and "sizes not asked" in str(embedded.reasons[0])


def test_scan_of_a_placed_query_continues_in_polars(models: Any) -> None:
    fact, dim = models
    fact.persist_many([fact(k=k, x=i) for i, k in enumerate("abca")])
    dim.persist_many([dim(k="a", label="A"), dim(k="b", label="B")])
    query = (fact.filter().join(dim, on="k").with_columns(r=fld["x"].rank("min").over("label"))
             .select("x", "label", "r"))
    lazy = query.scan()
    assert isinstance(lazy, pl.LazyFrame) and "MongoDB[" in lazy.explain()
    _frames_equal(lazy.collect(), query.load_polars(engine="mongodb"), ["x"])
    assert lazy.filter(pl.col("label") == "A").collect()["x"].sort().to_list() == [0, 3]
