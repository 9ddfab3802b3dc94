"""``Query.describe()``: summary statistics of every column in ONE MongoDB aggregate.

One ``$group`` computes, per column, the count of values and of nulls, the mean, the
sample standard deviation, the minimum, the percentiles (MongoDB's discrete
``$percentile``, Polars' ``interpolation="equiprobable"``) and the maximum, for the
columns where Polars' ``describe()`` has them; the single result row is then shaped
exactly as Polars shapes its own: a ``statistic`` column, one column per input column,
``Float64`` for numeric and boolean columns and ``String`` for the others.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .errors import PlanError
from .expr.bind import Kind
from .plan import frame_after

if TYPE_CHECKING:
    import polars as pl

    from .query import Query

__all__ = ["describe"]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_NUMERIC = (Kind.INT, Kind.FLOAT, Kind.DECIMAL)
_TEMPORAL = (Kind.DATETIME, Kind.DATE)
_NESTED = (Kind.LIST, Kind.STRUCT)


def _quantiles(percentiles: Sequence[float] | float | None) -> list[float]:
    values = [] if percentiles is None else [percentiles] if isinstance(
        percentiles, (int, float)) else list(percentiles)
    for q in values:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q <= 1:
            raise PlanError(f"describe(percentiles=...) takes values in [0, 1], got {q!r}")
    return sorted(set(float(q) for q in values))


def describe(query: Query[Any], percentiles: Sequence[float] | float | None) -> pl.DataFrame:
    """The statistics frame (see the module docstring)."""
    import polars as pl

    from .schema import Column

    quantiles = _quantiles(percentiles)
    frame = frame_after(query.source, query.steps)
    if not frame.columns:
        raise PlanError("describe() needs known columns. Hint: pass schema= to agg().")
    resolver = frame.resolver()
    group: dict[str, Any] = {"_id": None}
    fields: list[pa.Field] = []
    for i, col in enumerate(frame.columns):
        x = "$" + resolver.resolve(col.name).path
        present = {"$gt": [x, None]}
        group[f"c{i}_count"] = {"$sum": {"$cond": [present, 1, 0]}}
        group[f"c{i}_nulls"] = {"$sum": {"$cond": [present, 0, 1]}}
        fields += [pa.field(f"c{i}_count", pa.int64()), pa.field(f"c{i}_nulls", pa.int64())]
        value: Any = {"$subtract": [x, _EPOCH]} if col.kind in _TEMPORAL else (
            {"$toInt": x} if col.kind is Kind.BOOL else x)
        if col.kind in (*_NUMERIC, *_TEMPORAL, Kind.BOOL):
            group[f"c{i}_mean"] = {"$avg": value}
            fields.append(pa.field(f"c{i}_mean", pa.float64()))
        if col.kind in _NUMERIC:
            group[f"c{i}_std"] = {"$stdDevSamp": x}
            fields.append(pa.field(f"c{i}_std", pa.float64()))
        if col.kind not in _NESTED and col.type is not None:
            for stat, op in (("min", "$min"), ("max", "$max")):
                group[f"c{i}_{stat}"] = {op: x}
                renamed = Column(f"c{i}_{stat}", f"c{i}_{stat}", col.kind, col.type,
                                 values=col.values)
                fields.append(renamed.arrow_field())
        if quantiles and col.kind in (*_NUMERIC, *_TEMPORAL):
            group[f"c{i}_q"] = {"$percentile": {"input": value, "p": quantiles,
                                                "method": "approximate"}}
            fields.append(pa.field(f"c{i}_q", pa.list_(pa.float64())))
    stats = query.agg([{"$group": group}, {"$project": {"_id": 0}}],
                      schema=pa.schema(fields)).load_polars()
    row = stats.row(0, named=True) if stats.height else {}
    metrics = ["count", "null_count", "mean", "std", "min",
               *(f"{q * 100:g}%" for q in quantiles), "max"]
    schema = query.collect_schema()
    summary: dict[str, list[Any]] = {}
    for i, col in enumerate(frame.columns):
        dtype = schema[col.name]
        numeric = col.kind in _NUMERIC or col.kind in (Kind.BOOL, *_NESTED)
        q = row.get(f"c{i}_q") or [None] * len(quantiles)
        mean = row.get(f"c{i}_mean")
        if col.kind in _TEMPORAL:
            mean = _temporal(mean, dtype)
            q = [_temporal(v, dtype) for v in q]
        values = [row.get(f"c{i}_count", 0), row.get(f"c{i}_nulls", 0), mean,
                  row.get(f"c{i}_std"), row.get(f"c{i}_min"), *q, row.get(f"c{i}_max")]
        if not stats.height:  # no rows: Polars counts 0 and has no statistics
            values = [0, 0, *[None] * (len(metrics) - 2)]
        summary[col.name] = [None if v is None else float(v) if numeric else str(v)
                             for v in values]
    out = pl.from_dict(summary)
    out.insert_column(0, pl.Series("statistic", metrics))
    return out


def _temporal(millis: float | None, dtype: Any) -> Any:
    """A mean or percentile of milliseconds as the column's own type (Polars' display)."""
    import polars as pl

    if millis is None:
        return None
    value = pl.Series([int(millis)], dtype=pl.Int64).cast(pl.Datetime("ms", "UTC"))
    return value.cast(dtype).item()
