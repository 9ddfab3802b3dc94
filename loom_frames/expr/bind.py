"""Binding: field names resolved against a model, literals normalised, types checked.

The model/schema side implements :class:`Resolver`; :class:`SimpleResolver` is the small
stand-in for tests and schema-less use. Type checks run twice with the same rules: when a
node is built (fields unknown, so only literal-vs-derived mistakes show, e.g.
``fld['t'].dt.year() > 'x'``) and when the tree is bound (field kinds known).

>>> from loom_frames.expr import Kind, SimpleResolver, fld
>>> users = SimpleResolver("User", {"age": Kind.INT})
>>> (fld["age"] > 25).bind(users).to_mongo()
{'age': {'$gt': 25}}
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bson import Decimal128, ObjectId

from ..errors import FieldNotFoundError, InvalidExpressionError, did_you_mean
from ..fields import normalize_datetime as _normalize_time
from . import nodes as n

__all__ = [
    "FieldRef",
    "Kind",
    "Resolver",
    "SimpleResolver",
    "bind_node",
    "identity",
    "kind_of",
    "normalize_datetime",
    "validate",
    "value_kind",
]


class Kind(enum.Enum):
    """What a field holds, as far as expressions care."""

    INT = "int"
    FLOAT = "float"
    STR = "str"
    BOOL = "bool"
    DATETIME = "datetime"
    DATE = "date"
    OBJECTID = "objectid"
    DECIMAL = "decimal"
    UUID = "uuid"
    ENUM = "enum"
    LIST = "list"
    STRUCT = "struct"
    ANY = "any"


def identity(value: Any) -> Any:
    """The default literal normaliser: returns its argument."""
    return value


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A resolved field: where it lives in MongoDB and in a frame, and what it holds.

    >>> FieldRef("address.city", ("address", "city"), Kind.STR)
    FieldRef(path='address.city', columns=('address', 'city'), kind=<Kind.STR: 'str'>, item=None)
    """

    path: str
    columns: tuple[str, ...]
    kind: Kind
    item: FieldRef | None = None
    normalize: Callable[[Any], Any] = dataclasses.field(default=identity, repr=False)


class Resolver(Protocol):
    """Resolves user-facing field names of one model (implemented by the schema side)."""

    model_name: str

    def resolve(self, name: str) -> FieldRef:
        """The field called ``name``; ``FieldNotFoundError`` (with a hint) if none.

        >>> SimpleResolver("User", {"age": Kind.INT}).resolve("age").kind
        <Kind.INT: 'int'>
        """
        ...


class SimpleResolver:
    """A resolver over a fixed mapping ``{name: FieldRef | Kind}``.

    A bare :class:`Kind` means "stored under its own name" (``columns`` split on dots).
    ``"id"`` and ``"_id"`` find each other.

    >>> r = SimpleResolver("User", {"id": FieldRef("_id", ("id",), Kind.OBJECTID), "age": Kind.INT})
    >>> r.resolve("_id").columns, r.resolve("age").path
    (('id',), 'age')
    >>> r.resolve("agee")
    Traceback (most recent call last):
    ...
    loom_frames.errors.FieldNotFoundError: User has no field 'agee'. Hint: did you mean 'age'?
    """

    __slots__ = ("_fields", "model_name")

    def __init__(self, model_name: str, fields: Mapping[str, FieldRef | Kind]) -> None:
        self.model_name = model_name
        self._fields: dict[str, FieldRef] = {
            name: ref if isinstance(ref, FieldRef) else _ref_for(name, ref)
            for name, ref in fields.items()
        }

    def resolve(self, name: str) -> FieldRef:
        """Look ``name`` up by key, then by storage path, then ``id`` <-> ``_id``.

        >>> SimpleResolver("User", {"_id": Kind.OBJECTID}).resolve("id").path
        '_id'
        """
        ref = self._fields.get(name)
        if ref is not None:
            return ref
        for candidate in self._fields.values():
            if candidate.path == name:
                return candidate
        twin = {"id": "_id", "_id": "id"}.get(name)
        if twin is not None and twin in self._fields:
            return self._fields[twin]
        raise FieldNotFoundError(
            f"{self.model_name} has no field {name!r}." + did_you_mean(name, self._fields)
        )

    def __repr__(self) -> str:
        return f"SimpleResolver({self.model_name!r}, {sorted(self._fields)!r})"


