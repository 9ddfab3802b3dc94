"""The expression tree: one small immutable node class per operation.

Nodes are frozen, slotted dataclasses with tuple children, so equal trees compare equal
and hash alike, and building one is cheap. They carry no behaviour: the user-facing
wrapper (``api.Expr``) builds them, ``bind`` checks and resolves them, and each compiler
(``mongo``, ``polars``, ``render``) translates them.

Literal values are stored *frozen* (lists as tuples, dicts as :class:`Doc`), so a tree
can never change after it is built; compilers call :func:`thaw` to get plain values back.

>>> from loom_frames.expr.nodes import Field, Gt, Literal
>>> Gt(Field("age"), Literal(25)) == Gt(Field("age"), Literal(25))
True
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bind import FieldRef

__all__ = [
    "CAST_TARGETS",
    "PREDICATES",
    "SUB_DAY_UNITS",
    "WINDOWABLE",
    "WINDOW_FUNCTIONS",
    "Abs",
    "Add",
    "Aggregation",
    "Alias",
    "And",
    "Arithmetic",
    "Between",
    "Cast",
    "Comparison",
    "Contains",
    "Count",
    "CumSum",
    "DatePart",
    "Day",
    "Div",
    "Doc",
    "EndsWith",
    "Eq",
    "Exists",
    "Field",
    "FillNull",
    "First",
    "FloorDiv",
    "Ge",
    "Gt",
    "Hour",
    "IsIn",
    "IsNotNull",
    "IsNull",
    "Last",
    "Le",
    "Len",
    "LenChars",
    "ListContains",
    "ListLen",
    "Literal",
    "Lower",
    "Lt",
    "Max",
    "Mean",
    "Median",
    "Min",
    "Mod",
    "Month",
    "Mul",
    "NUnique",
    "Ne",
    "Neg",
    "Node",
    "Not",
    "NotIn",
    "Or",
    "Over",
    "Pow",
    "Quantile",
    "Rank",
    "Regex",
    "Replace",
    "RollingMean",
    "Round",
    "Shift",
    "Slice",
    "StartsWith",
    "Std",
    "Strftime",
    "StringCase",
    "StringMatch",
    "Sub",
    "Sum",
    "ToDate",
    "Truncate",
    "Upper",
    "Var",
    "Weekday",
    "When",
    "Year",
    "is_nan",
    "output_name",
    "parse_every",
    "thaw",
]


class Node:
    """Base of every expression node (frozen, slotted, structurally equal)."""

    __slots__ = ()


# --------------------------------------------------------------------------- leaves
@dataclass(frozen=True, slots=True)
class Field(Node):
    """A field reference; ``ref`` is set once the expression is bound to a model."""

    name: str
    ref: FieldRef | None = None


@dataclass(frozen=True, slots=True)
class Doc:
    """An immutable document literal: the frozen form of a ``dict`` value."""

    items: tuple[tuple[str, Any], ...]

    def __repr__(self) -> str:
        return repr(thaw(self))


@dataclass(frozen=True, slots=True, eq=False)
class Literal(Node):
    """A user value. Always compiled as a value, never as an operator or a field path."""

    value: Any

    def __eq__(self, other: object) -> bool:
        return type(other) is Literal and _key(self.value) == _key(other.value)

    def __hash__(self) -> int:
        return hash(_key(self.value))


def _key(value: Any) -> Any:
    """A hashable key telling apart what compiles differently (``1``/``True``/``1.0``, NaN)."""
    if isinstance(value, float):
        return ("float", repr(value))  # nan == nan, -0.0 != 0.0
    if isinstance(value, tuple):
        return ("list", tuple(_key(v) for v in value))
    if isinstance(value, Doc):
        return ("doc", tuple((k, _key(v)) for k, v in value.items))
    return (type(value).__name__, value)


def thaw(value: Any) -> Any:
    """The plain Python form of a frozen literal value (tuples -> lists, Doc -> dict)."""
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    if isinstance(value, Doc):
        return {k: thaw(v) for k, v in value.items}
    return value


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def field_names(cls: type) -> tuple[str, ...]:
    """A node class's dataclass fields, in order (cached: binding walks many trees)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    return names


def children(node: Node) -> list[Node]:
    """The expressions directly under ``node`` (a literal holds a value, no expression).

    >>> children(Add(Field("a"), Literal(1)))
    [Field(name='a', ref=None), Literal(value=1)]
    """
    out: list[Node] = []
    for name in field_names(type(node)):
        value = getattr(node, name)
        if isinstance(value, Node):
            out.append(value)
        elif isinstance(value, tuple):
            out.extend(v for v in value if isinstance(v, Node))
    return out


def unaliased(node: Node) -> Node:
    """``node`` without the ``.alias()`` calls around it.

    >>> unaliased(Alias(Alias(Field("a"), "b"), "c"))
    Field(name='a', ref=None)
    """
    while isinstance(node, Alias):
        node = node.arg
    return node


