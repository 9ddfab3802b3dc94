"""Windows -> MongoDB: ``$setWindowFields`` stages computing ``expr.over(...)`` columns.

A window is not one aggregation expression: it needs rows in order, so it compiles to
stages of a pipeline. :func:`window_stages` returns, for each window column, the stages
that compute it into a temporary field (``__loom_w<i>``), and the names of every
temporary field (for one ``$unset`` when the query no longer needs them). Rows are taken
in ``order_by`` order, ties (and no ``order_by``) in ``_id`` order; null and missing order
keys come first ascending and last descending (MongoDB's order; the Polars compiler sorts
the same way). Partition keys group a missing value with null, as a frame does.

Each window function keeps Polars' meaning: ``cum_sum`` and ``rank`` are null where the
value is null, ``rank`` ranks the non-null values only, ``rolling_mean(k)`` is null until
``k`` non-null values are in the window.

>>> from loom_frames.expr import fld
>>> stages, temps = window_stages([("w", fld["x"].cum_sum().over("g", order_by="t").node)])
>>> stages[0]["$setWindowFields"]["sortBy"], temps
({'t': 1, '_id': 1}, ['__loom_w0'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InvalidExpressionError
from . import nodes as n
from .bind import Kind, kind_of
from .mongo import compile_accumulator, compile_expression

__all__ = ["is_window", "window_stages"]

_RANK_OPERATORS = {"min": "$rank", "max": "$rank", "average": "$rank", "dense": "$denseRank",
                   "ordinal": "$documentNumber"}


def is_window(node: n.Node) -> bool:
    """True for a window column (``.over()`` or a window function), alias aside.

    >>> from loom_frames.expr import fld
    >>> is_window(fld["x"].rank().alias("r").node), is_window(fld["x"].node)
    (True, False)
    """
    return isinstance(n.unaliased(node), (n.Over, *n.WINDOW_FUNCTIONS))


def temp_name(index: int) -> str:
    """Where the ``index``-th window column of a step is computed."""
    return f"__loom_w{index}"


def window_stages(items: Sequence[tuple[str, n.Node]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The stages computing each window ``(name, node)`` into ``temp_name(i)``, and every
    temporary field they set."""
    stages: list[dict[str, Any]] = []
    temps: list[str] = []
    for index, (_, node) in enumerate(items):
        built, used = _one(node, temp_name(index))
        stages.extend(built)
        temps.extend(used)
    return stages, temps


def _value(node: n.Node) -> Any:
    value = compile_expression(node)
    return value


def _one(node: n.Node, out: str) -> tuple[list[dict[str, Any]], list[str]]:
    node = n.unaliased(node)
    over = node if isinstance(node, n.Over) else n.Over(node)
    fn = over.arg
    pre: dict[str, Any] = {}  # temporary fields: computed sort keys
    temps = [out]

    def field_of(key: n.Node, label: str) -> str:
        """A sort key must be a field path: expressions are computed first."""
        if isinstance(key, n.Field):
            return key.ref.path if key.ref is not None else key.name
        name = f"{out}_{label}"
        pre[name] = _value(key)
        temps.append(name)
        return name

    partition = {f"k{i}": {"$ifNull": [_value(k), None]} for i, k in enumerate(over.partition_by)}
    direction = -1 if over.descending else 1
    sort = {field_of(k, f"o{i}"): direction for i, k in enumerate(over.order_by)}
    stages: list[dict[str, Any]] = []
    post: Any = f"${out}"
    output: dict[str, Any] = {}
    if isinstance(fn, n.Rank):
        x = _value(fn.arg)
        path = field_of(fn.arg, "r")
        sort = {path: -1 if fn.descending else 1}
        if fn.method == "ordinal":
            sort["_id"] = 1
        output[out] = {_RANK_OPERATORS[fn.method]: {}}
        nulls = f"{out}_n"
        temps.append(nulls)
        output[nulls] = {"$sum": {"$cond": [{"$lte": [x, None]}, 1, 0]}}
        rank: Any = f"${out}"
        if not fn.descending:  # nulls sort first and take the first ranks: skip them
            skipped = {"$min": [f"${nulls}", 1]} if fn.method == "dense" else f"${nulls}"
            rank = {"$subtract": [rank, skipped]}
        if fn.method in ("max", "average"):
            ties = f"{out}_t"
            temps.append(ties)
            tie_keys = {**partition, "v": x}
            extra = {"$subtract": [f"${ties}", 1]}
            if fn.method == "average":
                extra = {"$divide": [extra, 2]}
            rank = {"$add": [rank, extra]}
            stages_after = [{"$setWindowFields": {"partitionBy": tie_keys,
                                                  "output": {ties: {"$sum": 1}}}}]
        else:
            stages_after = []
        post = {"$cond": [{"$lte": [x, None]}, None, rank]}
    else:
        sort = {**sort, "_id": 1} if sort or _ordered(fn) else sort
        stages_after = []
        if isinstance(fn, (n.Aggregation, n.Len)):
            acc = compile_accumulator(fn)
            output[out] = acc.group
            if acc.post is not None:
                post = acc.finalize(out)
        else:
            x = _value(fn.arg)  # type: ignore[attr-defined]
            if kind_of(fn.arg) is Kind.BOOL:  # type: ignore[attr-defined]
                x = {"$toInt": x}
            if isinstance(fn, n.CumSum):
                output[out] = {"$sum": x, "window": {"documents": ["unbounded", "current"]}}
                post = {"$cond": [{"$lte": [x, None]}, None, f"${out}"]}
            elif isinstance(fn, n.RollingMean):
                window = {"documents": [1 - fn.window_size, 0]}
                count = f"{out}_c"
                temps.append(count)
                output[out] = {"$avg": x, "window": window}
                output[count] = {"$sum": {"$cond": [{"$gt": [x, None]}, 1, 0]},
                                 "window": window}
                post = {"$cond": [{"$lt": [f"${count}", fn.window_size]}, None, f"${out}"]}
            elif isinstance(fn, n.Shift):
                output[out] = {"$shift": {"output": x, "by": -fn.n, "default": None}}
            else:
                raise InvalidExpressionError(f"no MongoDB window for {type(fn).__name__}")
    spec: dict[str, Any] = {}
    if partition:
        spec["partitionBy"] = partition
    if sort:
        spec["sortBy"] = sort
    spec["output"] = output
    if pre:
        stages.append({"$set": pre})
    stages.append({"$setWindowFields": spec})
    stages.extend(stages_after)
    if post != f"${out}":
        stages.append({"$set": {out: post}})
    return stages, temps


def _ordered(fn: n.Node) -> bool:
    """Whether the function depends on row order (then rows are in ``_id`` order)."""
    return isinstance(fn, (n.CumSum, n.RollingMean, n.Shift, n.First, n.Last))
