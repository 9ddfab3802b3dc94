"""The user-facing expression wrapper: ``fld['age'] > 25`` builds an immutable tree.

:class:`Expr` only overloads operators and builds nodes (checking them as it goes); the
compilers live in their own modules and are reached through ``to_mongo()``,
``to_mongo_expr()``, ``to_mongo_accumulator()`` and ``to_polars()``.

>>> from loom_frames.expr import fld
>>> ((fld["age"] > 25) & (fld["is_active"] == True)).to_mongo()  # noqa: E712
{'age': {'$gt': 25}, 'is_active': {'$eq': True}}
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import re
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bson import Decimal128, ObjectId

from ..errors import InvalidExpressionError
from . import nodes as n
from .bind import Resolver, bind_node, normalize_datetime, validate
from .render import to_source

if TYPE_CHECKING:
    import polars as pl

    from .mongo import MongoAccumulator

__all__ = ["Expr", "col", "fld"]

_SCALARS = (bool, int, float, str, bytes, decimal.Decimal, Decimal128, ObjectId, uuid.UUID,
            _dt.date)
_FLAGS = {re.IGNORECASE: "i", re.MULTILINE: "m", re.DOTALL: "s", re.VERBOSE: "x"}
_CLOSED = ("both", "left", "right", "none")


def _check_name(name: object, what: str = "field name") -> str:
    if not isinstance(name, str):
        raise InvalidExpressionError(f"a {what} must be a str, got {type(name).__name__} "
                                     f"{name!r}. Hint: fld['age'] or fld('age').")
    if not name or "\x00" in name or any(not part or part.startswith("$")
                                        for part in name.split(".")):
        raise InvalidExpressionError(
            f"invalid {what} {name!r}: names must be non-empty, contain no NUL character, "
            "and no dot-separated part may be empty or start with '$'. Hint: operators are "
            "written with Python operators and methods, never as '$' names.")
    return name


def _freeze(value: Any, where: str) -> Any:
    """Validate a user value and return its frozen (hashable, immutable) form."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, _dt.datetime):
        return normalize_datetime(value)
    if isinstance(value, int) and not isinstance(value, bool) \
            and not -(2**63) <= value < 2**63:
        raise InvalidExpressionError(f"{where}: {value} does not fit in a 64-bit integer, "
                                     "the largest integer MongoDB stores.")
    if value is None or isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, where) for v in value)
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str) or "\x00" in key:
                raise InvalidExpressionError(f"{where}: document keys must be str without "
                                             f"NUL characters, got {key!r}.")
        return n.Doc(tuple((k, _freeze(v, where)) for k, v in value.items()))
    if isinstance(value, Expr):
        raise InvalidExpressionError(f"{where} takes literal values, got the expression "
                                     f"{value!r}.")
    hint = " Hint: use .regex() for patterns." if isinstance(value, re.Pattern) else ""
    raise InvalidExpressionError(f"{where}: unsupported literal {value!r} of type "
                                 f"{type(value).__name__}.{hint}")


def _node(value: Any, where: str) -> n.Node:
    if isinstance(value, Expr):
        return value.node
    return n.Literal(_freeze(value, where))


def _values(values: Any, method: str) -> tuple[n.Literal, ...]:
    if isinstance(values, (str, bytes, dict, Expr)) or not isinstance(values, Iterable):
        raise InvalidExpressionError(
            f".{method}() takes a collection of values (list, tuple, set, ...), got "
            f"{type(values).__name__} {values!r}. Hint: .{method}([{values!r}]).")
    items = list(values)
    if isinstance(values, (set, frozenset)):
        items.sort(key=lambda v: (type(v).__name__, repr(v)))
    frozen = tuple(_freeze(v, f".{method}()") for v in items)
    if any(isinstance(v, tuple) for v in frozen):
        raise InvalidExpressionError(f".{method}() values must be scalars or documents, "
                                     "not lists.")
    return tuple(n.Literal(v) for v in frozen)