def output_name(node: Node) -> str:
    """The column an expression produces: its alias, else its leftmost field's name.

    >>> output_name(Gt(Field("address.city"), Literal("A")))
    'city'
    """
    if isinstance(node, Alias):
        return node.name
    if isinstance(node, Field):
        return node.ref.columns[-1] if node.ref is not None else node.name.split(".")[-1]
    if isinstance(node, Len):
        return "len"
    if isinstance(node, When):  # Polars names it after the first value
        return output_name(node.values[0])
    for name in node.__dataclass_fields__:  # type: ignore[attr-defined]
        child = getattr(node, name)
        for item in child if isinstance(child, tuple) else (child,):
            if isinstance(item, Node) and not isinstance(item, Literal):
                return output_name(item)
    return "literal"


def is_nan(value: Any) -> bool:
    """True for a float NaN literal."""
    return isinstance(value, float) and math.isnan(value)


# ---------------------------------------------------------------------- comparisons
@dataclass(frozen=True, slots=True)
class Comparison(Node):
    """``left <op> right`` with MongoDB query semantics (see docs/semantics.md)."""

    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Eq(Comparison):
    """``==``: NaN equals NaN, -0.0 equals 0.0, a list field matches on any element."""


@dataclass(frozen=True, slots=True)
class Ne(Comparison):
    """``!=``: the negation of ``==`` (so it matches null and missing values)."""


@dataclass(frozen=True, slots=True)
class Lt(Comparison):
    """``<``."""


@dataclass(frozen=True, slots=True)
class Le(Comparison):
    """``<=``."""


@dataclass(frozen=True, slots=True)
class Gt(Comparison):
    """``>``."""


@dataclass(frozen=True, slots=True)
class Ge(Comparison):
    """``>=``."""


@dataclass(frozen=True, slots=True)
class IsIn(Node):
    """``arg.is_in(values)``; a ``None`` among the values also matches null / missing."""

    arg: Node
    values: tuple[Literal, ...]


@dataclass(frozen=True, slots=True)
class NotIn(Node):
    """``arg.not_in(values)``: the negation of :class:`IsIn`."""

    arg: Node
    values: tuple[Literal, ...]


@dataclass(frozen=True, slots=True)
class IsNull(Node):
    """``arg.is_null()``: null or missing."""

    arg: Node


@dataclass(frozen=True, slots=True)
class IsNotNull(Node):
    """``arg.is_not_null()``."""

    arg: Node


@dataclass(frozen=True, slots=True)
class Exists(Node):
    """``field.exists(flag)``: MongoDB only (a frame cannot tell missing from null)."""

    arg: Node
    flag: bool = True


@dataclass(frozen=True, slots=True)
class Between(Node):
    """``arg.between(low, high, closed)``; on a list field one element must be in range."""

    arg: Node
    low: Node
    high: Node
    closed: str = "both"


# -------------------------------------------------------------------------- strings
@dataclass(frozen=True, slots=True)
class StringMatch(Node):
    """A literal text match (the text is escaped, never a pattern)."""

    arg: Node
    text: str


@dataclass(frozen=True, slots=True)
class StartsWith(StringMatch):
    """``arg.starts_with(text)``."""


@dataclass(frozen=True, slots=True)
class EndsWith(StringMatch):
    """``arg.ends_with(text)``."""


@dataclass(frozen=True, slots=True)
class Contains(StringMatch):
    """``arg.contains(text)``."""


@dataclass(frozen=True, slots=True)
class Regex(Node):
    """``arg.regex(pattern, flags)``: flags is a subset of ``"imsx"``."""

    arg: Node
    pattern: str
    flags: str = ""


@dataclass(frozen=True, slots=True)
class StringCase(Node):
    """An ASCII case mapping (MongoDB's ``$toLower`` / ``$toUpper``)."""

    arg: Node


@dataclass(frozen=True, slots=True)
class Lower(StringCase):
    """``arg.str.to_lower()``."""


@dataclass(frozen=True, slots=True)
class Upper(StringCase):
    """``arg.str.to_upper()``."""


@dataclass(frozen=True, slots=True)
class LenChars(Node):
    """``arg.str.len_chars()``: the number of characters (Unicode code points)."""

    arg: Node


@dataclass(frozen=True, slots=True)
class Slice(Node):
    """``arg.str.slice(offset, length)`` in characters; a negative offset counts from the end."""

    arg: Node
    offset: int
    length: int | None = None


@dataclass(frozen=True, slots=True)
class Replace(Node):
    """``arg.str.replace(text, value, literal=True)``: the first (or every) occurrence of
    the literal ``text``."""

    arg: Node
    text: str
    value: str
    all: bool = False


