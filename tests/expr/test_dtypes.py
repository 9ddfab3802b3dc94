"""One type rule: ``dtypes.arrow_type`` is what the plan loads and what Polars computes.

Each node class has a row below (a test fails when a node class is added without one):
the expected dtype, which must be the Arrow type the plan gives MongoDB's result and the
dtype the Polars compiler produces, as a value and as an aggregation in a group-by.
That the server's values load into those types is test_typed_load.py's job.
"""

from __future__ import annotations

import datetime as dt
import inspect

import polars as pl
import pyarrow as pa
import pytest

from loom_frames.expr import Expr, FieldRef, Kind, SimpleResolver, fld, lit, when
from loom_frames.expr import len as lm_len
from loom_frames.expr import nodes as n
from loom_frames.expr.dtypes import arrow_type


def _list(name: str, item: Kind) -> FieldRef:
    return FieldRef(name, (name,), Kind.LIST, item=FieldRef(name, (name,), item))


R = SimpleResolver("T", {"k": Kind.INT, "a": Kind.INT, "b": Kind.FLOAT, "s": Kind.STR, "ok": Kind.BOOL,
                         "t": Kind.DATETIME, "d": Kind.DATE, "tags": _list("tags", Kind.STR)})
FRAME = pl.DataFrame({
    "k": [1, 1, 2], "a": [1, None, 3], "b": [0.5, float("nan"), None], "s": ["x", "Y", None],
    "ok": [True, None, False],
    "t": [dt.datetime(2024, 3, 10, 6, 30), None, dt.datetime(1, 1, 1)],
    "d": [dt.date(2024, 3, 10), None, dt.date(2000, 1, 1)], "tags": [["a"], None, []],
}, schema_overrides={"t": pl.Datetime("ms", "UTC")})

