"""Tree -> Python source: ``repr(expr)`` reads like the code that built it.

>>> from loom_frames.expr import fld
>>> (fld["age"] > 25) & (fld["is_active"] == True)  # noqa: E712
(fld['age'] > 25) & (fld['is_active'] == True)
"""

from __future__ import annotations

import math
from functools import singledispatch
from typing import Any

from . import nodes as n

__all__ = ["literal_source", "to_source"]

_INFIX: dict[type[n.Node], str] = {
    n.Eq: "==", n.Ne: "!=", n.Lt: "<", n.Le: "<=", n.Gt: ">", n.Ge: ">=",
    n.Add: "+", n.Sub: "-", n.Mul: "*", n.Div: "/", n.Mod: "%", n.FloorDiv: "//",
    n.Pow: "**",
}
_METHOD: dict[type[n.Node], str] = {
    n.IsNull: "is_null()", n.IsNotNull: "is_not_null()", n.Abs: "abs()",
    n.Lower: "str.to_lower()", n.Upper: "str.to_upper()", n.ListLen: "list.len()",
    n.Count: "count()", n.Sum: "sum()", n.Mean: "mean()",
    n.Min: "min()", n.Max: "max()", n.First: "first()", n.Last: "last()", n.Std: "std()",
    n.Var: "var()", n.Median: "median()", n.NUnique: "n_unique()",
    n.LenChars: "str.len_chars()", n.ToDate: "dt.date()", n.CumSum: "cum_sum()",
}
_DATE_PART: dict[type[n.Node], str] = {
    n.Year: "year", n.Month: "month", n.Day: "day", n.Hour: "hour", n.Weekday: "weekday",
}
_STRING_MATCH: dict[type[n.Node], str] = {
    n.StartsWith: "starts_with", n.EndsWith: "ends_with", n.Contains: "contains",
}


def literal_source(value: Any) -> str:
    """Python source for a frozen literal (NaN and infinities spelled evaluably)."""
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return "float('nan')"
        return "float('inf')" if value > 0 else "-float('inf')"
    if isinstance(value, tuple):
        return "[" + ", ".join(literal_source(v) for v in value) + "]"
    if isinstance(value, n.Doc):
        return "{" + ", ".join(f"{k!r}: {literal_source(v)}" for k, v in value.items) + "}"
    return repr(value)


def _operand(node: n.Node) -> str:
    """Source of a child, parenthesised when it is an infix or prefix expression."""
    text = to_source(node)
    infix = isinstance(node, (n.Comparison, n.Arithmetic, n.And, n.Or, n.Neg, n.Not))
    return f"({text})" if infix else text


@singledispatch
def to_source(node: n.Node) -> str:
    """Python source that rebuilds ``node`` (given ``fld`` and the literals' types)."""
    method = _METHOD.get(type(node))
    if method is not None:
        return f"{_operand(node.arg)}.{method}"  # type: ignore[attr-defined]
    infix = _INFIX.get(type(node))
    if infix is not None:
        return f"{_operand(node.left)} {infix} {_operand(node.right)}"  # type: ignore[attr-defined]
    raise TypeError(f"no source rendering for {type(node).__name__}")


@to_source.register
def _(node: n.Field) -> str:
    return f"fld[{node.name!r}]"


@to_source.register
def _(node: n.Literal) -> str:
    return literal_source(node.value)


@to_source.register
def _(node: n.IsIn) -> str:
    return f"{_operand(node.arg)}.is_in({literal_source(tuple(v.value for v in node.values))})"


@to_source.register
def _(node: n.NotIn) -> str:
    return f"{_operand(node.arg)}.not_in({literal_source(tuple(v.value for v in node.values))})"


@to_source.register
def _(node: n.Exists) -> str:
    return f"{_operand(node.arg)}.exists({'' if node.flag else 'False'})"


@to_source.register
def _(node: n.Between) -> str:
    closed = "" if node.closed == "both" else f", closed={node.closed!r}"
    return f"{_operand(node.arg)}.between({to_source(node.low)}, {to_source(node.high)}{closed})"


@to_source.register
def _(node: n.StringMatch) -> str:
    return f"{_operand(node.arg)}.{_STRING_MATCH[type(node)]}({node.text!r})"


