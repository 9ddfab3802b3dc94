"""``expr.str``, ``expr.list``, ``expr.dt``: the method namespaces of :class:`Expr`.

>>> from loom_frames.expr import fld
>>> fld["name"].str.to_lower() == "bob"
fld['name'].str.to_lower() == 'bob'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidExpressionError
from . import nodes as n
from .literals import check_time_zone, freeze

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
    """``expr.dt``: datetime methods, in UTC unless ``time_zone=`` names a zone.

    With ``time_zone="America/New_York"`` a date part or a truncation is computed on the
    local time of that zone (daylight saving time included): MongoDB's ``timezone``
    option, Polars' ``convert_time_zone``.

    >>> from loom_frames.expr import fld
    >>> fld["ts"].dt.hour()
    fld['ts'].dt.hour()
    >>> fld["ts"].dt.hour(time_zone="America/New_York").to_mongo_expr()
    {'$hour': {'date': '$ts', 'timezone': 'America/New_York'}}
    """

    __slots__ = ("_expr",)

    def __init__(self, expr: Expr) -> None:
        self._expr = expr

    def _part(self, cls: type[n.DatePart], time_zone: str | None) -> Expr:
        zone = check_time_zone(time_zone, f"dt.{_PART_NAMES[cls]}")
        return self._expr._new(cls(self._expr.node, zone))

    def year(self, *, time_zone: str | None = None) -> Expr:
        """Calendar year (``int32``).

        >>> from loom_frames.expr import fld
        >>> (fld["ts"].dt.year() == 2024).to_mongo()
        {'$expr': {'$eq': [{'$year': '$ts'}, 2024]}}
        """
        return self._part(n.Year, time_zone)

    def month(self, *, time_zone: str | None = None) -> Expr:
        """Month, 1-12 (``int8``).

        >>> from loom_frames.expr import fld
        >>> fld["ts"].dt.month().to_mongo_expr()
        {'$month': '$ts'}
        """
        return self._part(n.Month, time_zone)

    def day(self, *, time_zone: str | None = None) -> Expr:
        """Day of the month, 1-31 (``int8``).

        >>> from loom_frames.expr import fld
        >>> fld["ts"].dt.day(time_zone="Europe/London").to_mongo_expr()
        {'$dayOfMonth': {'date': '$ts', 'timezone': 'Europe/London'}}
        """
        return self._part(n.Day, time_zone)

    def hour(self, *, time_zone: str | None = None) -> Expr:
        """Hour, 0-23 (``int8``).

        >>> from loom_frames.expr import fld
        >>> fld["ts"].dt.hour().to_mongo_expr()
        {'$hour': '$ts'}
        """
        return self._part(n.Hour, time_zone)

    def weekday(self, *, time_zone: str | None = None) -> Expr:
        """ISO weekday: Monday=1 ... Sunday=7 (``int8``).

        >>> from loom_frames.expr import fld
        >>> fld["ts"].dt.weekday().to_mongo_expr()
        {'$isoDayOfWeek': '$ts'}
        """
        return self._part(n.Weekday, time_zone)

    def truncate(self, every: str, *, time_zone: str | None = None) -> Expr:
        """Floor to a bin of ``every`` (``'15m'``, ``'1h'``, ``'1d'``, ``'1w'`` (Mondays),
        ``'1mo'``, ``'1q'``, ``'1y'``, ...), aligned like Polars' ``dt.truncate``.

        With ``time_zone``, bins follow that zone's local time (a ``'1d'`` bin starts at
        local midnight, whatever the daylight saving time) and the result is a datetime in
        that zone. Bins of several units below a day (``'2h'``, ``'15m'``) have no single
        local meaning across a clock change, so they are refused with a time zone.

        >>> from loom_frames.expr import fld
        >>> fld["ts"].dt.truncate("1h").to_mongo_expr()
        {'$dateTrunc': {'date': '$ts', 'unit': 'hour'}}
        >>> fld["ts"].dt.truncate("1d", time_zone="America/New_York").to_mongo_expr()
        {'$dateTrunc': {'date': '$ts', 'unit': 'day', 'timezone': 'America/New_York'}}
        """
        count, unit = n.parse_every(every)
        zone = check_time_zone(time_zone, "dt.truncate")
        if zone is not None and count > 1 and unit in n.SUB_DAY_UNITS:
            raise InvalidExpressionError(
                f"dt.truncate({every!r}, time_zone={zone!r}): bins of several units below a "
                "day have no single meaning in local time (a clock change moves them). "
                f"Hint: bins of {every!r} are the same in every zone whose UTC offset is a "
                f"multiple of {every!r}: drop time_zone, or use '1{unit}'.")
        return self._expr._new(n.Truncate(self._expr.node, f"{count}{unit}", zone))


_PART_NAMES: dict[type[n.DatePart], str] = {
    n.Year: "year", n.Month: "month", n.Day: "day", n.Hour: "hour", n.Weekday: "weekday",
}
