"""``polars.Expr`` -> our expression tree, for predicate pushdown from LazyFrame scans.

Route: ``expr.meta.serialize(format="json")``, walked as plain data. Of the public
routes it is the one that shows the whole tree (``expr.meta`` alone lists roots and
outputs but not operators, and the pyarrow-expression route Polars' dataset scanner
uses is private). The JSON format is not promised stable across Polars versions, so
pyproject pins Polars to the range the tests cover, and anything this module does not
recognise is simply not pushed.

The translation is best effort and conjunct by conjunct: :func:`translate` returns the
conjuncts it could express (as one ``&``) and the rest. It only ever has to be right
where Polars' own answer is not null: the scan applies the full Polars predicate to
every batch anyway, so MongoDB's filter may keep more rows than Polars (nulls, say),
never fewer. Where the two engines differ on non-null values (NaN is the largest float
in Polars and matches no range in MongoDB) the pushed filter is widened to keep them.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
from typing import TYPE_CHECKING, Any

from ..errors import LoomError
from .api import Expr, fld
from .bind import Kind, Resolver

if TYPE_CHECKING:
    import polars as pl

__all__ = ["translate"]


class _Untranslatable(Exception):
    """This (sub)expression stays in Polars."""


_FLIP = {"Eq": "Eq", "NotEq": "NotEq", "Lt": "Gt", "LtEq": "GtEq", "Gt": "Lt", "GtEq": "LtEq"}


def translate(predicate: pl.Expr, resolver: Resolver) -> tuple[Expr | None, list[str]]:
    """Split a Polars predicate into what MongoDB can run and what stays local.

    Returns ``(pushed, kept)``: ``pushed`` is a bound expression (or None), ``kept``
    describes each conjunct that was not translated.

    >>> import polars as pl
    >>> from loom_frames.expr import Kind, SimpleResolver
    >>> r = SimpleResolver("T", {"count": Kind.INT, "name": Kind.STR})
    >>> pushed, kept = translate((pl.col("count") > 95_000) & pl.col("name").map_elements(len) , r)
    >>> pushed.to_mongo(), len(kept)
    ({'count': {'$gt': 95000}}, 1)
    """
    try:
        tree = json.loads(predicate.meta.serialize(format="json"))
    except Exception:  # noqa: BLE001 - an expression Polars cannot serialise stays local
        return None, [str(predicate)]
    pushed: Expr | None = None
    kept: list[str] = []
    for conjunct in _conjuncts(tree):
        try:
            expr = _Translator(resolver).predicate(conjunct)
            expr = expr.bind(resolver)
        except (_Untranslatable, LoomError):
            kept.append(_describe(conjunct))
            continue
        pushed = expr if pushed is None else pushed & expr
    return pushed, kept


def _conjuncts(node: Any) -> list[Any]:
    binary = node.get("BinaryExpr") if isinstance(node, dict) else None
    if binary is not None and binary.get("op") in ("And", "LogicalAnd"):
        return _conjuncts(binary["left"]) + _conjuncts(binary["right"])
    return [node]


def _describe(node: Any) -> str:
    import polars as pl

    try:
        return str(pl.Expr.deserialize(io.StringIO(json.dumps(node)), format="json"))
    except Exception:  # noqa: BLE001
        return json.dumps(node)[:200]


class _Translator:
    """Walks one serialised predicate; raises :class:`_Untranslatable` on anything else."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    # ------------------------------------------------------------------ predicates
    def predicate(self, node: Any) -> Expr:
        if not isinstance(node, dict) or len(node) != 1:
            raise _Untranslatable
        (kind, body), = node.items()
        if kind == "Column":  # a bare boolean column
            return self.column(node) == True
        if kind == "BinaryExpr":
            return self.binary(body)
        if kind == "Function":
            return self.function(body)
        raise _Untranslatable

    def binary(self, body: dict[str, Any]) -> Expr:
        op = body.get("op")
        if op in ("And", "LogicalAnd"):
            return self.predicate(body["left"]) & self.predicate(body["right"])
        if op in ("Or", "LogicalOr"):
            return self.predicate(body["left"]) | self.predicate(body["right"])
        if op not in _FLIP:
            raise _Untranslatable
        left, right = body["left"], body["right"]
        if _is_literal(left) and _is_column(right):
            left, right, op = right, left, _FLIP[op]
        if not (_is_column(left) and _is_literal(right)):
            raise _Untranslatable
        column, value = self.column(left), self.literal(right)
        return self.compare(column, op, value, self.kind(left))

    def compare(self, column: Expr, op: str, value: Any, kind: Kind) -> Expr:
        if value is None or _is_nan(value):
            raise _Untranslatable  # Polars: null / NaN-specific answers
        result = {
            "Eq": column.__eq__, "NotEq": column.__ne__, "Lt": column.__lt__,
            "LtEq": column.__le__, "Gt": column.__gt__, "GtEq": column.__ge__,
        }[op](value)
        if kind is Kind.FLOAT and op in ("Gt", "GtEq", "NotEq"):
            # NaN is the largest float in Polars, and matches no range in MongoDB.
            result = result | (column == math.nan)  # noqa: PLW0177 - builds an expression
        return result

    def function(self, body: dict[str, Any]) -> Expr:
        inputs = body.get("input", [])
        function = body.get("function")
        if isinstance(function, dict) and "Boolean" in function:
            return self.boolean(function["Boolean"], inputs)
        if isinstance(function, dict) and "StringExpr" in function:
            return self.string(function["StringExpr"], inputs)
        raise _Untranslatable

    def boolean(self, name: Any, inputs: list[Any]) -> Expr:
        if name == "Not":
            return ~self.predicate(_one(inputs))
        if name == "IsNull":
            return self.column(_one(inputs)).is_null()
        if name == "IsNotNull":
            return self.column(_one(inputs)).is_not_null()
        if isinstance(name, dict) and "IsIn" in name and len(inputs) == 2:
            values = self.literal(inputs[1])
            if isinstance(values, list) and len(values) == 1 and isinstance(values[0], list):
                values = values[0]
            if not isinstance(values, list) or any(v is None or _is_nan(v) for v in values):
                raise _Untranslatable
            return self.column(inputs[0]).is_in(values)
        if isinstance(name, dict) and "IsBetween" in name and len(inputs) == 3:
            closed = str(name["IsBetween"].get("closed", "Both")).lower()
            low, high = self.literal(inputs[1]), self.literal(inputs[2])
            if any(v is None or _is_nan(v) for v in (low, high)):
                raise _Untranslatable
            return self.column(inputs[0]).between(low, high, closed=closed)
        raise _Untranslatable

    def string(self, name: Any, inputs: list[Any]) -> Expr:
        if len(inputs) != 2 or not _is_column(inputs[0]):
            raise _Untranslatable
        text = self.literal(inputs[1])
        if not isinstance(text, str):
            raise _Untranslatable
        column = self.column(inputs[0])
        if name == "StartsWith":
            return column.starts_with(text)
        if name == "EndsWith":
            return column.ends_with(text)
        if isinstance(name, dict) and name.get("Contains", {}).get("literal") is True:
            return column.contains(text)
        raise _Untranslatable  # a regex: Rust and PCRE syntax differ

    # ------------------------------------------------------------------ leaves
    def column(self, node: Any) -> Expr:
        if not _is_column(node):
            raise _Untranslatable
        return fld[node["Column"]]

    def kind(self, node: Any) -> Kind:
        return self.resolver.resolve(node["Column"]).kind

    def literal(self, node: Any) -> Any:
        body = node["Literal"]
        dyn = body.get("Dyn") if isinstance(body, dict) else None
        if isinstance(dyn, dict) and len(dyn) == 1:
            (kind, value), = dyn.items()
            if kind in ("Int", "Float"):
                return value
        scalar = body.get("Scalar") if isinstance(body, dict) else None
        if isinstance(scalar, dict) and len(scalar) == 1:
            (kind, value), = scalar.items()
            if kind in ("String", "Boolean") or kind.startswith(("Int", "UInt", "Float")):
                return value
        return _evaluate(node)


def _evaluate(node: Any) -> Any:
    """Any other literal (lists, dates, datetimes): let Polars itself decode it."""
    import polars as pl

    try:
        expr = pl.Expr.deserialize(io.StringIO(json.dumps(node)), format="json")
        values = pl.select(expr).to_series().to_list()
    except Exception as exc:
        raise _Untranslatable from exc
    if len(values) != 1:
        raise _Untranslatable
    value = values[0]
    if isinstance(value, _dt.datetime) and (value.tzinfo is None or value.microsecond % 1000):
        raise _Untranslatable  # naive or finer than MongoDB's milliseconds
    return value


def _is_column(node: Any) -> bool:
    return isinstance(node, dict) and isinstance(node.get("Column"), str)


def _is_literal(node: Any) -> bool:
    return isinstance(node, dict) and "Literal" in node


def _one(inputs: list[Any]) -> Any:
    if len(inputs) != 1:
        raise _Untranslatable
    return inputs[0]


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