class Expr:
    """An immutable expression; operators and methods return new expressions.

    >>> e = (fld["age"] >= 18) & fld["name"].str.to_lower().starts_with("b")
    >>> e
    (fld['age'] >= 18) & fld['name'].str.to_lower().starts_with('b')
    >>> e.to_mongo()  # doctest: +NORMALIZE_WHITESPACE
    {'age': {'$gte': 18}, '$expr': {'$regexMatch': {'input': {'$cond': [{'$lte': ['$name', None]},
     None, {'$toLower': '$name'}]}, 'regex': '^b'}}}
    """

    __slots__ = ("_node",)
    _node: n.Node

    def __init__(self, node: n.Node) -> None:
        object.__setattr__(self, "_node", node)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("expressions are immutable")

    @property
    def node(self) -> n.Node:
        """The expression tree.

        >>> fld["age"].node
        Field(name='age', ref=None)
        """
        return self._node

    def _new(self, node: n.Node) -> Expr:
        return Expr(validate(node))

    # ------------------------------------------------------------ python protocol
    def __repr__(self) -> str:
        return to_source(self._node)

    def __hash__(self) -> int:
        return hash(self._node)

    def equals(self, other: object) -> bool:
        """Structural equality (``==`` builds a comparison instead).

        >>> (fld["a"] > 1).equals(fld["a"] > 1)
        True
        """
        return isinstance(other, Expr) and self._node == other._node

    def __bool__(self) -> bool:
        raise TypeError(
            f"the truth value of the expression {self!r} is ambiguous: it is evaluated by "
            "MongoDB or Polars, not by Python. Hint: use & not and, | not or, ~ not not; "
            "chained comparisons a < x < b are not supported (use x.between(a, b)); for "
            "membership use x.is_in([...]) instead of `in`; for identity with None use "
            ".is_null() / .is_not_null()."
        )

    def __contains__(self, item: object) -> bool:
        raise TypeError("`in` cannot test an expression. Hint: use fld['x'].is_in([...]) or "
                        "fld['tags'].list.contains(value).")

    # --------------------------------------------------------------- comparisons
    def _compare(self, cls: type[n.Comparison], other: Any) -> Expr:
        if other is None:
            hint = {n.Eq: "use .is_null()", n.Ne: "use .is_not_null()"}.get(
                cls, "ordered comparisons with None never match")
            raise InvalidExpressionError(f"cannot compare {self!r} with None. Hint: {hint}.")
        return self._new(cls(self._node, _node(other, "a comparison")))

    def __eq__(self, other: Any) -> Expr:  # type: ignore[override]
        return self._compare(n.Eq, other)

    def __ne__(self, other: Any) -> Expr:  # type: ignore[override]
        return self._compare(n.Ne, other)

    def __lt__(self, other: Any) -> Expr:
        return self._compare(n.Lt, other)

    def __le__(self, other: Any) -> Expr:
        return self._compare(n.Le, other)

    def __gt__(self, other: Any) -> Expr:
        return self._compare(n.Gt, other)

    def __ge__(self, other: Any) -> Expr:
        return self._compare(n.Ge, other)

    def is_in(self, values: Iterable[Any]) -> Expr:
        """True when the value (or, for a list field, any element) is one of ``values``.

        A ``None`` among the values also matches null and missing.

        >>> fld["city"].is_in(["Paris", "Oslo"]).to_mongo()
        {'city': {'$in': ['Paris', 'Oslo']}}
        """
        return self._new(n.IsIn(self._node, _values(values, "is_in")))

    def not_in(self, values: Iterable[Any]) -> Expr:
        """The negation of :meth:`is_in` (matches null and missing unless None is listed).

        >>> fld["city"].not_in(["Paris"]).to_mongo()
        {'city': {'$nin': ['Paris']}}
        """
        return self._new(n.NotIn(self._node, _values(values, "not_in")))

    def is_null(self) -> Expr:
        """Null or missing.

        >>> fld["email"].is_null().to_mongo()
        {'email': {'$eq': None}}
        """
        return self._new(n.IsNull(self._node))

    def is_not_null(self) -> Expr:
        """Neither null nor missing.

        >>> fld["email"].is_not_null().to_mongo()
        {'email': {'$ne': None}}
        """
        return self._new(n.IsNotNull(self._node))

    def exists(self, flag: bool = True) -> Expr:
        """The field is present in the document (null counts as present). MongoDB only.

        >>> fld["email"].exists().to_mongo()
        {'email': {'$exists': True}}
        """
        if not isinstance(self._node, n.Field):
            raise InvalidExpressionError(f".exists() applies to a field, not to {self!r}.")
        if not isinstance(flag, bool):
            raise InvalidExpressionError(f".exists() takes True or False, got {flag!r}.")
        return self._new(n.Exists(self._node, flag))

    def between(self, lower: Any, upper: Any, closed: str = "both") -> Expr:
        """``lower <= x <= upper``; ``closed`` is ``'both'``, ``'left'``, ``'right'`` or
        ``'none'``. On a list field, one element must be in range.

        >>> fld["age"].between(18, 65, closed="left").to_mongo()
        {'age': {'$gte': 18, '$lt': 65}}
        """
        if closed not in _CLOSED:
            raise InvalidExpressionError(f"between(closed=...) must be one of {_CLOSED}, "
                                         f"got {closed!r}.")
        if lower is None or upper is None:
            raise InvalidExpressionError("between() bounds cannot be None. Hint: use a "
                                         "single comparison such as fld['x'] >= lower.")
        return self._new(n.Between(self._node, _node(lower, "between()"),
                                   _node(upper, "between()"), closed))

    # -------------------------------------------------------------------- strings
    def starts_with(self, text: str) -> Expr:
        """The string starts with the literal ``text``.

        >>> fld["name"].starts_with("Al.").to_mongo()
        {'name': {'$regex': '^Al\\\\.'}}
        """
        return self._new(n.StartsWith(self._node, _text(text, "starts_with")))

    def ends_with(self, text: str) -> Expr:
        """The string ends with the literal ``text``.

        >>> fld["email"].ends_with("@example.com").to_mongo()
        {'email': {'$regex': '@example\\\\.com\\\\z'}}
        """
        return self._new(n.EndsWith(self._node, _text(text, "ends_with")))

    def contains(self, text: str) -> Expr:
        """The string contains the literal ``text`` (not a pattern).

        >>> fld["name"].contains("a+b").to_mongo()
        {'name': {'$regex': 'a\\\\+b'}}
        """
        return self._new(n.Contains(self._node, _text(text, "contains")))

    def regex(self, pattern: str, flags: str | int = "") -> Expr:
        """Regular-expression search; ``flags`` from ``"imsx"`` (or ``re.I | re.M ...``).

        Write patterns in the subset PCRE (MongoDB) and Rust regex (Polars) share.

        >>> fld["name"].regex("^b.b", "i").to_mongo()
        {'name': {'$regex': '^b.b', '$options': 'i'}}
        """
        return self._new(n.Regex(self._node, _text(pattern, "regex"), _flags(flags)))

    @property
    def str(self) -> StrNamespace:
        """String methods: ``to_lower``, ``to_upper``, ``starts_with``, ... ."""
        return StrNamespace(self)

    @property
    def list(self) -> ListNamespace:
        """List methods: ``contains``, ``len``."""
        return ListNamespace(self)

    @property
    def dt(self) -> DtNamespace:
        """Datetime methods: ``year``, ``month``, ``day``, ``hour``, ``weekday``, ``truncate``."""
        return DtNamespace(self)

    # ----------------------------------------------------------------- arithmetic
    def _arith(self, cls: type[n.Arithmetic], other: Any, reflected: bool = False) -> Expr:
        if other is None:
            raise InvalidExpressionError(f"arithmetic with None on {self!r}.")
        other_node = _node(other, "arithmetic")
        pair = (other_node, self._node) if reflected else (self._node, other_node)
        return self._new(cls(*pair))

    def __add__(self, other: Any) -> Expr:
        return self._arith(n.Add, other)

    def __radd__(self, other: Any) -> Expr:
        return self._arith(n.Add, other, reflected=True)

    def __sub__(self, other: Any) -> Expr:
        return self._arith(n.Sub, other)

    def __rsub__(self, other: Any) -> Expr:
        return self._arith(n.Sub, other, reflected=True)

    def __mul__(self, other: Any) -> Expr:
        return self._arith(n.Mul, other)

    def __rmul__(self, other: Any) -> Expr:
        return self._arith(n.Mul, other, reflected=True)

    def __truediv__(self, other: Any) -> Expr:
        return self._arith(n.Div, other)

    def __rtruediv__(self, other: Any) -> Expr:
        return self._arith(n.Div, other, reflected=True)

    def __mod__(self, other: Any) -> Expr:
        return self._arith(n.Mod, other)

    def __rmod__(self, other: Any) -> Expr:
        return self._arith(n.Mod, other, reflected=True)

    def __neg__(self) -> Expr:
        return self._new(n.Neg(self._node))

    def __pos__(self) -> Expr:
        return self

    def __abs__(self) -> Expr:
        return self.abs()

    def __round__(self, ndigits: int | None = None) -> Expr:
        return self.round(ndigits or 0)

    def abs(self) -> Expr:
        """Absolute value.

        >>> (fld["delta"].abs() > 5).to_mongo()
        {'$expr': {'$gt': [{'$abs': '$delta'}, 5]}}
        """
        return self._new(n.Abs(self._node))

    def round(self, digits: int = 0) -> Expr:
        """Round half to even to ``digits`` decimals (``digits >= 0``).

        >>> fld["price"].round(2).to_mongo_expr()
        {'$round': ['$price', 2]}
        """
        if type(digits) is not int or not 0 <= digits <= 15:
            raise InvalidExpressionError(f"round() takes a number of decimals from 0 to 15, "
                                         f"got {digits!r}.")
        return self._new(n.Round(self._node, digits))

    # ---------------------------------------------------------------------- logic
    def _logic(self, cls: type[n.And] | type[n.Or], other: Any, symbol: str) -> Expr:
        if not isinstance(other, Expr):
            raise InvalidExpressionError(f"{symbol} combines two expressions, got {other!r}. "
                                         "Hint: compare first, e.g. fld['flag'] == True.")
        args: list[n.Node] = []
        for node in (self._node, other._node):
            args.extend(node.args if isinstance(node, cls) else (node,))
        return self._new(cls(tuple(args)))

    def __and__(self, other: Any) -> Expr:
        return self._logic(n.And, other, "&")

    def __rand__(self, other: Any) -> Expr:
        return self._logic(n.And, other, "&")

    def __or__(self, other: Any) -> Expr:
        return self._logic(n.Or, other, "|")

    def __ror__(self, other: Any) -> Expr:
        return self._logic(n.Or, other, "|")

    def __invert__(self) -> Expr:
        if isinstance(self._node, n.Not):
            return Expr(self._node.arg)
        return self._new(n.Not(self._node))

    # --------------------------------------------------------------- aggregations
    def count(self) -> Expr:
        """Number of non-null values in the group.

        >>> fld["age"].count().to_mongo_accumulator().group
        {'$sum': {'$cond': [{'$gt': ['$age', None]}, 1, 0]}}
        """
        return self._new(n.Count(self._node))

    def sum(self) -> Expr:
        """Sum (0 for an empty group).

        >>> fld["amount"].sum().to_mongo_expr()
        {'$sum': '$amount'}
        """
        return self._new(n.Sum(self._node))

    def mean(self) -> Expr:
        """Mean of the non-null values.

        >>> fld["age"].mean().to_mongo_expr()
        {'$avg': '$age'}
        """
        return self._new(n.Mean(self._node))

    def min(self) -> Expr:
        """Smallest non-null value (NaN counts as the smallest number, as in MongoDB).

        >>> fld["age"].min().to_mongo_expr()
        {'$min': '$age'}
        """
        return self._new(n.Min(self._node))

    def max(self) -> Expr:
        """Largest non-null value.

        >>> fld["age"].max().to_mongo_expr()
        {'$max': '$age'}
        """
        return self._new(n.Max(self._node))

    def first(self) -> Expr:
        """First value in document order (null when missing).

        >>> fld["age"].first().to_mongo_expr()
        {'$first': '$age'}
        """
        return self._new(n.First(self._node))

    def last(self) -> Expr:
        """Last value in document order.

        >>> fld["age"].last().to_mongo_expr()
        {'$last': '$age'}
        """
        return self._new(n.Last(self._node))

    def std(self) -> Expr:
        """Sample standard deviation (ddof=1; null for fewer than two values).

        >>> fld["age"].std().to_mongo_expr()
        {'$stdDevSamp': '$age'}
        """
        return self._new(n.Std(self._node))

    def var(self) -> Expr:
        """Sample variance (ddof=1): MongoDB computes ``$stdDevSamp`` squared.

        >>> fld["age"].var().to_mongo_accumulator().post
        {'$pow': ['$$acc', 2]}
        """
        return self._new(n.Var(self._node))

    def median(self) -> Expr:
        """Discrete median: a value of the group (the ceil(n/2)-th smallest).

        >>> fld["age"].median().to_mongo_expr()
        {'$median': {'input': '$age', 'method': 'approximate'}}
        """
        return self._new(n.Median(self._node))

    def quantile(self, q: float) -> Expr:
        """Discrete quantile ``0 <= q <= 1``: the ceil(q*n)-th smallest value.

        >>> fld["age"].quantile(0.9).to_mongo_accumulator().group
        {'$percentile': {'input': '$age', 'p': [0.9], 'method': 'approximate'}}
        """
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q <= 1:
            raise InvalidExpressionError(f"quantile() takes 0 <= q <= 1, got {q!r}.")
        return self._new(n.Quantile(self._node, float(q)))

    def n_unique(self) -> Expr:
        """Number of distinct non-null values.

        >>> fld["city"].n_unique().to_mongo_accumulator().post
        {'$size': {'$setDifference': ['$$acc', [None]]}}
        """
        return self._new(n.NUnique(self._node))

    def alias(self, name: str) -> Expr:
        """Name the output column.

        >>> fld["age"].mean().alias("avg_age").output_name
        'avg_age'
        """
        _check_name(name, "column name")
        if "." in name:
            raise InvalidExpressionError(f"a column name cannot contain '.', got {name!r}.")
        return self._new(n.Alias(self._node, name))

    @property
    def output_name(self) -> str:
        """The column name this expression produces (its alias, else its leftmost field).

        >>> (fld["address.city"].str.to_upper()).output_name
        'city'
        """
        return n.output_name(self._node)

    # ------------------------------------------------------------ bind & compile
    def bind(self, resolver: Resolver) -> Expr:
        """Resolve field names with ``resolver``, normalise literals, check types.

        >>> from loom_frames.expr import Kind, SimpleResolver
        >>> r = SimpleResolver("User", {"age": Kind.INT})
        >>> fld["age"].bind(r) > "x"
        Traceback (most recent call last):
        ...
        loom_frames.errors.InvalidExpressionError: cannot compare fld['age'] (int) with 'x' (str): values of different types never match. Hint: compare with a int value.
        """
        return Expr(bind_node(self._node, resolver))

    def _bound(self, resolver: Resolver | None) -> n.Node:
        return self._node if resolver is None else bind_node(self._node, resolver)

    def to_mongo(self, resolver: Resolver | None = None) -> dict[str, Any]:
        """A MongoDB query document (for ``find`` / ``$match``).

        >>> (fld["age"] > fld["min_age"]).to_mongo()
        {'$expr': {'$and': [{'$gt': ['$age', '$min_age']}, {'$gt': ['$min_age', None]}, {'$ne': ['$min_age', nan]}]}}
        """
        from .mongo import compile_query

        return compile_query(self._bound(resolver))

    def to_mongo_expr(self, resolver: Resolver | None = None) -> Any:
        """An aggregation expression (for ``$project`` / ``$set`` / ``$group``).

        >>> (fld["price"] * fld["qty"]).to_mongo_expr()
        {'$multiply': ['$price', '$qty']}
        """
        from .mongo import compile_expression

        return compile_expression(self._bound(resolver))

    def to_mongo_accumulator(self, resolver: Resolver | None = None) -> MongoAccumulator:
        """The ``$group`` accumulator of an aggregation, plus its finishing step.

        >>> acc = fld["city"].n_unique().alias("cities").to_mongo_accumulator()
        >>> acc.name, acc.group
        ('cities', {'$addToSet': '$city'})
        >>> acc.finalize()
        {'$let': {'vars': {'acc': '$cities'}, 'in': {'$size': {'$setDifference': ['$$acc', [None]]}}}}
        """
        from .mongo import compile_accumulator

        return compile_accumulator(self._bound(resolver))

    def to_polars(self, resolver: Resolver | None = None) -> pl.Expr:
        """A ``polars.Expr`` selecting exactly the rows MongoDB would.

        >>> import polars as pl
        >>> df = pl.DataFrame({"age": [20, None, 30]})
        >>> df.filter((fld["age"] != 20).to_polars())["age"].to_list()
        [None, 30]
        """
        from .polars import compile_polars

        return compile_polars(self._bound(resolver))