def _ref_for(name: str, kind: Kind) -> FieldRef:
    normalize = normalize_datetime if kind is Kind.DATETIME else identity
    return FieldRef(name, tuple(name.split(".")), kind, normalize=normalize)


def normalize_datetime(value: Any) -> Any:
    """The project's time rule (:func:`loom_frames.fields.normalize_datetime`) for a
    literal of any type: datetimes normalised, anything else returned as it is.

    >>> normalize_datetime(_dt.datetime(2024, 5, 1, 12, 0, 0, 123456))
    datetime.datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=datetime.timezone.utc)
    """
    return _normalize_time(value) if isinstance(value, _dt.datetime) else value


# ---------------------------------------------------------------------------- kinds
_NUMERIC = frozenset({Kind.INT, Kind.FLOAT, Kind.DECIMAL})
_TEMPORAL = frozenset({Kind.DATETIME, Kind.DATE})
_ORDERED = _NUMERIC | _TEMPORAL | {Kind.STR, Kind.BOOL, Kind.OBJECTID, Kind.ENUM, Kind.ANY}
_VALUE_KINDS: dict[type, Kind] = {
    bool: Kind.BOOL, int: Kind.INT, float: Kind.FLOAT, str: Kind.STR,
    decimal.Decimal: Kind.DECIMAL, Decimal128: Kind.DECIMAL, _dt.datetime: Kind.DATETIME,
    _dt.date: Kind.DATE, ObjectId: Kind.OBJECTID, uuid.UUID: Kind.UUID, tuple: Kind.LIST,
    n.Doc: Kind.STRUCT, bytes: Kind.ANY,
}


def value_kind(value: Any) -> Kind:
    """The kind of a (frozen) literal value."""
    kind = _VALUE_KINDS.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, enum.Enum):
        return Kind.ENUM
    for cls, kind in _VALUE_KINDS.items():
        if isinstance(value, cls):
            return kind
    return Kind.ANY


def kind_of(node: n.Node) -> Kind:
    """The static kind of a node's value (``ANY`` when unknown, e.g. an unbound field)."""
    if isinstance(node, n.Field):
        return node.ref.kind if node.ref is not None else Kind.ANY
    if isinstance(node, n.Literal):
        return value_kind(node.value)
    if isinstance(node, n.PREDICATES):
        return Kind.BOOL
    if isinstance(node, n.Arithmetic):
        kinds = {kind_of(node.left), kind_of(node.right)}
        if Kind.DECIMAL in kinds:
            return Kind.DECIMAL
        if isinstance(node, n.Div) or Kind.FLOAT in kinds:
            return Kind.FLOAT
        return Kind.INT if kinds == {Kind.INT} else Kind.ANY
    if isinstance(node, n.Sum):  # booleans are counted (Polars and $sum of $toInt)
        kind = kind_of(node.arg)
        return Kind.INT if kind is Kind.BOOL else kind
    if isinstance(node, (n.Neg, n.Abs, n.Round, n.Alias, n.Min, n.Max, n.First, n.Last)):
        return kind_of(node.arg)
    if isinstance(node, (n.DatePart, n.ListLen, n.Count, n.NUnique)):
        return Kind.INT
    if isinstance(node, n.Truncate):
        return Kind.DATE if kind_of(node.arg) is Kind.DATE else Kind.DATETIME
    if isinstance(node, (n.StringCase, n.Slice, n.Replace, n.Strftime)):
        return Kind.STR
    if isinstance(node, (n.LenChars, n.Len)):
        return Kind.INT
    if isinstance(node, n.ToDate):
        return Kind.DATE
    if isinstance(node, n.Cast):
        return CAST_KINDS[node.dtype]
    if isinstance(node, n.FillNull):
        return _common_of((node.arg, node.value))
    if isinstance(node, n.When):
        return _common_of((*node.values, node.otherwise))
    if isinstance(node, n.Rank):
        return Kind.FLOAT if node.method == "average" else Kind.INT
    if isinstance(node, n.RollingMean):
        return Kind.FLOAT
    if isinstance(node, n.CumSum):
        kind = kind_of(node.arg)
        return Kind.INT if kind is Kind.BOOL else kind
    if isinstance(node, (n.Shift, n.Over)):
        return kind_of(node.arg)
    if isinstance(node, (n.Mean, n.Std, n.Var, n.Median, n.Quantile)):
        return Kind.FLOAT
    return Kind.ANY


