"""The user-facing expression wrapper: ``fld['age'] > 25`` builds an immutable tree.

:class:`Expr` only overloads operators and builds nodes (checking them as it goes); the
compilers live in their own modules and are reached through ``to_mongo()``,
``to_mongo_expr()``, ``to_mongo_accumulator()`` and ``to_polars()``.

>>> from loom_frames.expr import fld
>>> ((fld["age"] > 25) & (fld["is_active"] == True)).to_mongo()  # noqa: E712
{'age': {'$gt': 25}, 'is_active': {'$eq': True}}
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import InvalidExpressionError
from . import nodes as n
from .bind import Resolver, bind_node, validate
from .literals import (
    CLOSED,
    check_name,
    check_output_name,
    freeze,
    literal_values,
    regex_flags,
    text_argument,
)
from .namespaces import DtNamespace, ListNamespace, StrNamespace, StructNamespace, cast_target
from .render import to_source

if TYPE_CHECKING:
    import polars as pl

    from .mongo import MongoAccumulator

__all__ = [
    "DtNamespace",
    "Expr",
    "ListNamespace",
    "StrNamespace",
    "StructNamespace",
    "When",
    "col",
    "fld",
    "len",
    "lit",
    "when",
]


def _node(value: Any, where: str) -> n.Node:
    if isinstance(value, Expr):
        return value.node
    return n.Literal(freeze(value, where))


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

    def __eq__(self, other: object) -> Expr:  # type: ignore[override]
        return self._compare(n.Eq, other)

    def __ne__(self, other: object) -> Expr:  # type: ignore[override]
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
        return self._new(n.IsIn(self._node, literal_values(values, "is_in")))

    def not_in(self, values: Iterable[Any]) -> Expr:
        """The negation of :meth:`is_in` (matches null and missing unless None is listed).

        >>> fld["city"].not_in(["Paris"]).to_mongo()
        {'city': {'$nin': ['Paris']}}
        """
        return self._new(n.NotIn(self._node, literal_values(values, "not_in")))

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

    def is_between(self, lower_bound: Any, upper_bound: Any, closed: str = "both") -> Expr:
        """Polars' name for :meth:`between`: ``lower_bound <= x <= upper_bound``.

        >>> fld["age"].is_between(18, 65).to_mongo()
        {'age': {'$gte': 18, '$lte': 65}}
        """
        return self.between(lower_bound, upper_bound, closed)

    def fill_null(self, value: Any) -> Expr:
        """``value`` (a literal or an expression) where the value is null or missing.

        >>> fld["qty"].fill_null(0).to_mongo_expr()
        {'$ifNull': ['$qty', 0]}
        """
        if value is None:
            raise InvalidExpressionError("fill_null(None) changes nothing. Hint: give the "
                                         "value to put where the column is null.")
        return self._new(n.FillNull(self._node, _node(value, "fill_null()")))

    def cast(self, dtype: Any) -> Expr:
        """Convert to a Polars dtype: ``Int64``, ``Float64``, ``String``, ``Boolean``,
        ``Datetime`` (milliseconds, UTC) or ``Date``. A value that does not convert is
        null (Polars' ``strict=False``; MongoDB's ``$convert`` with ``onError: null``).

        >>> fld["price"].cast("Int64").to_mongo_expr()
        {'$convert': {'input': '$price', 'to': 'long', 'onError': None, 'onNull': None}}
        """
        return self._new(n.Cast(self._node, cast_target(dtype)))

    # ---------------------------------------------------------------- windows
    def over(
        self,
        partition_by: str | Expr | Iterable[str | Expr] | None = None,
        *more_exprs: str | Expr,
        order_by: str | Expr | Iterable[str | Expr] | None = None,
        descending: bool = False,
    ) -> Expr:
        """Compute a window function or an aggregation per partition (``$setWindowFields``),
        rows taken in ``order_by`` order (then by ``_id``); every row keeps its value.

        >>> fld["amount"].cum_sum().over("customer", order_by="ts")
        fld['amount'].cum_sum().over('customer', order_by='ts')
        """
        if not isinstance(descending, bool):
            raise InvalidExpressionError(f"over(descending=...) takes a bool, got {descending!r}.")
        keys = _expr_list(partition_by, "over(partition_by)") + _expr_list(more_exprs, "over()")
        order = _expr_list(order_by, "over(order_by)")
        return self._new(n.Over(self._node, tuple(keys), tuple(order), descending))

    def rank(self, method: str = "average", *, descending: bool = False) -> Expr:
        """Rank of the value (1 = smallest; ``descending=True``: 1 = largest); null for null.

        ``method``: ``'average'`` (Polars' default), ``'min'``, ``'max'``, ``'dense'`` or
        ``'ordinal'``. Use it with :meth:`over` (or alone: over all rows).

        >>> fld["score"].rank("dense").over("team")
        fld['score'].rank('dense').over('team')
        """
        if method not in RANK_METHODS:
            raise InvalidExpressionError(f"rank(method=...) is one of {RANK_METHODS}, got "
                                         f"{method!r} ('random' has no MongoDB equivalent).")
        return self._new(n.Rank(self._node, method, bool(descending)))

    def cum_sum(self) -> Expr:
        """Running sum in row order (null where the value is null).

        >>> fld["amount"].cum_sum().over(order_by="ts")
        fld['amount'].cum_sum().over(order_by='ts')
        """
        return self._new(n.CumSum(self._node))

    def rolling_mean(self, window_size: int) -> Expr:
        """Mean of the last ``window_size`` rows (this one included); null until the window
        holds ``window_size`` non-null values (Polars' ``min_samples`` default).

        >>> fld["price"].rolling_mean(3).over("sku", order_by="day")
        fld['price'].rolling_mean(3).over('sku', order_by='day')
        """
        if type(window_size) is not int or window_size < 1:
            raise InvalidExpressionError(f"rolling_mean() takes a window_size >= 1, got "
                                         f"{window_size!r}.")
        return self._new(n.RollingMean(self._node, window_size))

    def shift(self, n: int = 1) -> Expr:
        """The value ``n`` rows earlier (``n < 0``: later); null where there is none.

        >>> fld["price"].shift().over("sku", order_by="day")
        fld['price'].shift().over('sku', order_by='day')
        """
        if type(n) is not int:
            raise InvalidExpressionError(f"shift() takes an int, got {n!r}.")
        return self._new(_n.Shift(self._node, n))

    def between(self, lower: Any, upper: Any, closed: str = "both") -> Expr:
        """``lower <= x <= upper``; ``closed`` is ``'both'``, ``'left'``, ``'right'`` or
        ``'none'``. On a list field, one element must be in range.

        >>> fld["age"].between(18, 65, closed="left").to_mongo()
        {'age': {'$gte': 18, '$lt': 65}}
        """
        if closed not in CLOSED:
            raise InvalidExpressionError(f"between(closed=...) must be one of {CLOSED}, "
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
        return self._new(n.StartsWith(self._node, text_argument(text, "starts_with")))

    def ends_with(self, text: str) -> Expr:
        """The string ends with the literal ``text``.

        >>> fld["email"].ends_with("@example.com").to_mongo()
        {'email': {'$regex': '@example\\\\.com\\\\z'}}
        """
        return self._new(n.EndsWith(self._node, text_argument(text, "ends_with")))

    def contains(self, text: str) -> Expr:
        """The string contains the literal ``text`` (not a pattern; ``.str.contains()`` takes
        a regular expression by default, as in Polars).

        >>> fld["name"].contains("a+b").to_mongo()
        {'name': {'$regex': 'a\\\\+b'}}
        """
        return self._new(n.Contains(self._node, text_argument(text, "contains")))

    def regex(self, pattern: str, flags: str | int = "") -> Expr:
        """Regular-expression search; ``flags`` from ``"imsx"`` (or ``re.I | re.M ...``).

        Write patterns in the subset PCRE (MongoDB) and Rust regex (Polars) share.

        >>> fld["name"].regex("^b.b", "i").to_mongo()
        {'name': {'$regex': '^b.b', '$options': 'i'}}
        """
        return self._new(n.Regex(self._node, text_argument(pattern, "regex"), regex_flags(flags)))

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

    def __floordiv__(self, other: Any) -> Expr:
        return self._arith(n.FloorDiv, other)

    def __rfloordiv__(self, other: Any) -> Expr:
        return self._arith(n.FloorDiv, other, reflected=True)

    def __pow__(self, other: Any) -> Expr:
        return self._arith(n.Pow, other)

    def __rpow__(self, other: Any) -> Expr:
        return self._arith(n.Pow, other, reflected=True)

    def floordiv(self, other: Any) -> Expr:
        """Floor division, ``x // other`` (null for a zero divisor).

        >>> (fld["minutes"] // 60).to_mongo_expr()  # bound to an int field: $toLong of it
        {'$floor': {'$divide': ['$minutes', 60]}}
        """
        return self._arith(n.FloorDiv, other)

    def pow(self, exponent: Any) -> Expr:
        """``x ** exponent``.

        >>> (fld["x"] ** 2).to_mongo_expr()
        {'$pow': ['$x', 2]}
        """
        return self._arith(n.Pow, exponent)

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
    def _logic(self, cls: type[n.And | n.Or], other: Any, symbol: str) -> Expr:
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
        return self._new(n.Alias(self._node, check_output_name(name, "alias()")))

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

    def __getitem__(self, name: str) -> Expr:
        """A field of a nested document: ``fld["address"]["city"]`` is ``fld["address.city"]``.

        >>> fld["address"]["city"] == "Oslo"
        fld['address.city'] == 'Oslo'
        """
        if not isinstance(self._node, n.Field) or self._node.ref is not None:
            raise InvalidExpressionError(f"{self!r}[{name!r}]: only an unbound field has "
                                         "sub-fields. Hint: fld['address']['city'].")
        return Expr(n.Field(check_name(f"{self._node.name}.{check_name(name)}")))

    # ----------------------------------------------------------------- namespaces
    # Last in the class body: the names shadow the builtins str and list for mypy.
    @property
    def str(self) -> StrNamespace:
        """String methods: ``to_lower``, ``to_upper``, ``starts_with``, ... ."""
        return StrNamespace(self)

    @property
    def list(self) -> ListNamespace:
        """List methods: ``contains``, ``len``."""
        return ListNamespace(self)

    @property
    def struct(self) -> StructNamespace:
        """Struct methods: ``field``.

        >>> fld["address"].struct.field("city")
        fld['address.city']
        """
        return StructNamespace(self)

    @property
    def dt(self) -> DtNamespace:
        """Datetime methods: ``year``, ``month``, ``day``, ``hour``, ``weekday``, ``truncate``."""
        return DtNamespace(self)


RANK_METHODS = ("average", "min", "max", "dense", "ordinal")
_n = n  # shift(n=...) shadows the module name


def _expr_list(value: Any, what: str) -> list[n.Node]:
    if value is None:
        return []
    items = [value] if isinstance(value, (str, Expr)) else list(value)
    out: list[n.Node] = []
    for item in items:
        if isinstance(item, str):
            out.append(n.Field(check_name(item)))
        elif isinstance(item, Expr):
            out.append(item.node)
        else:
            raise InvalidExpressionError(f"{what} takes column names or expressions, got "
                                         f"{item!r}.")
    return out


def lit(value: Any) -> Expr:
    """A literal value as an expression (``lm.lit(0)``, ``lm.lit("n/a")``).

    >>> (lit(1) + fld["a"]).to_mongo_expr()
    {'$add': [1, '$a']}
    """
    if isinstance(value, Expr):
        return value
    return Expr(n.Literal(freeze(value, "lit()")))


def len() -> Expr:  # noqa: A001 - Polars' name (pl.len())
    """The number of rows (in a group): ``group_by("k").agg(lm.len())``.

    >>> len().to_mongo_accumulator().group
    {'$sum': 1}
    """
    return Expr(n.Len())


class When:
    """``lm.when(condition)``: finish with ``.then(value)``; chain ``.when()`` / ``.then()``
    and end with ``.otherwise(value)`` (without it, the value is null).

    >>> e = when(fld["vip"]).then(lit("gold")).otherwise(lit("standard"))
    >>> e.to_mongo_expr()
    {'$switch': {'branches': [{'case': {'$eq': ['$vip', True]}, 'then': 'gold'}], 'default': 'standard'}}
    """

    __slots__ = ("_conditions", "_values")

    def __init__(self, conditions: tuple[n.Node, ...], values: tuple[n.Node, ...]) -> None:
        self._conditions = conditions
        self._values = values

    def then(self, value: Any) -> Then:
        """The value where the last condition holds (a string is a column name, as in
        Polars: use ``lm.lit("text")`` for text).

        >>> when(fld["a"] > 0).then("a")
        when(fld['a'] > 0).then(fld['a'])
        """
        if builtins.len(self._values) == builtins.len(self._conditions):
            raise InvalidExpressionError("then() follows a when(). Hint: "
                                         "when(c1).then(v1).when(c2).then(v2).otherwise(v).")
        return Then(self._conditions, (*self._values, _value(value, "then()")))

    def __repr__(self) -> str:
        return f"<when({', '.join(to_source(c) for c in self._conditions)}) awaiting .then()>"


def _value(value: Any, what: str) -> n.Node:
    if isinstance(value, str):
        return n.Field(check_name(value))
    return _node(value, what)


class Then(Expr):
    """``when(c).then(v)``: an expression (null where no condition holds) that also takes
    ``.when()`` and ``.otherwise()``.

    >>> when(fld["a"] > 0).then(lit(1)).otherwise(lit(0)).to_mongo_expr()["$switch"]["default"]
    0
    """

    __slots__ = ("_conditions", "_values")
    _conditions: tuple[n.Node, ...]
    _values: tuple[n.Node, ...]

    def __init__(self, conditions: tuple[n.Node, ...], values: tuple[n.Node, ...]) -> None:
        object.__setattr__(self, "_conditions", conditions)
        object.__setattr__(self, "_values", values)
        Expr.__init__(self, validate(n.When(conditions, values, n.Literal(None))))

    def when(self, condition: Expr) -> When:
        """Another condition, tried when the ones before do not hold.

        >>> when(fld["a"] > 1).then(lit(2)).when(fld["a"] > 0).then(lit(1)).otherwise(lit(0))
        when(fld['a'] > 1).then(2).when(fld['a'] > 0).then(1).otherwise(0)
        """
        return When((*self._conditions, _condition(condition)), self._values)

    def otherwise(self, value: Any) -> Expr:
        """The value where no condition holds.

        >>> when(fld["a"] > 0).then(lit(1)).otherwise(lit(0)).output_name
        'literal'
        """
        return Expr(validate(n.When(self._conditions, self._values, _value(value, "otherwise()"))))


def _condition(condition: Any) -> n.Node:
    if isinstance(condition, str):
        return n.Field(check_name(condition))
    if not isinstance(condition, Expr):
        raise InvalidExpressionError(f"when() takes a condition expression, got {condition!r}. "
                                     "Hint: when(fld['age'] >= 18).")
    return condition.node


def when(*conditions: Expr) -> When:
    """Start a conditional: ``lm.when(cond).then(a).otherwise(b)`` (several conditions
    are combined with ``&``, as in Polars).

    >>> when(fld["a"] > 0, fld["b"] > 0).then(lit(1))
    when((fld['a'] > 0) & (fld['b'] > 0)).then(1)
    """
    if not conditions:
        raise InvalidExpressionError("when() needs a condition, e.g. when(fld['age'] >= 18).")
    nodes = [_condition(c) for c in conditions]
    node = nodes[0] if builtins.len(nodes) == 1 else n.And(tuple(nodes))
    return When((validate(node),), ())


class _FieldFactory:
    """``fld['age']`` or ``fld('age')``: a reference to a field (dots for nested fields).

    >>> fld["address.city"] == "Oslo"
    fld['address.city'] == 'Oslo'
    >>> fld("age").equals(fld["age"])
    True
    """

    __slots__ = ()

    def __getitem__(self, name: str) -> Expr:
        return Expr(n.Field(check_name(name)))

    def __call__(self, name: str) -> Expr:
        return Expr(n.Field(check_name(name)))

    def __repr__(self) -> str:
        return "fld"


fld = _FieldFactory()
"""The field-reference factory: ``fld['age']``, ``fld('age')``, ``fld['address.city']``."""

col = fld
"""An alias of :data:`fld` (``col('age')`` reads like Polars)."""
