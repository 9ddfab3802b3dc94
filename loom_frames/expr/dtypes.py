"""The type of every expression's values: one rule for the plan, both compilers and loads.

:func:`arrow_type` says which Arrow type a computed column holds. The query plan types
MongoDB's result with it (the loader casts what the server sends to it: an ``int`` count
becomes ``uint32``), and the Polars compiler produces exactly that dtype (a test checks
every node class), so a frame computed by MongoDB and one computed by Polars from the same
documents compare equal, dtypes included.

The types are Polars' own for the same expression wherever that is a free choice:
counts, ``n_unique()``, ``list.len()`` and sums of booleans are ``uint32``; ``dt.year()``
is ``int32``; the other date parts are ``int8``; ``mean``/``std``/``var``/``median``/
``quantile`` are ``float64``. Two rules are ours, because MongoDB computes them so:
arithmetic and sums on integers are ``int64`` whatever the operands' width (Polars would
wrap ``int8`` or ``uint32`` values and sum ``int32`` into ``int32``; MongoDB widens), and
datetimes are milliseconds (MongoDB stores nothing finer). ``dt.truncate(..., time_zone=tz)`` keeps ``tz`` as the result's
zone, as Polars' ``convert_time_zone(tz).dt.truncate(...)`` does.

>>> from loom_frames.expr import fld, Kind, SimpleResolver
>>> r = SimpleResolver("F", {"x": Kind.FLOAT, "t": Kind.DATETIME, "ok": Kind.BOOL})
>>> arrow_type((fld["x"] > 0).sum().bind(r).node)
DataType(uint32)
>>> arrow_type(fld["t"].dt.month().bind(r).node)
DataType(int8)
>>> arrow_type(fld["t"].dt.truncate("1d", time_zone="Europe/London").bind(r).node)
TimestampType(timestamp[ms, tz=Europe/London])
"""

from __future__ import annotations

import pyarrow as pa

from . import nodes as n
from .bind import Kind, kind_of

__all__ = ["COMPUTED_METADATA", "arrow_type", "is_narrow_int"]

COMPUTED_METADATA = b"loom.computed"
"""Arrow field metadata of a column MongoDB computes: its expression as source text (the
plan sets it, the loader names it when a computed value does not fit)."""

_MS_UTC = pa.timestamp("ms", tz="UTC")
_KIND_TYPES: dict[Kind, pa.DataType] = {
    Kind.INT: pa.int64(), Kind.FLOAT: pa.float64(), Kind.STR: pa.string(),
    Kind.BOOL: pa.bool_(), Kind.DATETIME: _MS_UTC, Kind.DATE: pa.date32(),
    Kind.OBJECTID: pa.string(), Kind.UUID: pa.string(),
}
_FIXED: dict[type[n.Node], pa.DataType] = {
    n.Count: pa.uint32(), n.NUnique: pa.uint32(), n.ListLen: pa.uint32(),
    n.Year: pa.int32(), n.Month: pa.int8(), n.Day: pa.int8(), n.Hour: pa.int8(),
    n.Weekday: pa.int8(), n.Mean: pa.float64(), n.Std: pa.float64(), n.Var: pa.float64(),
    n.Median: pa.float64(), n.Quantile: pa.float64(), n.Lower: pa.string(),
    n.Upper: pa.string(), n.LenChars: pa.uint32(), n.Len: pa.uint32(), n.Slice: pa.string(),
    n.Replace: pa.string(), n.Strftime: pa.string(), n.ToDate: pa.date32(),
    n.RollingMean: pa.float64(),
}
_CASTS: dict[str, pa.DataType] = {
    "Int64": pa.int64(), "Float64": pa.float64(), "String": pa.string(), "Boolean": pa.bool_(),
    "Datetime": _MS_UTC, "Date": pa.date32(),
}
_KEEPS_TYPE = (n.Min, n.Max, n.First, n.Last, n.Alias, n.Shift, n.Over)


def arrow_type(node: n.Node) -> pa.DataType | None:
    """The Arrow type of ``node``'s values (None when unknown: unbound fields, decimals,
    lists, structs, enums; the plan then uses the stored column's own type).

    >>> from loom_frames.expr import fld, Kind, SimpleResolver
    >>> r = SimpleResolver("F", {"a": Kind.INT, "tags": Kind.LIST})
    >>> arrow_type(fld["tags"].list.len().bind(r).node), arrow_type((fld["a"] / 2).bind(r).node)
    (DataType(uint32), DataType(double))
    """
    fixed = _FIXED.get(type(node))
    if fixed is not None:
        return fixed
    if isinstance(node, n.PREDICATES):
        return pa.bool_()
    if isinstance(node, _KEEPS_TYPE):
        return arrow_type(node.arg)
    if isinstance(node, n.Cast):
        return _CASTS[node.dtype]
    if isinstance(node, n.Rank):
        return pa.float64() if node.method == "average" else pa.uint32()
    if isinstance(node, (n.When, n.FillNull)):
        return _widened(_KIND_TYPES.get(kind_of(node)))
    if isinstance(node, (n.Sum, n.CumSum)):
        arg = arrow_type(node.arg)
        if arg is not None and pa.types.is_boolean(arg):
            return pa.uint32()  # Polars counts booleans as uint32
        return _widened(arg)  # a sum of years (int32) or lengths (uint32) outgrows them
    if isinstance(node, (n.Arithmetic, n.Neg, n.Abs, n.Round)):
        return _widened(_KIND_TYPES.get(kind_of(node)))
    if isinstance(node, n.Truncate):
        if kind_of(node.arg) is Kind.DATE:
            return pa.date32()
        return pa.timestamp("ms", tz=node.time_zone) if node.time_zone else _MS_UTC
    if isinstance(node, (n.Field, n.Literal)):
        return _KIND_TYPES.get(kind_of(node))
    return None


def _widened(arrow: pa.DataType | None) -> pa.DataType | None:
    """Integers computed on are int64 (MongoDB widens where Polars would wrap)."""
    return pa.int64() if arrow is not None and pa.types.is_integer(arrow) else arrow


def is_narrow_int(arrow: pa.DataType | None) -> bool:
    """An integer type other than int64 (computed in 64 bits before arithmetic).

    >>> is_narrow_int(pa.int8()), is_narrow_int(pa.int64())
    (True, False)
    """
    return arrow is not None and pa.types.is_integer(arrow) and arrow != pa.int64()