CAST_KINDS: dict[str, Kind] = {
    "Int64": Kind.INT, "Float64": Kind.FLOAT, "String": Kind.STR, "Boolean": Kind.BOOL,
    "Datetime": Kind.DATETIME, "Date": Kind.DATE,
}
"""The kind of a cast's result, by target dtype name."""

CAST_SOURCES: dict[str, frozenset[Kind]] = {
    "Int64": frozenset({Kind.INT, Kind.FLOAT, Kind.BOOL, Kind.STR}),
    "Float64": frozenset({Kind.INT, Kind.FLOAT, Kind.BOOL, Kind.STR}),
    "String": frozenset({Kind.INT, Kind.STR, Kind.BOOL}),
    "Boolean": frozenset({Kind.INT, Kind.FLOAT, Kind.BOOL}),
    "Datetime": frozenset({Kind.INT, Kind.DATETIME, Kind.DATE}),
    "Date": frozenset({Kind.DATETIME, Kind.DATE}),
}
"""What each cast converts from with one meaning in both engines (a float's text is
``1`` in MongoDB and ``1.0`` in Polars, so floats are not cast to String)."""


def _common_of(nodes: tuple[n.Node, ...]) -> Kind:
    """The kind of a value that is one of ``nodes``' values: unknown (ANY) when one of
    them is of unknown kind (an unbound field), null literals aside."""
    kinds = tuple(kind_of(x) for x in nodes
                  if not (isinstance(x, n.Literal) and x.value is None))
    return Kind.ANY if Kind.ANY in kinds else _common(kinds)


def _common(kinds: tuple[Kind, ...]) -> Kind:
    """The kind of a value that is one of ``kinds`` (null literals aside)."""
    known = {k for k in kinds if k is not Kind.ANY}
    if len(known) == 1:
        return known.pop()
    if known == {Kind.INT, Kind.FLOAT}:
        return Kind.FLOAT
    return Kind.ANY


def _compatible(a: Kind, b: Kind) -> bool:
    if a is Kind.ANY or b is Kind.ANY or a is b:
        return True
    if a in _NUMERIC and b in _NUMERIC or a in _TEMPORAL and b in _TEMPORAL:
        return True
    return Kind.ENUM in (a, b) and {a, b} <= {Kind.ENUM, Kind.STR, Kind.INT}


def item_ref(node: n.Node) -> FieldRef | None:
    """The element :class:`FieldRef` when ``node`` is a bound list field, else None."""
    if isinstance(node, n.Field) and node.ref is not None and node.ref.kind is Kind.LIST:
        return node.ref.item or FieldRef(node.ref.path, node.ref.columns, Kind.ANY)
    return None


# ------------------------------------------------------------------------ validation
def _fail(message: str, model: str | None) -> InvalidExpressionError:
    return InvalidExpressionError(f"{model}: {message}" if model else message)


def _describe(node: n.Node) -> str:
    from .render import to_source  # the source printer is not a compiler target

    kind = kind_of(node)
    text = to_source(node)
    return text if kind is Kind.ANY else f"{text} ({kind.value})"


def _check_operand(node: n.Node, kinds: frozenset[Kind], what: str, model: str | None) -> None:
    kind = kind_of(node)
    if kind is not Kind.ANY and kind not in kinds:
        raise _fail(f"{what} needs {' or '.join(sorted(k.value for k in kinds))} values, "
                    f"got {_describe(node)}.", model)


