"""The Polars-shaped query verbs: each is ONE MongoDB command (engine="mongodb"), the
same rows when Polars runs its joins, group-bys and windows (engine="polars"), and its
frame equals what Polars computes on the same documents loaded as a frame (dtypes
included)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import loom_frames as lm
from loom_frames import Persistable, declare_persist_db, fld

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def models(db_name: str) -> Any:
    @declare_persist_db(db_name=db_name, collection_name="customers")
    class Customer(Persistable):
        code: str
        city: str | None = None
        vip: bool = False

    @declare_persist_db(db_name=db_name, collection_name="orders")
    class Order(Persistable):
        customer: str | None = None
        amount: float | None = None
        qty: int | None = None
        ts: dt.datetime | None = None
        tags: list[str | None] | None = None

    Customer.persist_many([Customer(code="c1", city="Oslo", vip=True),
                           Customer(code="c2", city=None), Customer(code="c4", city="Rome")])
    Order.persist_many([
        Order(customer="c1", amount=10.0, qty=1, ts=T0, tags=["a", "b"]),
        Order(customer="c1", amount=None, qty=3, ts=T0 + dt.timedelta(hours=5), tags=[]),
        Order(customer="c2", amount=2.5, qty=None, ts=T0 + dt.timedelta(days=1), tags=None),
        Order(customer="c3", amount=7.0, qty=2, ts=None, tags=["b", None]),
        Order(customer=None, amount=1.0, qty=5, ts=T0 + dt.timedelta(days=2), tags=["c"]),
        Order(customer="c2", amount=2.5, qty=1, ts=T0 + dt.timedelta(days=3), tags=["a"]),
    ])
    return Order, Customer


def _same(got: pl.DataFrame, want: pl.DataFrame, by: list[str] | None = None) -> None:
    if by:
        got, want = got.sort(by, nulls_last=True), want.sort(by, nulls_last=True)
    assert_frame_equal(got, want, check_dtypes=True)


def _one_command(commands: Any, query: Any, *, random: bool = False) -> pl.DataFrame:
    """The query run as ONE MongoDB command (engine="mongodb"); the same rows come back
    when its joins, group-bys and windows run in Polars (engine="polars")."""
    commands.clear()
    frame = query.load_polars(engine="mongodb")
    reads = commands.named("find", "aggregate")
    assert len(reads) == 1, reads
    if not random:
        _same_rows(query.load_polars(engine="polars"), frame)
    return frame  # type: ignore[no-any-return]


def _same_rows(got: pl.DataFrame, want: pl.DataFrame) -> None:
    """Equal frames up to row order (sorted by every column that sorts)."""
    flat = [c for c, t in want.schema.items() if not isinstance(t, (pl.List, pl.Struct))]
    assert got.columns == want.columns
    assert_frame_equal(got.sort(flat, nulls_last=True), want.sort(flat, nulls_last=True))


def test_head_defaults_to_five_and_sort_follows_polars(models: Any, commands: Any) -> None:
    order, _ = models
    frame = order.filter().load_polars()
    assert order.filter().head().compile().limit == 5
    for desc in (False, True):
        for last in (False, True):
            got = _one_command(commands, order.filter().sort("amount", "qty", descending=desc,
                                                             nulls_last=last))
            want = frame.sort("amount", "qty", descending=desc, nulls_last=last,
                              maintain_order=True)
            _same(got.select("amount", "qty"), want.select("amount", "qty"))
    by_expr = order.filter().sort(fld["qty"] * -1, nulls_last=True).select("qty")
    _same(_one_command(commands, by_expr),
          frame.sort(pl.col("qty") * -1, nulls_last=True).select("qty"))


def test_top_k_and_bottom_k(models: Any, commands: Any) -> None:
    order, _ = models
    frame = order.filter().load_polars()
    got = _one_command(commands, order.filter().top_k(2, by="qty").select("qty"))
    _same(got, frame.top_k(2, by="qty").select("qty"))
    got = _one_command(commands, order.filter().bottom_k(3, by="amount").select("amount"))
    _same(got, frame.bottom_k(3, by="amount").select("amount"), by=["amount"])


def test_select_lists_drop_and_rename(models: Any, commands: Any) -> None:
    order, _ = models
    frame = order.filter().load_polars()
    _same(_one_command(commands, order.filter().select(["customer", "qty"])),
          frame.select(["customer", "qty"]))
    _same(_one_command(commands, order.filter().drop("tags", "ts")), frame.drop("tags", "ts"))
    renamed = order.filter().rename({"qty": "quantity"})
    _same(_one_command(commands, renamed), frame.rename({"qty": "quantity"}))
    assert renamed.compile().operation == "find"
    with pytest.raises(lm.FieldNotFoundError, match="did you mean 'qty'"):
        order.filter().drop("qtx")


def test_unique_and_value_counts(models: Any, commands: Any) -> None:
    order, _ = models
    frame = order.filter().load_polars()
    got = _one_command(commands, order.filter().select("customer", "amount").unique())
    _same(got, frame.select("customer", "amount").unique(), by=["customer", "amount"])
    got = _one_command(commands, order.filter().unique(subset="customer", keep="none")
                       .select("customer"))
    _same(got, frame.unique(subset="customer", keep="none").select("customer"),
          by=["customer"])
    got = _one_command(commands, order.filter().group_by("customer").len())
    _same(got, frame.group_by("customer").len(), by=["customer"])
    got = _one_command(commands, order.filter().group_by("customer").agg(
        [lm.len().alias("n"), fld["qty"].sum()]))
    _same(got, frame.group_by("customer").agg([pl.len().alias("n"), pl.col("qty").sum()]),
          by=["customer"])


def test_explode_sample_collect(models: Any, commands: Any) -> None:
    order, _ = models
    frame = order.filter().load_polars()
    got = _one_command(commands, order.filter().select("customer", "tags").explode("tags"))
    _same(got, frame.select("customer", "tags").explode("tags"), by=["customer", "tags"])
    sample = _one_command(commands, order.filter().sample(3), random=True)
    assert sample.height == 3 and sample["id"].n_unique() == 3
    assert set(sample["id"]) <= set(frame["id"])
    assert "$sample" in str(order.filter().sample(3).explain())
    _same(order.filter().collect(), frame)
    assert order.filter().select("qty", big=fld["qty"] > 2).collect_schema() == pl.Schema(
        {"qty": pl.Int64, "big": pl.Boolean})
    with pytest.raises(lm.PlanError, match="seed"):
        order.filter().sample(2, seed=1)


def test_describe_is_one_aggregate_shaped_like_polars(models: Any, commands: Any) -> None:
    order, _ = models
    frame = order.filter().select("customer", "amount", "qty").load_polars()
    commands.clear()
    got = order.filter().select("customer", "amount", "qty").describe()
    assert len(commands.named("find", "aggregate")) == 1
    _same(got, frame.describe(interpolation="equiprobable"))


def test_join_inner_and_left(models: Any, commands: Any) -> None:
    order, customer = models
    orders, customers = order.filter().load_polars(), customer.filter().load_polars()
    for how in ("inner", "left"):
        query = order.filter().join(customer, left_on="customer", right_on="code", how=how)
        got = _one_command(commands, query)
        want = orders.join(customers, left_on="customer", right_on="code", how=how)
        _same(got, want.select(got.columns), by=["id"])
        assert got.columns == want.columns
    vip = customer.filter(fld["vip"] == True)  # noqa: E712
    query = order.filter(fld["qty"] > 0).join(vip, left_on="customer", right_on="code")
    lookup = query.compile().pipeline[1]["$lookup"]
    assert {"$match": {"vip": {"$eq": True}}} in lookup["pipeline"]  # pushed into the lookup
    got = _one_command(commands, query.select("customer", "qty", "city"))
    want = orders.filter(pl.col("qty") > 0).join(customers.filter(pl.col("vip")),
                                                 left_on="customer", right_on="code")
    _same(got, want.select("customer", "qty", "city"), by=["qty"])
    with pytest.raises(lm.PlanError, match="different types"):
        order.filter().join(customer, left_on="qty", right_on="code")


def test_nested_fields(db_name: str) -> None:
    from pydantic import BaseModel

    class Address(BaseModel):
        city: str

    @declare_persist_db(db_name=db_name, collection_name="people")
    class Person(Persistable):
        address: Address

    Person.persist_many([Person(address=Address(city=c)) for c in ("Oslo", "Rome")])
    assert Person.filter(fld["address"]["city"] == "Oslo").count() == 1
    assert Person.filter(fld["address"].struct.field("city") == "Rome").count() == 1
    got = Person.filter().select(city=lm.col("address").struct.field("city")).sort("city")
    assert got.load_polars()["city"].to_list() == ["Oslo", "Rome"]


WINDOWS = {
    "rank": lambda: fld["qty"].rank("min").over("customer"),
    "rank_avg": lambda: fld["qty"].rank().over("customer"),
    "rank_dense_desc": lambda: fld["qty"].rank("dense", descending=True),
    "rank_max": lambda: fld["qty"].rank("max"),
    "cum_sum": lambda: fld["qty"].cum_sum().over("customer", order_by="ts"),
    "rolling": lambda: fld["qty"].rolling_mean(2).over(order_by="ts"),
    "shift": lambda: fld["qty"].shift().over("customer", order_by="ts"),
    "shift_back": lambda: fld["amount"].shift(-1).over(order_by="ts", descending=True),
    "first": lambda: fld["qty"].first().over("customer", order_by="ts"),
    "last": lambda: fld["qty"].last().over("customer", order_by="ts"),
    "sum": lambda: fld["amount"].sum().over("customer"),
    "mean": lambda: fld["qty"].mean().over("customer"),
}


@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_windows_equal_polars(models: Any, commands: Any, name: str) -> None:
    order, _ = models
    frame = order.filter().load_polars()
    expr = WINDOWS[name]().alias("w")
    query = order.filter().with_columns(expr).select("id", "w")
    assert "$setWindowFields" in str(query.explain(engine="mongodb"))
    got = _one_command(commands, query)
    from loom_frames.schema import model_resolver

    want = frame.select("id", expr.to_polars(model_resolver(order)))
    _same(got, want, by=["id"])