def _text(value: Any, method: str) -> str:
    if not isinstance(value, str):
        raise InvalidExpressionError(f".{method}() takes a str, got {value!r}.")
    return value


def _flags(flags: Any) -> str:
    if isinstance(flags, int) and not isinstance(flags, bool):
        text = "".join(ch for bit, ch in _FLAGS.items() if flags & bit)
        if flags & ~sum(_FLAGS):
            raise InvalidExpressionError(f"regex flags: only re.I, re.M, re.S, re.X are "
                                         f"supported, got {flags!r}.")
        return text
    if not isinstance(flags, str) or set(flags) - set("imsx"):
        raise InvalidExpressionError(f"regex flags must be a str of 'imsx' letters, got "
                                     f"{flags!r}.")
    return "".join(sorted(set(flags), key="imsx".index))


class StrNamespace:
    """``expr.str``: string methods."""

    __slots__ = ("_expr",)

    def __init__(self, expr: Expr) -> None:
        self._expr = expr

    def to_lower(self) -> Expr:
        """ASCII lower case (MongoDB's ``$toLower``: other letters are kept).

        >>> (fld["name"].str.to_lower() == "bob").to_mongo()
        {'$expr': {'$eq': [{'$cond': [{'$lte': ['$name', None]}, None, {'$toLower': '$name'}]}, 'bob']}}
        """
        return self._expr._new(n.Lower(self._expr.node))

    def to_upper(self) -> Expr:
        """ASCII upper case (MongoDB's ``$toUpper``).

        >>> fld["code"].str.to_upper()
        fld['code'].str.to_upper()
        """
        return self._expr._new(n.Upper(self._expr.node))

    def starts_with(self, text: str) -> Expr:
        """Same as :meth:`Expr.starts_with`.

        >>> fld["name"].str.starts_with("A").to_mongo()
        {'name': {'$regex': '^A'}}
        """
        return self._expr.starts_with(text)

    def ends_with(self, text: str) -> Expr:
        """Same as :meth:`Expr.ends_with`.

        >>> fld["name"].str.ends_with("z")
        fld['name'].ends_with('z')
        """
        return self._expr.ends_with(text)

    def contains(self, text: str) -> Expr:
        """Same as :meth:`Expr.contains` (literal text).

        >>> fld["name"].str.contains("o")
        fld['name'].contains('o')
        """
        return self._expr.contains(text)

    def regex(self, pattern: str, flags: str | int = "") -> Expr:
        """Same as :meth:`Expr.regex`.

        >>> fld["name"].str.regex("^a", "i")
        fld['name'].regex('^a', 'i')
        """
        return self._expr.regex(pattern, flags)