def _check_compare(node: n.Node, left: n.Node, right: n.Node, model: str | None) -> None:
    ordered = not isinstance(node, (n.Eq, n.Ne, n.IsIn, n.NotIn, n.ListContains))
    item = item_ref(left)
    lk = item.kind if item is not None and not _is_list_literal(right) else kind_of(left)
    rk = kind_of(right)
    if isinstance(left, n.Aggregation) or isinstance(right, n.Aggregation):
        raise _fail("an aggregation can only be the outermost expression (optionally "
                    ".alias()-ed), not part of a comparison.", model)
    if item is not None and not isinstance(right, n.Literal):
        raise _fail(f"comparing the list field {_describe(left)} with the expression "
                    f"{_describe(right)} is not supported. Hint: compare it with a literal, "
                    "or use .list.contains() / .list.len().", model)
    if ordered and (rk in (Kind.LIST, Kind.STRUCT) or lk in (Kind.STRUCT,)):
        raise _fail(f"ordered comparison of {_describe(left)} with {_describe(right)}: "
                    "lists and documents can only be compared with == and !=.", model)
    if not _compatible(lk, rk):
        hint = f" Hint: compare with a {lk.value} value." if lk is not Kind.ANY else ""
        raise _fail(f"cannot compare {_describe(left)} with {_describe(right)}: values of "
                    f"different types never match.{hint}", model)
    if isinstance(left, n.StringCase) and isinstance(node, (n.Eq, n.Ne)) \
            and isinstance(right, n.Literal) and isinstance(right.value, str):
        mapped = _ascii_case(right.value, lower=isinstance(left, n.Lower))
        if mapped != right.value:
            raise _fail(f"{_describe(left)} is compared with {right.value!r}, which it can "
                        f"never equal. Hint: write the literal as {mapped!r}.", model)


def _ascii_case(text: str, lower: bool) -> str:
    table = _LOWER if lower else _UPPER
    return text.translate(table)


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _is_list_literal(node: n.Node) -> bool:
    return isinstance(node, n.Literal) and isinstance(node.value, tuple)


def _check_predicate(node: n.Node, model: str | None) -> None:
    if isinstance(node, n.PREDICATES):
        return
    if isinstance(node, n.Field) and kind_of(node) in (Kind.BOOL, Kind.ANY):
        return
    raise _fail(f"{_describe(node)} is not a condition; & | ~ combine conditions such as "
                "comparisons, .is_in(), .is_null() or boolean fields.", model)


