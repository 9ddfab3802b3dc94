"""Tree -> ``polars.Expr``: the same rows MongoDB selects, on the frame of the same data.

MongoDB's query semantics are the definition (docs/semantics.md); this compiler matches
them on a frame where missing and null both load as null:

* every condition is two-valued: a comparison with null is false, never null, so
  ``~``, ``!=`` and ``not_in`` keep rows whose value is null (``fill_null(False)``);
* NaN equals NaN and is neither smaller nor greater than any number (Polars orders NaN
  above every number, so ``>``-style comparisons get an ``is_nan`` guard);
* a comparison with a list field holds when any element satisfies it;
* ``%`` truncates like ``$mod``, ``/`` and ``%`` by zero give null, ``to_lower`` /
  ``to_upper`` map ASCII letters only, ``median`` / ``quantile`` are discrete.

>>> import polars as pl
>>> from loom_frames.expr import fld
>>> df = pl.DataFrame({"b": [1.0, float("nan"), None]})
>>> df.filter(compile_polars((fld["b"] > 0).node))["b"].to_list()
[1.0]
"""

from __future__ import annotations

import datetime as _dt
import operator
from collections.abc import Callable
from functools import reduce, singledispatch
from typing import Any, NamedTuple

import polars as pl
import pyarrow as pa
from bson import Decimal128, ObjectId

from ..errors import InvalidExpressionError, UnsupportedExpressionError
from . import nodes as n
from .bind import Kind, item_ref, kind_of
from .dtypes import arrow_type, is_narrow_int
from .render import to_source

__all__ = ["compile_polars"]