class ListNamespace:
    """``expr.list``: list methods."""

    __slots__ = ("_expr",)

    def __init__(self, expr: Expr) -> None:
        self._expr = expr

    def contains(self, item: Any) -> Expr:
        """The list has an element equal to ``item``.

        >>> fld["tags"].list.contains("new").to_mongo()
        {'tags': {'$eq': 'new'}}
        """
        if item is None:
            raise InvalidExpressionError(".list.contains(None) is not supported. Hint: "
                                         "fld['tags'].is_in([None]) matches null elements.")
        frozen = _freeze(item, ".list.contains()")
        if isinstance(frozen, tuple):
            raise InvalidExpressionError(".list.contains() takes one element, not a list.")
        return self._expr._new(n.ListContains(self._expr.node, n.Literal(frozen)))

    def len(self) -> Expr:
        """Number of elements (null for a null or missing list).

        >>> (fld["tags"].list.len() == 0).to_mongo()
        {'tags': {'$size': 0}}
        """
        return self._expr._new(n.ListLen(self._expr.node))


class DtNamespace:
    """``expr.dt``: datetime methods (UTC)."""

    __slots__ = ("_expr",)

    def __init__(self, expr: Expr) -> None:
        self._expr = expr

    def _part(self, cls: type[n.DatePart]) -> Expr:
        return self._expr._new(cls(self._expr.node))

    def year(self) -> Expr:
        """Calendar year.

        >>> (fld["ts"].dt.year() == 2024).to_mongo()
        {'$expr': {'$eq': [{'$year': '$ts'}, 2024]}}
        """
        return self._part(n.Year)

    def month(self) -> Expr:
        """Month, 1-12.

        >>> fld["ts"].dt.month().to_mongo_expr()
        {'$month': '$ts'}
        """
        return self._part(n.Month)

    def day(self) -> Expr:
        """Day of the month, 1-31.

        >>> fld["ts"].dt.day().to_mongo_expr()
        {'$dayOfMonth': '$ts'}
        """
        return self._part(n.Day)

    def hour(self) -> Expr:
        """Hour, 0-23.

        >>> fld["ts"].dt.hour().to_mongo_expr()
        {'$hour': '$ts'}
        """
        return self._part(n.Hour)

    def weekday(self) -> Expr:
        """ISO weekday: Monday=1 ... Sunday=7.

        >>> fld["ts"].dt.weekday().to_mongo_expr()
        {'$isoDayOfWeek': '$ts'}
        """
        return self._part(n.Weekday)

    def truncate(self, every: str) -> Expr:
        """Floor to a bin of ``every`` (``'15m'``, ``'1h'``, ``'1d'``, ``'1w'`` (Mondays),
        ``'1mo'``, ``'1q'``, ``'1y'``, ...), aligned like Polars' ``dt.truncate``.

        >>> fld["ts"].dt.truncate("1h").to_mongo_expr()
        {'$dateTrunc': {'date': '$ts', 'unit': 'hour'}}
        """
        count, unit = n.parse_every(every)
        return self._expr._new(n.Truncate(self._expr.node, f"{count}{unit}"))


class _FieldFactory:
    """``fld['age']`` or ``fld('age')``: a reference to a field (dots for nested fields).

    >>> fld["address.city"] == "Oslo"
    fld['address.city'] == 'Oslo'
    >>> fld("age").equals(fld["age"])
    True
    """

    __slots__ = ()

    def __getitem__(self, name: str) -> Expr:
        return Expr(n.Field(_check_name(name)))

    def __call__(self, name: str) -> Expr:
        return Expr(n.Field(_check_name(name)))

    def __repr__(self) -> str:
        return "fld"


fld = _FieldFactory()
"""The field-reference factory: ``fld['age']``, ``fld('age')``, ``fld['address.city']``."""

col = fld
"""An alias of :data:`fld` (``col('age')`` reads like Polars)."""
