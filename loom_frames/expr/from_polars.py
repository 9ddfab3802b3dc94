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
never fewer. Where the two engines differ on non-null values the pushed filter is
widened to keep them: NaN (the largest float in Polars, in no range in MongoDB),
integers beyond 2**53 compared with a float (Polars casts them, rounding), strings with
non-ASCII characters under ``str.to_lowercase()`` (Polars maps all of Unicode, MongoDB's
``$toLower`` ASCII only). The last two are only supersets, so they are not pushed under
a ``~`` (where a superset would turn into a subset).

Translated: comparisons of columns with literals or with columns (Polars' inserted casts
to Float64 included), ``dt.year()/month()/day()/hour()/weekday()`` (after a
``convert_time_zone``, in that zone), ``%`` (Polars floors, so ``x % m`` becomes
``((x % m) + m) % m`` of MongoDB's truncated remainder), ``str.to_lowercase()`` /
``to_uppercase()``, ``fill_null(v)`` (``x.fill_null(v) > w`` is ``x > w``, or ``x`` null
when ``v > w``), ``is_in``, ``is_between``, ``is_null``, ``str.starts_with`` /
``ends_with`` / ``contains`` (a pattern without regex syntax is literal text),
``list.contains``, struct fields (``pl.col("address").struct.field("city")``), ``&``,
``|``, ``~``.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import LoomError
from . import nodes as n
from .api import Expr, fld
from .bind import Kind, Resolver

if TYPE_CHECKING:
    import polars as pl

__all__ = ["translate"]


class _Untranslatable(Exception):
    """This (sub)expression stays in Polars."""


_FLIP = {"Eq": "Eq", "NotEq": "NotEq", "Lt": "Gt", "LtEq": "GtEq", "Gt": "Lt", "GtEq": "LtEq"}
_COMPARE = {
    "Eq": operator.eq, "NotEq": operator.ne, "Lt": operator.lt, "LtEq": operator.le,
    "Gt": operator.gt, "GtEq": operator.ge,
}
_DATE_PARTS = {"Year": "year", "Month": "month", "Day": "day", "Hour": "hour",
               "WeekDay": "weekday"}
_CASES = {"Lowercase": "to_lower", "Uppercase": "to_upper"}
_REGEX_SYNTAX = frozenset("\\.+*?()|[]{}^$")  # outside them, a Rust regex is literal text
_EXACT_FLOAT = 2**53  # integers beyond it change when Polars casts them to Float64
_NO_FILL = object()


def translate(
    predicate: pl.Expr, resolver: Resolver, zones: Mapping[str, str] | None = None
) -> tuple[Expr | None, list[str]]:
    """Split a Polars predicate into what MongoDB can run and what stays local.

    Returns ``(pushed, kept)``: ``pushed`` is a bound expression (or None), ``kept``
    describes each conjunct that was not translated. ``zones`` names the time zone of
    datetime columns that are not UTC (Polars takes their date parts in that zone).

    >>> import polars as pl
    >>> from loom_frames.expr import Kind, SimpleResolver
    >>> r = SimpleResolver("T", {"count": Kind.INT, "name": Kind.STR})
    >>> pushed, kept = translate((pl.col("count") > 95_000) & pl.col("name").map_elements(len) , r)
    >>> pushed.to_mongo(), len(kept)
    ({'count': {'$gt': 95000}}, 1)
    >>> translate(pl.col("count") % 2 == 0, r)[0]
    (((fld['count'] % 2) + 2) % 2) == 0
    """
    try:
        tree = json.loads(predicate.meta.serialize(format="json"))
    except Exception:  # noqa: BLE001 - an expression Polars cannot serialise stays local
        return None, [str(predicate)]
    pushed: Expr | None = None
    kept: list[str] = []
    for conjunct in _conjuncts(tree):
        try:
            expr = _Translator(resolver, zones or {}).predicate(conjunct)
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


@dataclass(frozen=True, slots=True)
class _Operand:
    """One side of a comparison: an expression of ours, or a literal value.

    ``loose`` lists conditions under which Polars may answer differently from the
    expression (Unicode case mapping, integers cast to floats): the rows meeting them are
    fetched anyway, which is only right where the comparison is not negated. ``fill`` is
    the value of a ``fill_null()`` around the operand.
    """

    expr: Expr | None
    value: Any = None
    kind: Kind = Kind.ANY
    loose: tuple[Expr, ...] = ()
    fill: Any = _NO_FILL


class _Translator:
    """Walks one serialised predicate; raises :class:`_Untranslatable` on anything else.

    The result must keep every row Polars keeps, so wherever the two engines may differ
    on a non-null value the pushed condition is widened: exactly (NaN, which Polars
    orders above every number; ``fill_null``), or loosely (``loose`` above) where the
    condition is not under a ``~``.
    """

    def __init__(self, resolver: Resolver, zones: Mapping[str, str]) -> None:
        self.resolver = resolver
        self.zones = zones

    # ------------------------------------------------------------------ predicates
    def predicate(self, node: Any, positive: bool = True) -> Expr:
        if not isinstance(node, dict) or len(node) != 1:
            raise _Untranslatable
        (kind, body), = node.items()
        if kind == "Column":  # a bare boolean column
            return self.column(node) == True
        if kind == "BinaryExpr":
            return self.binary(body, positive)
        if kind == "Function":
            return self.function(body, positive)
        raise _Untranslatable

    def binary(self, body: dict[str, Any], positive: bool) -> Expr:
        op = body.get("op")
        if op in ("And", "LogicalAnd"):
            return self.predicate(body["left"], positive) & self.predicate(body["right"],
                                                                           positive)
        if op in ("Or", "LogicalOr"):
            return self.predicate(body["left"], positive) | self.predicate(body["right"],
                                                                           positive)
        if op not in _FLIP:
            raise _Untranslatable
        left, right = self.operand(body["left"]), self.operand(body["right"])
        if left.expr is None:
            left, right, op = right, left, _FLIP[op]
        return self.compare(left, op, right, positive)

    def compare(self, left: _Operand, op: str, right: _Operand, positive: bool) -> Expr:
        if left.expr is None or right.fill is not _NO_FILL:
            raise _Untranslatable  # two literals (Polars folds them), or fill_null on the right
        if left.fill is not _NO_FILL:
            return self.filled(left, op, right, positive)
        if right.expr is None and (right.value is None or _is_nan(right.value)):
            raise _Untranslatable  # Polars: null / NaN-specific answers
        result = _COMPARE[op](left.expr, right.expr if right.expr is not None else right.value)
        # NaN is the largest float in Polars, and matches no range in MongoDB (against a
        # column, only where that column is not null: Polars' answer is null there).
        if left.kind is Kind.FLOAT and op in ("Gt", "GtEq", "NotEq"):
            result = result | _nan_against(left.expr, right.expr)
        if right.expr is not None and right.kind is Kind.FLOAT and op in ("Lt", "LtEq"):
            result = result | _nan_against(right.expr, left.expr)
        return self.loosen(result, (*left.loose, *right.loose), positive)

    def filled(self, left: _Operand, op: str, right: _Operand, positive: bool) -> Expr:
        """``x.fill_null(v) op w``: ``x op w``, or also where x is null when ``v op w``."""
        import polars as pl

        if right.expr is not None or right.value is None or _is_nan(right.value):
            raise _Untranslatable
        assert left.expr is not None
        base = self.compare(replace(left, fill=_NO_FILL), op, right, positive)
        holds = pl.select(_COMPARE[op](pl.lit(left.fill), pl.lit(right.value))).item()
        return base | left.expr.is_null() if holds else base

    def loosen(self, result: Expr, loose: tuple[Expr, ...], positive: bool) -> Expr:
        if loose and not positive:
            raise _Untranslatable  # a superset turns into a subset under ~
        for extra in loose:
            result = result | extra
        return result

    def function(self, body: dict[str, Any], positive: bool) -> Expr:
        inputs = body.get("input", [])
        function = body.get("function")
        if isinstance(function, dict) and "Boolean" in function:
            return self.boolean(function["Boolean"], inputs, positive)
        if isinstance(function, dict) and "StringExpr" in function:
            return self.string(function["StringExpr"], inputs, positive)
        list_fn = function.get("ListExpr") if isinstance(function, dict) else None
        if isinstance(list_fn, dict) and "Contains" in list_fn and len(inputs) == 2:
            item = self.literal(inputs[1])  # a null list: null in Polars, false in MongoDB
            if item is None or _is_nan(item) or isinstance(item, (list, dict)):
                raise _Untranslatable
            return self.column(inputs[0]).list.contains(item)
        raise _Untranslatable

    def boolean(self, name: Any, inputs: list[Any], positive: bool) -> Expr:
        if name == "Not":
            return ~self.predicate(_one(inputs), not positive)
        if name in ("IsNull", "IsNotNull"):
            tested = self.plain(_one(inputs))
            return tested.is_null() if name == "IsNull" else tested.is_not_null()
        if isinstance(name, dict) and "IsIn" in name and len(inputs) == 2:
            values = self.literal(inputs[1])
            if isinstance(values, list) and len(values) == 1 and isinstance(values[0], list):
                values = values[0]
            if not isinstance(values, list) or any(v is None or _is_nan(v) for v in values):
                raise _Untranslatable
            arg = self.operand(inputs[0])
            return self.loosen(self.expression(arg).is_in(values), arg.loose, positive)
        if isinstance(name, dict) and "IsBetween" in name and len(inputs) == 3:
            closed = str(name["IsBetween"].get("closed", "Both")).lower()
            low, high = self.literal(inputs[1]), self.literal(inputs[2])
            if any(v is None or _is_nan(v) for v in (low, high)):
                raise _Untranslatable
            arg = self.operand(inputs[0])  # NaN: never between in either engine
            between = self.expression(arg).between(low, high, closed=closed)
            return self.loosen(between, arg.loose, positive)
        raise _Untranslatable

    def string(self, name: Any, inputs: list[Any], positive: bool) -> Expr:
        if len(inputs) != 2:
            raise _Untranslatable
        arg, text = self.operand(inputs[0]), self.literal(inputs[1])
        if not isinstance(text, str):
            raise _Untranslatable
        subject = self.expression(arg)
        if name == "StartsWith":
            found = subject.starts_with(text)
        elif name == "EndsWith":
            found = subject.ends_with(text)
        elif isinstance(name, dict) and "Contains" in name and (
            name["Contains"].get("literal") is True or not set(text) & _REGEX_SYNTAX
        ):  # a pattern without regex syntax is literal text in both dialects
            found = subject.contains(text)
        else:
            raise _Untranslatable  # a regex: Rust and PCRE syntax differ
        return self.loosen(found, arg.loose, positive)

    # ------------------------------------------------------------------ operands
    def operand(self, node: Any) -> _Operand:
        """A value: a column, a literal, or what ``lm.fld`` says as exactly (or as loosely,
        see :class:`_Operand`): a cast to Float64, ``%``, date parts, case mappings,
        ``fill_null``."""
        if _is_literal(node):
            return _Operand(None, self.literal(node))
        if _is_column(node):
            return _Operand(self.column(node), kind=self.kind(node))
        if not isinstance(node, dict) or len(node) != 1:
            raise _Untranslatable
        (kind, body), = node.items()
        if kind == "Cast":
            return self.cast(body)
        if kind == "BinaryExpr" and body.get("op") == "Modulus":
            return self.modulus(body)
        if kind != "Function":
            raise _Untranslatable
        function, inputs = body.get("function"), body.get("input", [])
        if function == "FillNull" and len(inputs) == 2:
            inner, fill = self.operand(inputs[0]), self.literal(inputs[1])
            if inner.expr is None or inner.fill is not _NO_FILL or fill is None:
                raise _Untranslatable
            return replace(inner, fill=fill)
        if isinstance(function, dict) and function.get("TemporalExpr") in _DATE_PARTS:
            column, zone = self.datetime(_one(inputs))
            part = getattr(column.dt, _DATE_PARTS[function["TemporalExpr"]])
            return _Operand(part(time_zone=zone), kind=Kind.INT)
        if isinstance(function, dict) and function.get("StringExpr") in _CASES:
            column = self.column(_one(inputs))
            mapped = getattr(column.str, _CASES[function["StringExpr"]])()
            # Polars maps all of Unicode, MongoDB ASCII only: fetch non-ASCII strings too.
            return _Operand(mapped, kind=Kind.STR, loose=(column.regex("[^\\x00-\\x7f]"),))
        raise _Untranslatable

    def cast(self, body: dict[str, Any]) -> _Operand:
        """Polars' own casts: an integer compared with a float is cast to Float64."""
        target = body.get("dtype", {}).get("Literal") if isinstance(body.get("dtype"), dict) \
            else None
        inner = self.operand(body.get("expr"))
        if inner.expr is None or inner.fill is not _NO_FILL:
            raise _Untranslatable
        if target == "Float64" and inner.kind is Kind.FLOAT or target == "Int64" \
                and inner.kind is Kind.INT:
            return inner  # no change
        if target != "Float64" or inner.kind is not Kind.INT:
            raise _Untranslatable
        if isinstance(inner.expr.node, n.DatePart):
            return inner  # small integers: exact as floats
        if not isinstance(inner.expr.node, n.Field):
            raise _Untranslatable
        # MongoDB compares an integer with a float exactly; Polars compares the rounded
        # float: beyond 2**53 the two may differ, so such rows are fetched too.
        big = (inner.expr > _EXACT_FLOAT) | (inner.expr < -_EXACT_FLOAT)
        return replace(inner, loose=(*inner.loose, big))

    def modulus(self, body: dict[str, Any]) -> _Operand:
        """Polars' ``%`` floors (the sign of the divisor), ours truncates like ``$mod``:
        ``((x % m) + m) % m`` is the floored remainder, exactly."""
        x, m = self.operand(body["left"]), self.operand(body["right"])
        for side in (x, m):
            if side.loose or side.fill is not _NO_FILL or (
                side.kind is not Kind.INT if side.expr is not None else type(side.value) is not int
            ):
                raise _Untranslatable  # integers only (our % refuses floats)
        if x.expr is None:
            raise _Untranslatable
        divisor: Any = m.expr if m.expr is not None else m.value
        return _Operand(((x.expr % divisor) + divisor) % divisor, kind=Kind.INT)

    def expression(self, operand: _Operand) -> Expr:
        if operand.expr is None or operand.fill is not _NO_FILL:
            raise _Untranslatable
        return operand.expr

    def plain(self, node: Any) -> Expr:
        """An operand whose nulls are exactly the column's (for is_null / is_not_null)."""
        operand = self.operand(node)
        if operand.loose:
            raise _Untranslatable
        return self.expression(operand)

    def datetime(self, node: Any) -> tuple[Expr, str | None]:
        """A datetime column, and the zone Polars takes its parts in."""
        if _is_column(node):
            return self.column(node), self.zones.get(_path(node))
        function = node.get("Function") if isinstance(node, dict) else None
        if not isinstance(function, dict):
            raise _Untranslatable
        temporal = function.get("function")
        convert = temporal.get("TemporalExpr") if isinstance(temporal, dict) else None
        if isinstance(convert, dict) and "ConvertTimeZone" in convert:
            zone = convert["ConvertTimeZone"].get("inner")
            return self.column(_one(function.get("input", []))), zone
        raise _Untranslatable

    # ------------------------------------------------------------------ leaves
    def column(self, node: Any) -> Expr:
        return fld[_path(node)]

    def kind(self, node: Any) -> Kind:
        return self.resolver.resolve(_path(node)).kind

    def literal(self, node: Any) -> Any:
        if not _is_literal(node):
            raise _Untranslatable
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


def _nan_against(side: Expr, other: Expr | None) -> Expr:
    nan = side == math.nan  # noqa: PLW0177 - builds an expression
    return nan if other is None else nan & other.is_not_null()


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
    """A column, or a field of a struct column (``pl.col("a").struct.field("b")``)."""
    try:
        _path(node)
    except _Untranslatable:
        return False
    return True


def _path(node: Any) -> str:
    """The dotted path of a column or of struct fields of it, e.g. ``address.city``."""
    if isinstance(node, dict) and isinstance(node.get("Column"), str):
        return str(node["Column"])
    function = node.get("Function") if isinstance(node, dict) else None
    if isinstance(function, dict):
        struct = function.get("function", {})
        name = struct.get("StructExpr", {}).get("FieldByName") if isinstance(struct, dict) \
            and isinstance(struct.get("StructExpr"), dict) else None
        if isinstance(name, str) and len(function.get("input", [])) == 1:
            return f"{_path(function['input'][0])}.{name}"
    raise _Untranslatable


def _is_literal(node: Any) -> bool:
    return isinstance(node, dict) and "Literal" in node


def _one(inputs: list[Any]) -> Any:
    if len(inputs) != 1:
        raise _Untranslatable
    return inputs[0]


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