_CMP: dict[type[n.Node], Callable[[Any, Any], pl.Expr]] = {
    n.Eq: operator.eq, n.Lt: operator.lt, n.Le: operator.le, n.Gt: operator.gt,
    n.Ge: operator.ge,
}
_ARITH: dict[type[n.Node], Callable[[Any, Any], pl.Expr]] = {
    n.Add: operator.add, n.Sub: operator.sub, n.Mul: operator.mul,
}
_DATE_PARTS: dict[type[n.Node], Callable[[pl.Expr], pl.Expr]] = {  # Polars' dtypes: int32/int8
    n.Year: lambda e: e.dt.year(), n.Month: lambda e: e.dt.month(),
    n.Day: lambda e: e.dt.day(), n.Hour: lambda e: e.dt.hour(),
    n.Weekday: lambda e: e.dt.weekday(),
}
_UPPER = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
_LOWER = [chr(c) for c in range(ord("a"), ord("z") + 1)]
_CASE: dict[type[n.Node], tuple[list[str], list[str]]] = {
    n.Lower: (_UPPER, _LOWER), n.Upper: (_LOWER, _UPPER),
}
_AGGREGATIONS: dict[type[n.Node], Callable[[pl.Expr], pl.Expr]] = {
    n.Count: lambda e: e.count(), n.Sum: lambda e: e.sum(), n.Mean: lambda e: e.mean(),
    n.Max: lambda e: e.max(), n.First: lambda e: e.first(), n.Last: lambda e: e.last(),
    n.Std: lambda e: e.std(ddof=1), n.Var: lambda e: e.var(ddof=1),
    n.Median: lambda e: e.fill_nan(None).quantile(0.5, interpolation="equiprobable"),
    n.NUnique: lambda e: e.drop_nulls().n_unique(),
}
_DTYPES: dict[Kind, pl.DataType] = {
    Kind.INT: pl.Int64(), Kind.FLOAT: pl.Float64(), Kind.STR: pl.String(),
    Kind.BOOL: pl.Boolean(), Kind.DATETIME: pl.Datetime("ms", "UTC"), Kind.DATE: pl.Date(),
    Kind.OBJECTID: pl.String(), Kind.UUID: pl.String(),
}
_NUMBER = (int, float)
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MILLISECOND = _dt.timedelta(milliseconds=1)
_FIRST_INSTANT = pl.lit(-62_135_596_800_000, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC"))
_FIRST_DAY = pl.lit(_dt.date(1, 1, 1))
_FIRST_LOCAL = pl.lit(-62_135_596_800_000, dtype=pl.Int64).cast(pl.Datetime("ms"))


def compile_polars(node: n.Node) -> pl.Expr:
    """A ``polars.Expr``: a two-valued mask for a condition, else values or an aggregation.

    >>> import polars as pl
    >>> from loom_frames.expr import fld
    >>> df = pl.DataFrame({"tags": [["a", "b"], [], None]})
    >>> df.select(compile_polars((fld["tags"].list.len() != 2).node))["tags"].to_list()
    [False, True, True]
    """
    inner = node.arg if isinstance(node, n.Alias) else node
    if isinstance(inner, n.Len):
        return pl.len().alias(n.output_name(node))
    if isinstance(inner, (n.Over, *n.WINDOW_FUNCTIONS)):
        return _window(inner).alias(n.output_name(node))
    if isinstance(inner, n.Aggregation):
        return _aggregate(inner).alias(n.output_name(node))
    if isinstance(inner, n.PREDICATES):
        out = _pred(inner)
        return out.alias(node.name) if isinstance(node, n.Alias) else out
    return _val(inner).alias(n.output_name(node))


# --------------------------------------------------------------------------- values
def pl_value(value: Any) -> Any:
    """A frozen literal as it appears in a frame (an ObjectId is its hex string)."""
    if isinstance(value, tuple):
        return [pl_value(v) for v in value]
    if isinstance(value, n.Doc):
        return {k: pl_value(v) for k, v in value.items}
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if type(value).__name__ == "UUID":
        return str(value)
    return value


def _literal(value: Any) -> pl.Expr:
    """``pl.lit`` of a frozen literal (datetimes built from milliseconds: ``pl.lit`` of an
    aware datetime costs a query run; every datetime literal is UTC milliseconds)."""
    if isinstance(value, _dt.datetime):
        millis = (value - _EPOCH) // _MILLISECOND
        return pl.lit(millis, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC"))
    return pl.lit(pl_value(value))


def _column(node: n.Field) -> pl.Expr:
    columns = node.ref.columns if node.ref is not None else tuple(node.name.split("."))
    expr = pl.col(columns[0])
    for name in columns[1:]:
        expr = expr.struct.field(name)
    return expr


class _Side(NamedTuple):
    expr: pl.Expr
    kind: Kind
    literal: bool
    nan_literal: bool


def _side(node: n.Node) -> _Side:
    if isinstance(node, n.Literal):
        return _Side(_literal(node.value), kind_of(node), True, n.is_nan(node.value))
    return _Side(_comparable(node), kind_of(node), False, False)


def _comparable(node: n.Node) -> pl.Expr:
    """A value as comparisons see it: datetimes in UTC (literals are UTC, and Polars does
    not compare datetimes of two zones), integers in 64 bits (never wrapped)."""
    expr = _val(node)
    arrow = arrow_type(node)
    if arrow is not None and getattr(arrow, "tz", "UTC") not in (None, "UTC"):
        return expr.dt.convert_time_zone("UTC")
    return _int64(expr, arrow)


def _int64(expr: pl.Expr, arrow: Any) -> pl.Expr:
    return expr.cast(pl.Int64) if is_narrow_int(arrow) else expr


def _nan_test(side: _Side, other: _Side) -> pl.Expr | None:
    """An ``is NaN`` test for ``side`` when it may hold NaN, else None."""
    if side.literal:
        return None
    if side.kind is Kind.FLOAT or side.kind is Kind.ANY and other.kind in (Kind.INT, Kind.FLOAT):
        return side.expr.is_nan()
    if side.kind is Kind.ANY and other.kind is Kind.ANY and not other.literal:
        return side.expr.cast(pl.Float64, strict=False).is_nan()  # dtype unknown
    return None


def _compare(op: type[n.Node], x: _Side, y: _Side) -> pl.Expr:
    """``x op y`` with MongoDB's meaning, as a two-valued mask."""
    if op is n.Ne:
        return ~_compare(n.Eq, x, y)
    if x.nan_literal or y.nan_literal:  # NaN equals only NaN and is never < or >
        other, lit = (y, x) if x.nan_literal else (x, y)
        if op in (n.Lt, n.Gt):
            return pl.lit(False)
        test = _nan_test(other, lit._replace(kind=Kind.FLOAT))
        return test.fill_null(False) if test is not None else pl.lit(False)
    out = _CMP[op](x.expr, y.expr)
    big, small = (x, y) if op in (n.Gt, n.Ge) else (y, x)
    big_nan = None if op is n.Eq else _nan_test(big, small)
    if big_nan is not None:  # Polars sorts NaN above every number
        small_nan = None if op in (n.Lt, n.Gt) else _nan_test(small, big)
        out = out & (~big_nan if small_nan is None else ~big_nan | small_nan)
    return out.fill_null(False)


def _element(list_node: n.Node) -> _Side:
    item = item_ref(list_node)
    return _Side(pl.element(), item.kind if item is not None else Kind.ANY, False, False)


def _any(list_expr: pl.Expr, condition: pl.Expr) -> pl.Expr:
    return list_expr.list.eval(condition).list.any().fill_null(False)


# ----------------------------------------------------------------------- conditions
@singledispatch
def _pred(node: n.Node) -> pl.Expr:
    if isinstance(node, n.PREDICATES):
        raise UnsupportedExpressionError(f"no Polars translation for {type(node).__name__}: "
                                         f"{to_source(node)}")
    if isinstance(node, n.Aggregation):
        raise InvalidExpressionError(f"{to_source(node)} is an aggregation, not a condition.")
    if isinstance(node, n.Field) and kind_of(node) in (Kind.BOOL, Kind.ANY):
        return _column(node).fill_null(False)  # a boolean field used as a condition
    if isinstance(node, n.Alias):
        return _pred(node.arg)
    raise InvalidExpressionError(f"{to_source(node)} is not a condition.")


@_pred.register
def _(node: n.Comparison) -> pl.Expr:
    left, right = node.left, node.right
    if item_ref(left) is not None:
        if isinstance(right, n.Literal) and isinstance(right.value, tuple):  # whole list
            item = item_ref(left)
            dtype = _DTYPES.get(item.kind) if item is not None else None
            value = pl.lit(pl_value(right.value), dtype=pl.List(dtype) if dtype else None)
            same = (_val(left) == value).fill_null(False)
            return ~same if isinstance(node, n.Ne) else same
        op = n.Eq if isinstance(node, n.Ne) else type(node)
        found = _any(_val(left), _compare(op, _element(left), _side(right)))
        return ~found if isinstance(node, n.Ne) else found
    return _compare(type(node), _side(left), _side(right))


def _series(values: list[Any], kind: Kind) -> tuple[pl.Series, pl.DataType | None]:
    """The values as a Series typed like the column, and a cast for untyped columns."""
    if kind is Kind.INT:
        ints = [int(v) for v in values if isinstance(v, int) or isinstance(v, float)
                and v.is_integer() and -(2**63) <= v < 2**63]  # 2.5 never equals an int
        return pl.Series(ints, dtype=pl.Int64), None
    if kind is Kind.DATE:
        days = [v.date() if isinstance(v, _dt.datetime) else v for v in values
                if not isinstance(v, _dt.datetime) or v.time() == _dt.time()]
        return pl.Series(days, dtype=pl.Date), None
    dtype = _DTYPES.get(kind)
    if dtype is not None:
        return pl.Series([pl_value(v) for v in values], dtype=dtype, strict=False), None
    if values and all(isinstance(v, _NUMBER) and not isinstance(v, bool) for v in values):
        return pl.Series([float(v) for v in values], dtype=pl.Float64), pl.Float64()
    return pl.Series([pl_value(v) for v in values], strict=False), None


def _membership(expr: pl.Expr, kind: Kind, values: tuple[n.Literal, ...]) -> pl.Expr:
    present = [v.value for v in values if v.value is not None]
    out = pl.lit(False)
    if present:
        series, cast = _series(present, kind)
        target = expr.cast(cast) if cast is not None else expr
        out = target.is_in(pl.lit(series).implode()) if len(series) else pl.lit(False)
    if len(present) < len(values):
        out = out | expr.is_null()
    return out.fill_null(False)


@_pred.register
def _(node: n.IsIn) -> pl.Expr:
    item = item_ref(node.arg)
    if item is None:
        return _membership(_comparable(node.arg), kind_of(node.arg), node.values)
    x = _val(node.arg)
    found = _any(x, _membership(pl.element(), item.kind, node.values))
    return found | x.is_null() if any(v.value is None for v in node.values) else found


@_pred.register
def _(node: n.NotIn) -> pl.Expr:
    return ~_pred(n.IsIn(node.arg, node.values))


@_pred.register
def _(node: n.IsNull) -> pl.Expr:
    return _val(node.arg).is_null()


@_pred.register
def _(node: n.IsNotNull) -> pl.Expr:
    return _val(node.arg).is_not_null()


@_pred.register
def _(node: n.Exists) -> pl.Expr:
    raise UnsupportedExpressionError(
        f"{to_source(node)} cannot be evaluated on a frame: missing fields and nulls both "
        "load as null. Hint: use .is_not_null() / .is_null(), or filter in MongoDB.")


@_pred.register
def _(node: n.Between) -> pl.Expr:
    low = n.Ge if node.closed in ("both", "left") else n.Gt
    high = n.Le if node.closed in ("both", "right") else n.Lt
    if item_ref(node.arg) is not None:
        el = _element(node.arg)
        both = _compare(low, el, _side(node.low)) & _compare(high, el, _side(node.high))
        return _any(_val(node.arg), both)
    x = _side(node.arg)
    return _compare(low, x, _side(node.low)) & _compare(high, x, _side(node.high))


@_pred.register
def _(node: n.StartsWith) -> pl.Expr:
    return _val(node.arg).str.starts_with(node.text).fill_null(False)


@_pred.register
def _(node: n.EndsWith) -> pl.Expr:
    return _val(node.arg).str.ends_with(node.text).fill_null(False)


@_pred.register
def _(node: n.Contains) -> pl.Expr:
    return _val(node.arg).str.contains(node.text, literal=True).fill_null(False)


@_pred.register
def _(node: n.Regex) -> pl.Expr:
    pattern = f"(?{node.flags}){node.pattern}" if node.flags else node.pattern
    return _val(node.arg).str.contains(pattern).fill_null(False)


@_pred.register
def _(node: n.ListContains) -> pl.Expr:
    return _any(_val(node.arg), _compare(n.Eq, _element(node.arg), _side(node.item)))


@_pred.register
def _(node: n.And) -> pl.Expr:
    return reduce(operator.and_, (_pred(a) for a in node.args))


@_pred.register
def _(node: n.Or) -> pl.Expr:
    return reduce(operator.or_, (_pred(a) for a in node.args))


@_pred.register
def _(node: n.Not) -> pl.Expr:
    return ~_pred(node.arg)


# -------------------------------------------------------------------------- values
@singledispatch
def _val(node: n.Node) -> pl.Expr:
    if isinstance(node, n.PREDICATES):
        return _pred(node)
    if isinstance(node, n.Aggregation):
        raise InvalidExpressionError(f"{to_source(node)} is an aggregation; it can only be "
                                     "the outermost expression.")
    raise UnsupportedExpressionError(f"no Polars translation for {type(node).__name__}: "
                                     f"{to_source(node)}")


@_val.register
def _(node: n.Field) -> pl.Expr:
    return _column(node)


@_val.register
def _(node: n.Literal) -> pl.Expr:
    value = node.value
    if type(value) is int:  # MongoDB's integers are 64-bit (pl.lit(1) would be Int32)
        return pl.lit(value, dtype=pl.Int64)
    if value is None:
        return pl.lit(None)
    return _literal(value)


@_val.register
def _(node: n.Alias) -> pl.Expr:
    return _val(node.arg).alias(node.name)


def _operand(node: n.Node) -> pl.Expr:
    """An operand of arithmetic: narrow integers (date parts, counts) widened to int64,
    as MongoDB computes (Polars would wrap ``int8`` / ``uint32`` results)."""
    return _int64(_val(node), arrow_type(node))


@_val.register
def _(node: n.Arithmetic) -> pl.Expr:
    left, right = _operand(node.left), _operand(node.right)
    if isinstance(node, n.Div):
        if isinstance(node.right, n.Literal):
            if node.right.value == 0:
                return pl.lit(None, dtype=pl.Float64)
            # Polars divides by a scalar through its reciprocal (off by one ulp in about
            # half the cases); a full column of the divisor keeps IEEE division, as MongoDB.
            return left / (pl.int_range(pl.len()).cast(pl.Float64) * 0.0 + right)
        return pl.when(right != 0).then(left / right)  # null where MongoDB would raise
    if isinstance(node, n.Mod):  # MongoDB truncates (C's fmod); Polars floors
        return pl.when(right != 0).then(_fmod(left, right, kind_of(node)))
    if isinstance(node, n.FloorDiv):  # MongoDB: $floor of the (double) quotient
        quotient = left.cast(pl.Float64) / (
            pl.int_range(pl.len()).cast(pl.Float64) * 0.0 + right  # exact IEEE division,
            if isinstance(node.right, n.Literal) else right)       # as for / above
        out = quotient.floor()
        if kind_of(node) is Kind.INT:  # $toLong (rows divided by zero are nulled below)
            out = out.cast(pl.Int64, strict=False)
        return pl.when(right != 0).then(out)
    if isinstance(node, n.Pow):
        if kind_of(node) is Kind.FLOAT:
            left = left.cast(pl.Float64)
        out = left.pow(right)
        if kind_of(node) is Kind.FLOAT:
            # C's pow (MongoDB's $pow): (-inf) ** y is +inf for y > 0 not an integer;
            # Polars computes x ** 0.5 as sqrt(x), NaN for -inf.
            out = pl.when((left == float("-inf")) & (right > 0) & (right.floor() != right)
                          ).then(float("inf")).otherwise(out)
        if isinstance(node.right, n.Literal) and node.right.value >= 0:
            return out
        return pl.when((left == 0) & (right < 0)).then(None).otherwise(out)
    return _ARITH[type(node)](left, right)


@_val.register
def _(node: n.Neg) -> pl.Expr:
    return -_operand(node.arg)


@_val.register
def _(node: n.Abs) -> pl.Expr:
    return _operand(node.arg).abs()


@_val.register
def _(node: n.Round) -> pl.Expr:
    return _operand(node.arg).round(node.digits, mode="half_to_even")


def _local(node: n.DatePart | n.Truncate) -> pl.Expr:
    """The datetime argument, converted to the node's time zone when it has one."""
    x = _val(node.arg)
    return x.dt.convert_time_zone(node.time_zone) if node.time_zone else x


@_val.register
def _(node: n.DatePart) -> pl.Expr:
    return _DATE_PARTS[type(node)](_local(node))


@_val.register
def _(node: n.Truncate) -> pl.Expr:
    count, unit = n.parse_every(node.every)
    if node.time_zone and unit in ("ms", "s", "m") and count == 1:
        # The same instant in any zone (offsets are whole minutes): truncated in UTC, then
        # shown in the zone. Truncating local time would re-localise an ambiguous wall
        # time (a clock going back) to its earlier instant: 1971-10-31 02:00 UTC in
        # London became 01:00 UTC; MongoDB keeps the instant.
        return _val(node.arg).dt.truncate(node.every).dt.convert_time_zone(node.time_zone)
    out = _local(node).dt.truncate(node.every)
    if count == 1:
        return out
    # A bin of several units may start before 0001-01-01, which MongoDB cannot represent:
    # both compilers start such a bin at 0001-01-01.
    first = _FIRST_DAY if kind_of(node.arg) is Kind.DATE else _FIRST_INSTANT
    if node.time_zone:  # 0001-01-01 at local midnight (MongoDB builds it with the zone)
        first = _FIRST_LOCAL.dt.replace_time_zone(node.time_zone)
    return pl.when(out < first).then(first).otherwise(out)


@_val.register
def _(node: n.StringCase) -> pl.Expr:
    source, target = _CASE[type(node)]
    return _val(node.arg).str.replace_many(source, target)


@_val.register
def _(node: n.LenChars) -> pl.Expr:
    return _val(node.arg).str.len_chars()


@_val.register
def _(node: n.Slice) -> pl.Expr:
    return _val(node.arg).str.slice(node.offset, node.length)


@_val.register
def _(node: n.Replace) -> pl.Expr:
    x = _val(node.arg)
    if node.all:
        return x.str.replace_all(node.text, node.value, literal=True)
    return x.str.replace(node.text, node.value, literal=True)


@_val.register
def _(node: n.ToDate) -> pl.Expr:
    return _val(node.arg).dt.date()


@_val.register
def _(node: n.Strftime) -> pl.Expr:
    return _val(node.arg).dt.strftime(node.format)


_CASTS: dict[str, pl.DataType] = {
    "Int64": pl.Int64(), "Float64": pl.Float64(), "String": pl.String(),
    "Boolean": pl.Boolean(), "Datetime": pl.Datetime("ms", "UTC"), "Date": pl.Date(),
}


@_val.register
def _(node: n.Cast) -> pl.Expr:
    x = _val(node.arg)
    if node.dtype == "String" and kind_of(node.arg) is Kind.BOOL:
        return pl.when(x).then(pl.lit("true")).when(~x).then(pl.lit("false"))
    return x.cast(_CASTS[node.dtype], strict=False)


def _typed(expr: pl.Expr, node: n.Node) -> pl.Expr:
    """``expr`` cast to the node's type (the one rule, :func:`dtypes.arrow_type`)."""
    arrow = arrow_type(node)
    if arrow is None:
        return expr
    return expr.cast(polars_dtype(arrow))


def polars_dtype(arrow: pa.DataType) -> pl.DataType:
    """The Polars dtype of an Arrow type.

    >>> import pyarrow as pa
    >>> polars_dtype(pa.uint32())
    UInt32
    """
    return pl.from_arrow(pa.array([], type=arrow)).dtype  # type: ignore[union-attr]


@_val.register
def _(node: n.FillNull) -> pl.Expr:
    return _typed(_val(node.arg).fill_null(_val(node.value)), node)


@_val.register
def _(node: n.When) -> pl.Expr:
    chain: Any = pl
    for condition, value in zip(node.conditions, node.values, strict=True):
        chain = chain.when(_pred(condition)).then(_val(value))
    return _typed(chain.otherwise(_val(node.otherwise)), node)


@_val.register
def _(node: n.ListLen) -> pl.Expr:
    return _val(node.arg).list.len()  # uint32, as Polars counts


# --------------------------------------------------------------------- aggregations
def _aggregate(node: n.Aggregation) -> pl.Expr:
    x = _val(node.arg)
    if not x.meta.root_names():  # reads no column (fld['l'].is_in([])): one value per row
        x = pl.when(pl.repeat(True, pl.len())).then(x)
    kind = kind_of(node.arg)
    if kind is Kind.BOOL and not isinstance(node, (n.Count, n.First, n.Last, n.NUnique,
                                                   n.Min, n.Max, n.Sum)):
        x = x.cast(pl.Int64)  # a sum of booleans stays Polars' count of true (uint32)
    if isinstance(node, n.Sum):  # integers summed in 64 bits (Polars keeps int32 / uint32)
        x = _int64(x, arrow_type(node.arg))
    if isinstance(node, n.Min):  # MongoDB ranks NaN below every number
        return x.nan_min() if kind in (Kind.FLOAT, Kind.ANY) else x.min()
    if isinstance(node, n.Quantile):  # like MongoDB's $percentile, NaN is skipped as null is
        return x.fill_nan(None).quantile(node.q, interpolation="equiprobable")
    translate = _AGGREGATIONS.get(type(node))
    if translate is None:
        raise UnsupportedExpressionError(f"no Polars aggregation for {type(node).__name__}")
    return translate(x)


# -------------------------------------------------------------------------- windows
def _window_function(node: n.Node) -> pl.Expr:
    if isinstance(node, n.Len):
        return pl.len()
    if isinstance(node, n.Aggregation):
        return _aggregate(node)
    x = _val(node.arg)  # type: ignore[attr-defined]
    if isinstance(node, n.Rank):
        return x.rank(node.method, descending=node.descending)  # type: ignore[arg-type]
    if isinstance(node, n.CumSum):
        return _int64(x, arrow_type(node.arg)).cum_sum()
    if isinstance(node, n.RollingMean):
        return x.cast(pl.Float64).rolling_mean(node.window_size)
    if isinstance(node, n.Shift):
        return x.shift(node.n)
    raise UnsupportedExpressionError(f"no Polars window for {type(node).__name__}")


def _window(node: n.Node) -> pl.Expr:
    """A window (``.over()``), rows in ``order_by`` order; nulls of the order keys come
    first ascending and last descending, as MongoDB sorts them."""
    over = node if isinstance(node, n.Over) else n.Over(node)
    out = _window_function(over.arg)
    if not over.partition_by and not over.order_by:
        return out
    keys = [_val(k) for k in over.partition_by] or [pl.lit(0)]
    order = [_val(k) for k in over.order_by] or None
    return out.over(keys, order_by=order, descending=over.descending,
                    nulls_last=over.descending)


@_val.register(n.Over)
@_val.register(n.Rank)
@_val.register(n.CumSum)
@_val.register(n.RollingMean)
@_val.register(n.Shift)
def _(node: n.Node) -> pl.Expr:
    return _window(node)


def _fmod(left: pl.Expr, right: pl.Expr, kind: Kind) -> pl.Expr:
    """C's ``fmod`` (MongoDB's ``$mod``): exact, with the sign of the dividend; for
    doubles NaN for an infinite dividend and the dividend for an infinite divisor
    (IEEE). Polars' ``%`` floors, and for floats floors a rounded quotient
    (``8479510025553041.0 % 1.5`` gives ``1.0``, ``2.0 % 1e-308`` gives ``-inf``), so
    the value comes from numpy's ``fmod``: integer inputs stay integers (exact), any
    float makes it a double. ``kind`` (INT / FLOAT, or ANY for an unbound expression)
    gives the result's dtype."""

    def fmod(pair: pl.Series) -> pl.Series:
        import numpy as np

        x, m = pair.struct[0], pair.struct[1]
        nulls = x.is_null() | m.is_null()
        xs = x.fill_null(0).to_numpy() if x.dtype.is_integer() else x.to_numpy()
        ms = m.fill_null(1).to_numpy() if m.dtype.is_integer() else m.to_numpy()
        with np.errstate(all="ignore"):  # a zero divisor is null (the caller's when)
            out = np.fmod(xs, ms)
        return pl.Series(x.name, out).set(nulls, None)

    dtype = {Kind.INT: pl.Int64, Kind.FLOAT: pl.Float64}.get(kind)
    if kind is Kind.FLOAT:
        left, right = left.cast(pl.Float64), right.cast(pl.Float64)
    # The struct (and so the result) is named after the dividend, as Polars names x % m.
    pair = pl.struct(left, right.alias("__loom_divisor"))
    return pair.map_batches(fmod, return_dtype=dtype, is_elementwise=True)