# ---------------------------------------------------------------------------- lists
@dataclass(frozen=True, slots=True)
class ListContains(Node):
    """``arg.list.contains(item)``."""

    arg: Node
    item: Literal


@dataclass(frozen=True, slots=True)
class ListLen(Node):
    """``arg.list.len()``: null for a null or missing list."""

    arg: Node


# ---------------------------------------------------------------------------- logic
@dataclass(frozen=True, slots=True)
class And(Node):
    """``a & b & ...`` (flattened)."""

    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or(Node):
    """``a | b | ...`` (flattened)."""

    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not(Node):
    """``~a``."""

    arg: Node


# ----------------------------------------------------------------------- arithmetic
@dataclass(frozen=True, slots=True)
class Arithmetic(Node):
    """``left <op> right``; null in, null out; dividing by zero gives null."""

    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Add(Arithmetic):
    """``+``."""


@dataclass(frozen=True, slots=True)
class Sub(Arithmetic):
    """``-``."""


@dataclass(frozen=True, slots=True)
class Mul(Arithmetic):
    """``*``."""


@dataclass(frozen=True, slots=True)
class Div(Arithmetic):
    """``/`` (always a float; ``x / 0`` is null)."""


@dataclass(frozen=True, slots=True)
class Mod(Arithmetic):
    """``%`` on integers, truncated like MongoDB's ``$mod`` (sign of the dividend)."""


@dataclass(frozen=True, slots=True)
class FloorDiv(Arithmetic):
    """``//``: floor division (``x // 0`` is null)."""


@dataclass(frozen=True, slots=True)
class Pow(Arithmetic):
    """``**`` (``0 ** negative`` is null)."""


@dataclass(frozen=True, slots=True)
class Neg(Node):
    """``-arg``."""

    arg: Node


@dataclass(frozen=True, slots=True)
class Abs(Node):
    """``arg.abs()``."""

    arg: Node


@dataclass(frozen=True, slots=True)
class Round(Node):
    """``arg.round(digits)``, half to even."""

    arg: Node
    digits: int = 0


# ------------------------------------------------------------------------ datetimes
@dataclass(frozen=True, slots=True)
class DatePart(Node):
    """A calendar part of a datetime: in UTC, or in the IANA ``time_zone`` when given."""

    arg: Node
    time_zone: str | None = None


@dataclass(frozen=True, slots=True)
class Year(DatePart):
    """``arg.dt.year()``."""


@dataclass(frozen=True, slots=True)
class Month(DatePart):
    """``arg.dt.month()`` (1-12)."""


@dataclass(frozen=True, slots=True)
class Day(DatePart):
    """``arg.dt.day()`` (day of month, 1-31)."""


@dataclass(frozen=True, slots=True)
class Hour(DatePart):
    """``arg.dt.hour()`` (0-23)."""


@dataclass(frozen=True, slots=True)
class Weekday(DatePart):
    """``arg.dt.weekday()``: ISO, Monday=1 ... Sunday=7 (like Polars)."""


@dataclass(frozen=True, slots=True)
class Truncate(Node):
    """``arg.dt.truncate(every)``, bins aligned like Polars (see :func:`parse_every`); with
    ``time_zone``, bins of local time (the result keeps that zone)."""

    arg: Node
    every: str
    time_zone: str | None = None


@dataclass(frozen=True, slots=True)
class ToDate(Node):
    """``arg.dt.date()``: the calendar date (in UTC)."""

    arg: Node


@dataclass(frozen=True, slots=True)
class Strftime(Node):
    """``arg.dt.strftime(format)`` with the specifiers both engines share."""

    arg: Node
    format: str


SUB_DAY_UNITS = frozenset({"ms", "s", "m", "h"})
"""Truncation units shorter than a day (fixed lengths, whatever the calendar)."""

_EVERY = re.compile(r"^([1-9][0-9]{0,5})(ms|s|m|h|d|w|mo|q|y)$")


def parse_every(every: str) -> tuple[int, str]:
    """Split a truncation interval such as ``"15m"`` into ``(15, "m")``.

    Units: ``ms s m h d w mo q y``; one unit per interval.

    >>> parse_every("1mo")
    (1, 'mo')
    """
    match = _EVERY.match(every) if isinstance(every, str) else None
    if match is None:
        from ..errors import InvalidExpressionError

        raise InvalidExpressionError(
            f"dt.truncate() expects an interval like '15m', '1h', '1d', '1w', '1mo', '1q' or "
            f"'1y' (a positive count and one unit of ms s m h d w mo q y), got {every!r}."
        )
    return int(match.group(1)), match.group(2)


# --------------------------------------------------------------------- aggregations
@dataclass(frozen=True, slots=True)
class Aggregation(Node):
    """An aggregation over a group (only valid as the outermost node)."""

    arg: Node