@to_source.register
def _(node: n.Regex) -> str:
    flags = f", {node.flags!r}" if node.flags else ""
    return f"{_operand(node.arg)}.regex({node.pattern!r}{flags})"


@to_source.register
def _(node: n.ListContains) -> str:
    return f"{_operand(node.arg)}.list.contains({to_source(node.item)})"


@to_source.register
def _(node: n.And) -> str:
    return " & ".join(_operand(a) for a in node.args)


@to_source.register
def _(node: n.Or) -> str:
    return " | ".join(_operand(a) for a in node.args)


@to_source.register
def _(node: n.Not) -> str:
    return f"~{_operand(node.arg)}"


@to_source.register
def _(node: n.Neg) -> str:
    return f"-{_operand(node.arg)}"


@to_source.register
def _(node: n.Round) -> str:
    return f"{_operand(node.arg)}.round({node.digits})"


def _zone(node: n.DatePart | n.Truncate) -> str:
    return f"time_zone={node.time_zone!r}" if node.time_zone else ""


@to_source.register
def _(node: n.DatePart) -> str:
    return f"{_operand(node.arg)}.dt.{_DATE_PART[type(node)]}({_zone(node)})"


@to_source.register
def _(node: n.Truncate) -> str:
    zone = f", {_zone(node)}" if node.time_zone else ""
    return f"{_operand(node.arg)}.dt.truncate({node.every!r}{zone})"


@to_source.register
def _(node: n.Quantile) -> str:
    return f"{_operand(node.arg)}.quantile({node.q!r})"


@to_source.register
def _(node: n.Alias) -> str:
    return f"{_operand(node.arg)}.alias({node.name!r})"


@to_source.register
def _(node: n.Len) -> str:
    return "lm.len()"


@to_source.register
def _(node: n.Slice) -> str:
    length = "" if node.length is None else f", {node.length}"
    return f"{_operand(node.arg)}.str.slice({node.offset}{length})"


@to_source.register
def _(node: n.Replace) -> str:
    method = "replace_all" if node.all else "replace"
    return f"{_operand(node.arg)}.str.{method}({node.text!r}, {node.value!r}, literal=True)"


@to_source.register
def _(node: n.Strftime) -> str:
    return f"{_operand(node.arg)}.dt.strftime({node.format!r})"


@to_source.register
def _(node: n.Cast) -> str:
    return f"{_operand(node.arg)}.cast({node.dtype!r})"


@to_source.register
def _(node: n.FillNull) -> str:
    return f"{_operand(node.arg)}.fill_null({_value(node.value)})"


def _value(node: n.Node) -> str:
    """A value argument: literals as ``lm.lit(...)`` where a bare string would be a name."""
    if isinstance(node, n.Literal) and isinstance(node.value, str):
        return f"lm.lit({node.value!r})"
    return to_source(node)


@to_source.register
def _(node: n.When) -> str:
    parts = [f"{'when' if i == 0 else '.when'}({to_source(c)}).then({_value(v)})"
             for i, (c, v) in enumerate(zip(node.conditions, node.values, strict=True))]
    tail = "" if isinstance(node.otherwise, n.Literal) and node.otherwise.value is None \
        else f".otherwise({_value(node.otherwise)})"
    return "".join(parts) + tail


@to_source.register
def _(node: n.Rank) -> str:
    args = [repr(node.method)] if node.method != "average" else []
    args += ["descending=True"] if node.descending else []
    return f"{_operand(node.arg)}.rank({', '.join(args)})"


@to_source.register
def _(node: n.RollingMean) -> str:
    return f"{_operand(node.arg)}.rolling_mean({node.window_size})"


@to_source.register
def _(node: n.Shift) -> str:
    return f"{_operand(node.arg)}.shift({'' if node.n == 1 else node.n})"


def _keys(nodes: tuple[n.Node, ...]) -> str:
    names = [node.name if isinstance(node, n.Field) else None for node in nodes]
    if all(names):
        texts = [repr(name) for name in names]
    else:
        texts = [to_source(node) for node in nodes]
    return texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"


@to_source.register
def _(node: n.Over) -> str:
    args = [_keys(node.partition_by)] if node.partition_by else []
    if node.order_by:
        args.append(f"order_by={_keys(node.order_by)}")
    if node.descending:
        args.append("descending=True")
    return f"{_operand(node.arg)}.over({', '.join(args)})"