def validate(node: n.Node, model: str | None = None) -> n.Node:
    """Check one node against the kinds of its children; return it unchanged.

    >>> from loom_frames.expr import fld
    >>> fld["t"].dt.year() > "2024"
    Traceback (most recent call last):
    ...
    loom_frames.errors.InvalidExpressionError: cannot compare fld['t'].dt.year() (int) with '2024' (str): values of different types never match. Hint: compare with a int value.
    """
    if isinstance(node, n.Comparison):
        _check_compare(node, node.left, node.right, model)
    elif isinstance(node, (n.IsIn, n.NotIn)):
        for value in node.values:
            if value.value is not None:
                _check_compare(node, node.arg, value, model)
    elif isinstance(node, n.Between):
        _check_compare(n.Ge(node.arg, node.low), node.arg, node.low, model)
        _check_compare(n.Le(node.arg, node.high), node.arg, node.high, model)
    elif isinstance(node, n.ListContains):
        _check_operand(node.arg, frozenset({Kind.LIST}), ".list.contains()", model)
        item = item_ref(node.arg)
        if item is not None and not _compatible(item.kind, kind_of(node.item)):
            raise _fail(f"{_describe(node.arg)} holds {item.kind.value} elements, "
                        f".list.contains() got {_describe(node.item)}.", model)
    elif isinstance(node, n.ListLen):
        _check_operand(node.arg, frozenset({Kind.LIST}), ".list.len()", model)
    elif isinstance(node, (n.StringMatch, n.Regex, n.StringCase, n.LenChars, n.Slice,
                           n.Replace)):
        _check_operand(node.arg, frozenset({Kind.STR, Kind.ENUM}), "a string operation", model)
    elif isinstance(node, (n.ToDate, n.Strftime)):
        _check_operand(node.arg, frozenset({Kind.DATETIME}), "a .dt operation", model)
    elif isinstance(node, n.Cast):
        sources = CAST_SOURCES[node.dtype]
        if kind_of(node.arg) not in sources | {Kind.ANY}:
            hint = (" Hint: use .dt.strftime(format)." if node.dtype == "String"
                    and kind_of(node.arg) in _TEMPORAL else
                    " Hint: round() it and cast to Int64 first." if node.dtype == "String"
                    else "")
            raise _fail(f"cast({node.dtype}) converts "
                        f"{' or '.join(sorted(k.value for k in sources))} values with one "
                        f"meaning in MongoDB and Polars, got {_describe(node.arg)}.{hint}",
                        model)
    elif isinstance(node, n.FillNull):
        if not _compatible(kind_of(node.arg), kind_of(node.value)):
            raise _fail(f"fill_null(): {_describe(node.value)} does not fit "
                        f"{_describe(node.arg)}.", model)
    elif isinstance(node, n.When):
        for condition in node.conditions:
            _check_predicate(condition, model)
        kinds = [kind_of(v) for v in (*node.values, node.otherwise)
                 if not (isinstance(v, n.Literal) and v.value is None)]
        if kinds and _common(tuple(kinds)) is Kind.ANY and Kind.ANY not in kinds:
            raise _fail(f"when/then/otherwise values must have one type, got "
                        f"{', '.join(sorted({k.value for k in kinds}))}.", model)
    elif isinstance(node, (n.CumSum, n.RollingMean)):
        _check_operand(node.arg, _NUMERIC | {Kind.BOOL}, "a cumulative / rolling window",
                       model)
    elif isinstance(node, n.Over):
        if not isinstance(node.arg, n.WINDOWABLE):
            raise _fail(f"{_describe(node.arg)}.over(): over() takes a window function "
                        "(rank, cum_sum, rolling_mean, shift) or an aggregation (sum, mean, "
                        "min, max, first, last, count, std).", model)
        for child in (*node.partition_by, *node.order_by):
            if _contains_window(child):
                raise _fail("over(): partition and order keys cannot hold aggregations "
                            "or windows.", model)
    elif isinstance(node, (n.DatePart, n.Truncate)):
        _check_operand(node.arg, _TEMPORAL, "a .dt operation", model)
        if kind_of(node.arg) is Kind.DATE and (
            isinstance(node, n.Hour)
            or isinstance(node, n.Truncate) and n.parse_every(node.every)[1] in n.SUB_DAY_UNITS
        ):
            raise _fail(f"{_describe(node.arg)} is a date: it has no time of day.", model)
        if node.time_zone is not None and kind_of(node.arg) is Kind.DATE:
            raise _fail(f"{_describe(node.arg)} is a date: it has no time zone. Hint: drop "
                        f"time_zone={node.time_zone!r}.", model)
    elif isinstance(node, n.Pow):
        for side in (node.left, node.right):
            _check_operand(side, _NUMERIC, "arithmetic", model)
        exponent = node.right
        if kind_of(node.left) is Kind.INT and kind_of(exponent) is Kind.INT and not (
            isinstance(exponent, n.Literal) and exponent.value >= 0
        ):
            raise _fail(f"{_describe(node)}: an integer raised to an integer power needs a "
                        "non-negative literal exponent (a negative one is a float). Hint: "
                        "cast the base to Float64 first, as Polars asks.", model)
    elif isinstance(node, n.Arithmetic):
        for side in (node.left, node.right):
            _check_operand(side, _NUMERIC, "arithmetic", model)
    elif isinstance(node, (n.Neg, n.Abs, n.Round)):
        _check_operand(node.arg, _NUMERIC, "arithmetic", model)
    elif isinstance(node, (n.And, n.Or)):
        for arg in node.args:
            _check_predicate(arg, model)
    elif isinstance(node, n.Not):
        _check_predicate(node.arg, model)
    elif isinstance(node, n.Aggregation):
        _check_aggregation(node, model)
    if not isinstance(node, (n.Alias, n.Aggregation, n.Over, *n.WINDOW_FUNCTIONS)):
        for child in _children(node):
            if isinstance(child, (n.Aggregation, n.Len)):
                raise _fail("an aggregation can only be the outermost expression "
                            "(optionally .alias()-ed).", model)
            if isinstance(child, (n.Over, *n.WINDOW_FUNCTIONS)):
                raise _fail(f"{_describe(child)} is a window: it can only be the outermost "
                            "expression of a column (optionally .alias()-ed). Hint: compute "
                            "it in one with_columns(), combine it in the next.", model)
    if isinstance(node, (n.Aggregation, *n.WINDOW_FUNCTIONS)):
        arg = node.arg  # type: ignore[attr-defined]
        if isinstance(arg, (n.Over, *n.WINDOW_FUNCTIONS)):
            raise _fail(f"{_describe(node)}: windows cannot be nested.", model)
    return node


def _contains_window(node: n.Node) -> bool:
    if isinstance(node, (n.Aggregation, n.Len, n.Over, *n.WINDOW_FUNCTIONS)):
        return True
    return any(_contains_window(c) for c in _children(node))