@dataclass(frozen=True, slots=True)
class Count(Aggregation):
    """``arg.count()``: the number of non-null values."""


@dataclass(frozen=True, slots=True)
class Sum(Aggregation):
    """``arg.sum()`` (0 for an empty or all-null group)."""


@dataclass(frozen=True, slots=True)
class Mean(Aggregation):
    """``arg.mean()``."""


@dataclass(frozen=True, slots=True)
class Min(Aggregation):
    """``arg.min()``."""


@dataclass(frozen=True, slots=True)
class Max(Aggregation):
    """``arg.max()``."""


@dataclass(frozen=True, slots=True)
class First(Aggregation):
    """``arg.first()`` (in document order)."""


@dataclass(frozen=True, slots=True)
class Last(Aggregation):
    """``arg.last()`` (in document order)."""


@dataclass(frozen=True, slots=True)
class Std(Aggregation):
    """``arg.std()``: sample standard deviation (ddof=1)."""


@dataclass(frozen=True, slots=True)
class Var(Aggregation):
    """``arg.var()``: sample variance (ddof=1)."""


@dataclass(frozen=True, slots=True)
class Median(Aggregation):
    """``arg.median()``: the discrete median (a value of the group)."""


@dataclass(frozen=True, slots=True)
class Quantile(Aggregation):
    """``arg.quantile(q)``: the discrete quantile (the ceil(q*n)-th smallest value)."""

    q: float = 0.5


@dataclass(frozen=True, slots=True)
class NUnique(Aggregation):
    """``arg.n_unique()``: the number of distinct non-null values."""


@dataclass(frozen=True, slots=True)
class Len(Node):
    """``lm.len()``: the number of rows of a group (nulls included)."""


# -------------------------------------------------------------------------- windows
@dataclass(frozen=True, slots=True)
class Rank(Node):
    """``arg.rank(method, descending=...)``: null for a null value."""

    arg: Node
    method: str = "average"
    descending: bool = False


@dataclass(frozen=True, slots=True)
class CumSum(Node):
    """``arg.cum_sum()`` in row order (null where the value is null)."""

    arg: Node


@dataclass(frozen=True, slots=True)
class RollingMean(Node):
    """``arg.rolling_mean(window_size)``: the mean of the last ``window_size`` rows, null
    until ``window_size`` non-null values are in the window."""

    arg: Node
    window_size: int


@dataclass(frozen=True, slots=True)
class Shift(Node):
    """``arg.shift(n)``: the value ``n`` rows earlier (later for ``n < 0``)."""

    arg: Node
    n: int = 1


@dataclass(frozen=True, slots=True)
class Over(Node):
    """``arg.over(partition_by, order_by=..., descending=...)``: a window function or an
    aggregation computed per partition, in ``order_by`` order (MongoDB
    ``$setWindowFields``)."""

    arg: Node
    partition_by: tuple[Node, ...] = ()
    order_by: tuple[Node, ...] = ()
    descending: bool = False


# ---------------------------------------------------------------------- conditionals
@dataclass(frozen=True, slots=True)
class When(Node):
    """``lm.when(c1).then(v1).when(c2).then(v2).otherwise(v)``: the first value whose
    condition holds (conditions are two-valued: a null comparison is false)."""

    conditions: tuple[Node, ...]
    values: tuple[Node, ...]
    otherwise: Node


@dataclass(frozen=True, slots=True)
class Cast(Node):
    """``arg.cast(dtype)``: a value that cannot be converted is null (Polars'
    ``strict=False``, MongoDB's ``$convert`` with ``onError: null``)."""

    arg: Node
    dtype: str


CAST_TARGETS = ("Int64", "Float64", "String", "Boolean", "Datetime", "Date")
"""The dtypes :class:`Cast` converts to (by their Polars names)."""


@dataclass(frozen=True, slots=True)
class FillNull(Node):
    """``arg.fill_null(value)``: ``value`` where ``arg`` is null or missing."""

    arg: Node
    value: Node


@dataclass(frozen=True, slots=True)
class Alias(Node):
    """``arg.alias(name)``: names the output column."""

    arg: Node
    name: str


PREDICATES: tuple[type[Node], ...] = (
    Comparison, IsIn, NotIn, IsNull, IsNotNull, Exists, Between, StringMatch, Regex,
    ListContains, And, Or, Not,
)
"""Node classes whose value is a boolean with two values (never null)."""

WINDOW_FUNCTIONS: tuple[type[Node], ...] = (Rank, CumSum, RollingMean, Shift)
"""Nodes that only have a meaning over ordered rows (computed by ``$setWindowFields``)."""

WINDOWABLE: tuple[type[Node], ...] = (*WINDOW_FUNCTIONS, Count, Sum, Mean, Min, Max, First,
                                      Last, Std, Len)
"""What ``.over()`` accepts: window functions and the aggregations a window computes."""