a, b, s, ok, t, d, tags = (fld[c] for c in ("a", "b", "s", "ok", "t", "d", "tags"))
NY = "America/New_York"
CASES: list[tuple[Expr, pl.DataType]] = [
    # values
    (a + 1, pl.Int64()), (a - b, pl.Float64()), (a * 2, pl.Int64()), (a / 2, pl.Float64()),
    (a % 3, pl.Int64()), (-b, pl.Float64()), (a.abs(), pl.Int64()), (b.round(1), pl.Float64()),
    (t.dt.year(), pl.Int32()), (t.dt.month(), pl.Int8()), (t.dt.day(time_zone=NY), pl.Int8()),
    (t.dt.hour(), pl.Int8()), (d.dt.weekday(), pl.Int8()),
    (t.dt.hour() * 1000, pl.Int64()), (tags.list.len() - 5, pl.Int64()),
    (t.dt.truncate("1h"), pl.Datetime("ms", "UTC")),
    (t.dt.truncate("2d", time_zone=NY), pl.Datetime("ms", NY)),
    (d.dt.truncate("1mo"), pl.Date()),
    (s.str.to_lower(), pl.String()), (s.str.to_upper(), pl.String()),
    (tags.list.len(), pl.UInt32()),
    # conditions
    (a == 1, pl.Boolean()), (a != b, pl.Boolean()), (a < 1, pl.Boolean()),
    (a <= 1, pl.Boolean()), (b > 1, pl.Boolean()), (b >= 1, pl.Boolean()),
    (a.is_in([1]), pl.Boolean()), (a.not_in([1]), pl.Boolean()), (a.is_null(), pl.Boolean()),
    (a.is_not_null(), pl.Boolean()), (a.between(1, 2), pl.Boolean()),
    (s.starts_with("x"), pl.Boolean()), (s.ends_with("x"), pl.Boolean()),
    (s.contains("x"), pl.Boolean()), (s.regex("^x"), pl.Boolean()),
    (tags.list.contains("a"), pl.Boolean()), ((a > 1) & ok, pl.Boolean()),
    ((a > 1) | ok, pl.Boolean()), (~ok, pl.Boolean()),
    # aggregations
    (a.count(), pl.UInt32()), (a.n_unique(), pl.UInt32()), (s.n_unique(), pl.UInt32()),
    (a.sum(), pl.Int64()), (b.sum(), pl.Float64()), (ok.sum(), pl.UInt32()),
    (a.is_null().sum(), pl.UInt32()), ((b > 0).sum(), pl.UInt32()),
    (t.dt.year().sum(), pl.Int64()), (tags.list.len().sum(), pl.Int64()),
    (a.mean(), pl.Float64()), (ok.mean(), pl.Float64()), (a.std(), pl.Float64()),
    (a.var(), pl.Float64()), (a.median(), pl.Float64()), (a.quantile(0.3), pl.Float64()),
    (a.min(), pl.Int64()), (t.dt.hour().max(), pl.Int8()), (s.first(), pl.String()),
    (ok.last(), pl.Boolean()), (ok.min(), pl.Boolean()),
    (t.dt.truncate("1d", time_zone=NY).max(), pl.Datetime("ms", NY)),
    (a.alias("x"), pl.Int64()),
    # issue 15: Polars-shaped expressions
    (a // 2, pl.Int64()), (b // 2, pl.Float64()), (a ** 2, pl.Int64()), (b ** 2, pl.Float64()),
    (a ** 0.5, pl.Float64()), (b % 0.5, pl.Float64()),
    (a.cast("Float64"), pl.Float64()), (b.cast(pl.Int64), pl.Int64()),
    (a.cast("String"), pl.String()), (ok.cast("Int64"), pl.Int64()),
    (a.cast("Boolean"), pl.Boolean()), (a.cast(pl.Datetime("ms", "UTC")), pl.Datetime("ms", "UTC")),
    (t.cast("Date"), pl.Date()), (d.cast("Datetime"), pl.Datetime("ms", "UTC")),
    (a.fill_null(0), pl.Int64()), (a.fill_null(0.5), pl.Float64()), (s.fill_null("-"), pl.String()),
    (when(a > 1).then(lit(1)).otherwise(lit(0)), pl.Int64()),
    (when(a > 1).then(b).otherwise(lit(0)), pl.Float64()),
    (when(ok).then(lit("y")).when(a > 1).then(s), pl.String()),
    (s.str.len_chars(), pl.UInt32()), (s.str.slice(1, 2), pl.String()),
    (s.str.replace("x", "y"), pl.String()), (s.str.replace_all("x", "y"), pl.String()),
    (t.dt.date(), pl.Date()), (t.dt.strftime("%Y-%m"), pl.String()),
    (lm_len(), pl.UInt32()),
    (a.rank(), pl.Float64()), (a.rank("dense").over("k"), pl.UInt32()),
    (a.cum_sum().over("k", order_by="t"), pl.Int64()), (ok.cum_sum(), pl.UInt32()),
    (a.rolling_mean(2), pl.Float64()), (a.shift(), pl.Int64()),
    (s.first().over("k"), pl.String()), (a.sum().over("k"), pl.Int64()),
]


@pytest.mark.parametrize(("expr", "dtype"), CASES, ids=[repr(e) for e, _ in CASES])
def test_plan_type_and_polars_dtype_agree(expr: Expr, dtype: pl.DataType) -> None:
    bound = expr.bind(R)
    arrow = arrow_type(bound.node)
    assert arrow is not None
    assert pl.from_arrow(pa.array([], type=arrow)).dtype == dtype  # type: ignore[union-attr]
    compiled = bound.to_polars()
    if isinstance(_strip(bound.node), (n.Aggregation, n.Len)):
        out = FRAME.group_by("k").agg(compiled.alias("v"))["v"]
        assert out.dtype == dtype, "in a group-by"
        out = FRAME.select(compiled.alias("v"))["v"]
    else:
        out = FRAME.select(compiled.alias("v"))["v"]
    assert out.dtype == dtype


def test_every_node_class_has_a_type_row() -> None:
    covered = {type(_strip(e.node)) for e, _ in CASES} | {type(e.node) for e, _ in CASES}
    concrete = {cls for _, cls in inspect.getmembers(n, inspect.isclass)
                if issubclass(cls, n.Node) and cls is not n.Node and not cls.__subclasses__()}
    # Field / Literal: the stored column's or the value's own type; Exists: MongoDB only.
    missing = concrete - covered - {n.Field, n.Literal, n.Exists}
    assert not missing, f"add a dtype row for {sorted(c.__name__ for c in missing)}"


def test_unknown_types_are_none() -> None:
    assert arrow_type((fld["x"] + 1).node) is None  # unbound: the plan refuses it
    assert arrow_type(fld["x"].sum().node) is None


def _strip(node: n.Node) -> n.Node:
    while isinstance(node, n.Alias):
        node = node.arg
    return node
