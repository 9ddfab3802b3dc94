"""``expr.str``, ``expr.list``, ``expr.dt``: the method namespaces of :class:`Expr`.

>>> from loom_frames.expr import fld
>>> fld["name"].str.to_lower() == "bob"
fld['name'].str.to_lower() == 'bob'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidExpressionError
from . import nodes as n
from .literals import freeze

if TYPE_CHECKING:
    from .api import Expr

__all__ = ["DtNamespace", "ListNamespace", "StrNamespace"]


class StrNamespace:
    """``expr.str``: string methods.

    >>> from loom_frames.expr import fld
    >>> fld["name"].str.to_upper()
    fld['name'].str.to_upper()
    """

    __slots__ = ("_expr",)

    def __init__(self, expr: Expr) -> None:
        self._expr = expr

    def to_lower(self) -> Expr:
        """ASCII lower case (MongoDB's ``$toLower``: other letters are kept).

        >>> from loom_frames.expr import fld
        >>> (fld["name"].str.to_lower() == "bob").to_mongo()
        {'$expr': {'$eq': [{'$cond': [{'$lte': ['$name', None]}, None, {'$toLower': '$name'}]}, 'bob']}}
        """
        return self._expr._new(n.Lower(self._expr.node))

    def to_upper(self) -> Expr:
        """ASCII upper case (MongoDB's ``$toUpper``).

        >>> from loom_frames.expr import fld
        >>> fld["code"].str.to_upper()
        fld['code'].str.to_upper()
        """
        return self._expr._new(n.Upper(self._expr.node))

    def starts_with(self, text: str) -> Expr:
        """Same as :meth:`Expr.starts_with`.

        >>> from loom_frames.expr import fld
        >>> fld["name"].str.starts_with("A").to_mongo()
        {'name': {'$regex': '^A'}}
        """
        return self._expr.starts_with(text)

    def ends_with(self, text: str) -> Expr:
        """Same as :meth:`Expr.ends_with`.

        >>> from loom_frames.expr import fld
        >>> fld["name"].str.ends_with("z")
        fld['name'].ends_with('z')
        """
        return self._expr.ends_with(text)

    def contains(self, text: str) -> Expr:
        """Same as :meth:`Expr.contains` (literal text).

        >>> from loom_frames.expr import fld
        >>> fld["name"].str.contains("o")
        fld['name'].contains('o')
        """
        return self._expr.contains(text)

    def regex(self, pattern: str, flags: str | int = "") -> Expr:
        """Same as :meth:`Expr.regex`.

        >>> from loom_frames.expr import fld
        >>> fld["name"].str.regex("^a", "i")
        fld['name'].regex('^a', 'i')
        """
        return self._expr.regex(pattern, flags)


class ListNamespace:
    """``expr.list``: list methods.

    >>> from loom_frames.expr import fld
    >>> fld["tags"].list.len()
    fld['tags'].list.len()
    """

    __slots__ = ("_expr",)

    def __init__(self, expr: Expr) -> None:
        self._expr = expr

    def contains(self, item: Any) -> Expr:
        """The list has an element equal to ``item``.

        >>> from loom_frames.expr import fld
        >>> fld["tags"].list.contains("new").to_mongo()
        {'tags': {'$eq': 'new'}}
        """
        if item is None:
            raise InvalidExpressionError(".list.contains(None) is not supported. Hint: "
                                         "fld['tags'].is_in([None]) matches null elements.")
        frozen = freeze(item, ".list.contains()")
        if isinstance(frozen, tuple):
            raise InvalidExpressionError(".list.contains() takes one element, not a list.")
        return self._expr._new(n.ListContains(self._expr.node, n.Literal(frozen)))

    def len(self) -> Expr:
        """Number of elements (null for a null or missing list).

        >>> from loom_frames.expr import fld
        >>> (fld["tags"].list.len() == 0).to_mongo()
        {'tags': {'$size': 0}}
        """
        return self._expr._new(n.ListLen(self._expr.node))


class DtNamespace:
    """``expr.dt``: datetime methods (UTC).

    >>> from loom_frames.expr import fld
    >>> fld["ts"].dt.hour()
    fld['ts'].dt.hour()
    """

    __slots__ = ("_expr",)

    def __init__(self, expr: Expr) -> None:
        self._expr = expr

    def _part(self, cls: type[n.DatePart]) -> Expr:
        return self._expr._new(cls(self._expr.node))

    def year(self) -> Expr:
        """Calendar year.

        >>> from loom_frames.expr import fld
        >>> (fld["ts"].dt.year() == 2024).to_mongo()
        {'$expr': {'$eq': [{'$year': '$ts'}, 2024]}}
        """
        return self._part(n.Year)

    def month(self) -> Expr:
        """Month, 1-12.

        >>> from loom_frames.expr import fld
        >>> fld["ts"].dt.month().to_mongo_expr()
        {'$month': '$ts'}
        """
        return self._part(n.Month)

    def day(self) -> Expr:
        """Day of the month, 1-31.

        >>> from loom_frames.expr import fld
        >>> fld["ts"].dt.day().to_mongo_expr()
        {'$dayOfMonth': '$ts'}
        """
        return self._part(n.Day)

    def hour(self) -> Expr:
        """Hour, 0-23.

        >>> from loom_frames.expr import fld
        >>> fld["ts"].dt.hour().to_mongo_expr()
        {'$hour': '$ts'}
        """
        return self._part(n.Hour)

    def weekday(self) -> Expr:
        """ISO weekday: Monday=1 ... Sunday=7.

        >>> from loom_frames.expr import fld
        >>> fld["ts"].dt.weekday().to_mongo_expr()
        {'$isoDayOfWeek': '$ts'}
        """
        return self._part(n.Weekday)

    def truncate(self, every: str) -> Expr:
        """Floor to a bin of ``every`` (``'15m'``, ``'1h'``, ``'1d'``, ``'1w'`` (Mondays),
        ``'1mo'``, ``'1q'``, ``'1y'``, ...), aligned like Polars' ``dt.truncate``.

        >>> from loom_frames.expr import fld
        >>> fld["ts"].dt.truncate("1h").to_mongo_expr()
        {'$dateTrunc': {'date': '$ts', 'unit': 'hour'}}
        """
        count, unit = n.parse_every(every)
        return self._expr._new(n.Truncate(self._expr.node, f"{count}{unit}"))