def _check_aggregation(node: n.Aggregation, model: str | None) -> None:
    if isinstance(node.arg, (n.Aggregation, n.Alias)):
        raise _fail(f"{_describe(node)}: aggregations cannot be nested or aliased inside.",
                    model)
    if isinstance(node, (n.Sum, n.Mean, n.Std, n.Var, n.Median, n.Quantile)):
        _check_operand(node.arg, _NUMERIC | {Kind.BOOL}, f".{type(node).__name__.lower()}()",
                       model)
    elif isinstance(node, (n.Min, n.Max)):
        _check_operand(node.arg, _ORDERED, f".{type(node).__name__.lower()}()", model)


_field_names = n.field_names
_children = n.children


# --------------------------------------------------------------------------- binding
def bind_node(node: n.Node, resolver: Resolver) -> n.Node:
    """Resolve every field of ``node`` with ``resolver``, normalise literals, re-check.

    >>> from loom_frames.expr import Kind, SimpleResolver, fld
    >>> fld["age"].bind(SimpleResolver("User", {"age": Kind.INT})).node.ref.kind
    <Kind.INT: 'int'>
    """
    return _bind(node, resolver, getattr(resolver, "model_name", None))


def _bind(node: n.Node, resolver: Resolver, model: str | None) -> n.Node:
    if isinstance(node, n.Field):
        return n.Field(node.name, resolver.resolve(node.name))
    if isinstance(node, n.Literal):
        return node
    args: list[Any] = []
    for name in _field_names(type(node)):
        value = getattr(node, name)
        if isinstance(value, n.Node):
            value = _bind(value, resolver, model)
        elif isinstance(value, tuple) and value and isinstance(value[0], n.Node):
            value = tuple(_bind(v, resolver, model) for v in value)
        args.append(value)
    return validate(_normalize_literals(type(node)(*args), model), model)


def _normalize_literals(node: n.Node, model: str | None) -> n.Node:
    if isinstance(node, n.Comparison) and isinstance(node.right, n.Literal):
        return dataclasses.replace(node, right=_norm(node.left, node.right, model))
    if isinstance(node, (n.IsIn, n.NotIn)):
        values = tuple(v if v.value is None else _norm(node.arg, v, model) for v in node.values)
        return dataclasses.replace(node, values=values)
    if isinstance(node, n.Between):
        low = _norm(node.arg, node.low, model) if isinstance(node.low, n.Literal) else node.low
        high = _norm(node.arg, node.high, model) if isinstance(node.high, n.Literal) \
            else node.high
        return dataclasses.replace(node, low=low, high=high)
    if isinstance(node, n.ListContains):
        item = item_ref(node.arg)
        return dataclasses.replace(node, item=_norm_with(item, node.item, model)) \
            if item is not None else node
    return node


def _norm(target: n.Node, literal: n.Literal, model: str | None) -> n.Literal:
    item = item_ref(target)
    if item is not None:
        if isinstance(literal.value, tuple):
            return n.Literal(tuple(_norm_with(item, n.Literal(v), model).value
                                   for v in literal.value))
        return _norm_with(item, literal, model)
    if isinstance(target, n.Field) and target.ref is not None:
        return _norm_with(target.ref, literal, model)
    return literal


def _norm_with(ref: FieldRef, literal: n.Literal, model: str | None) -> n.Literal:
    value = literal.value
    if value is None:
        return literal
    try:
        value = _coerce(ref.kind, ref.normalize(value))
    except InvalidExpressionError:
        raise
    except Exception as exc:  # a normaliser rejecting the value is a type error
        raise _fail(f"{value!r} is not a valid value for field {ref.path!r} "
                    f"({ref.kind.value}): {exc}", model) from exc
    return literal if value is literal.value else n.Literal(value)


def _coerce(kind: Kind, value: Any) -> Any:
    """Field-kind conventions every resolver gets for free."""
    if kind is Kind.OBJECTID and isinstance(value, str):
        return ObjectId(value)  # InvalidId for anything but 24 hex characters
    if kind is Kind.UUID and isinstance(value, str):
        return uuid.UUID(value)
    if kind is Kind.DATETIME:
        if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
            return _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.UTC)
        return normalize_datetime(value)
    if kind is Kind.ENUM and isinstance(value, enum.Enum):
        return value.value
    return value
