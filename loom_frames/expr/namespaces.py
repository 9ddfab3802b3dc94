"""``expr.str``, ``expr.list``, ``expr.dt``: the method namespaces of :class:`Expr`.

>>> from loom_frames.expr import fld
>>> fld["name"].str.to_lower() == "bob"
fld['name'].str.to_lower() == 'bob'
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..errors import InvalidExpressionError
from . import nodes as n
from .literals import check_name, check_time_zone, freeze, text_argument

if TYPE_CHECKING:
    from .api import Expr

__all__ = ["DtNamespace", "ListNamespace", "StrNamespace", "StructNamespace", "cast_target"]


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

    def to_lowercase(self) -> Expr:
        """Polars' name for :meth:`to_lower` (ASCII letters, as MongoDB's ``$toLower``).

        >>> from loom_frames.expr import fld
        >>> fld["name"].str.to_lowercase()
        fld['name'].str.to_lower()
        """
        return self.to_lower()

    def to_uppercase(self) -> Expr:
        """Polars' name for :meth:`to_upper` (ASCII letters).

        >>> from loom_frames.expr import fld
        >>> fld["code"].str.to_uppercase()
        fld['code'].str.to_upper()
        """
        return self.to_upper()

    def contains(self, pattern: str, *, literal: bool = False, strict: bool = True) -> Expr:
        """The string matches the regular expression ``pattern`` (Polars' default), or
        contains the text ``pattern`` with ``literal=True``.

        Regular expressions run as PCRE in MongoDB and as Rust ``regex`` in Polars: write
        them in the subset both share (see the README's regex dialect notes).

        >>> from loom_frames.expr import fld
        >>> fld["customer"].str.contains("^c00").to_mongo()
        {'customer': {'$regex': '^c00'}}
        >>> fld["name"].str.contains("a+b", literal=True).to_mongo()
        {'name': {'$regex': 'a\\\\+b'}}
        """
        if not isinstance(literal, bool) or not isinstance(strict, bool):
            raise InvalidExpressionError("str.contains(literal=..., strict=...) take bools.")
        if literal:
            return self._expr.contains(pattern)
        return self._expr.regex(pattern)

    def len_chars(self) -> Expr:
        """Number of characters (Unicode code points; ``uint32``).

        >>> from loom_frames.expr import fld
        >>> fld["name"].str.len_chars().to_mongo_expr()
        {'$cond': [{'$lte': ['$name', None]}, None, {'$strLenCP': '$name'}]}
        """
        return self._expr._new(n.LenChars(self._expr.node))

    def slice(self, offset: int, length: int | None = None) -> Expr:
        """``length`` characters from ``offset`` (a negative offset counts from the end;
        ``length=None``: to the end), as Polars slices.

        >>> from loom_frames.expr import fld
        >>> fld["sku"].str.slice(0, 3)
        fld['sku'].str.slice(0, 3)
        """
        if type(offset) is not int or not (length is None or type(length) is int and length >= 0):
            raise InvalidExpressionError(f"str.slice() takes an int offset and a length >= 0 "
                                         f"(or None), got {offset!r}, {length!r}.")
        return self._expr._new(n.Slice(self._expr.node, offset, length))

    def _replace(self, pattern: str, value: str, literal: bool, every: bool, what: str) -> Expr:
        text = text_argument(pattern, what)
        new = text_argument(value, what)
        if not text:
            raise InvalidExpressionError(f"{what}(): the text to replace is empty.")
        if not literal and (set(text) & _REGEX_SYNTAX or "$" in new):
            raise InvalidExpressionError(
                f"{what}({pattern!r}, {value!r}): MongoDB replaces literal text only (it has "
                "no regular-expression replace). Hint: pass literal=True.")
        return self._expr._new(n.Replace(self._expr.node, text, new, every))

    def replace(self, pattern: str, value: str, *, literal: bool = False, n: int = 1) -> Expr:
        """Replace the first occurrence of ``pattern`` (``n=-1``: every occurrence).

        MongoDB replaces literal text only (``$replaceOne``): a pattern with regex syntax
        needs ``literal=True``; one without it means the same either way.

        >>> from loom_frames.expr import fld
        >>> fld["s"].str.replace("-", "/").to_mongo_expr()
        {'$replaceOne': {'input': '$s', 'find': '-', 'replacement': '/'}}
        """
        if n not in (1, -1):
            raise InvalidExpressionError(f"str.replace(n=...) is 1 (first) or -1 (all), got "
                                         f"{n!r}: MongoDB has no n-th occurrence replace.")
        return self._replace(pattern, value, literal, n == -1, "str.replace")

    def replace_all(self, pattern: str, value: str, *, literal: bool = False) -> Expr:
        """Replace every occurrence of ``pattern`` (literal text, see :meth:`replace`).

        >>> from loom_frames.expr import fld
        >>> fld["s"].str.replace_all(" ", "_").to_mongo_expr()
        {'$replaceAll': {'input': '$s', 'find': ' ', 'replacement': '_'}}
        """
        return self._replace(pattern, value, literal, True, "str.replace_all")

    def regex(self, pattern: str, flags: str | int = "") -> Expr:
        """Same as :meth:`Expr.regex`.

        >>> from loom_frames.expr import fld
        >>> fld["name"].str.regex("^a", "i")
        fld['name'].regex('^a', 'i')
        """
        return self._expr.regex(pattern, flags)


_REGEX_SYNTAX = frozenset("\\.+*?()|[]{}^$")


class StructNamespace:
    """``expr.struct``: fields of a nested document.

    >>> from loom_frames.expr import fld
    >>> fld["address"].struct.field("city") == "Oslo"
    fld['address.city'] == 'Oslo'
    """

    __slots__ = ("_expr",)

    def __init__(self, expr: Expr) -> None:
        self._expr = expr

    def field(self, name: str) -> Expr:
        """The sub-field ``name`` (MongoDB's dotted path).

        >>> from loom_frames.expr import fld
        >>> fld["address"].struct.field("city").to_mongo_expr()
        '$address.city'
        """
        return self._expr[check_name(name)]


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


    def date(self) -> Expr:
        """The calendar date (UTC), a ``Date``.

        >>> from loom_frames.expr import fld
        >>> fld["ts"].dt.date().to_mongo_expr()
        {'$dateTrunc': {'date': '$ts', 'unit': 'day'}}
        """
        return self._expr._new(n.ToDate(self._expr.node))

    def strftime(self, format: str) -> Expr:  # noqa: A002 - Polars' name
        """Format as text (UTC) with the specifiers both engines share: ``%Y %m %d %H %M
        %S %j %u %V %G %U %%`` (MongoDB's ``$dateToString``).

        >>> from loom_frames.expr import fld
        >>> fld["ts"].dt.strftime("%Y-%m-%d").to_mongo_expr()
        {'$dateToString': {'date': '$ts', 'format': '%Y-%m-%d'}}
        """
        text = text_argument(format, "dt.strftime")
        bad = sorted(set(_SPECIFIER.findall(text)) - set(STRFTIME_SPECIFIERS))
        if bad or text.replace("%%", "").endswith("%"):
            raise InvalidExpressionError(
                f"dt.strftime({format!r}): {', '.join(bad) or 'a lone %'} has no one meaning "
                f"in MongoDB and Polars. Hint: use {' '.join(STRFTIME_SPECIFIERS)}.")
        return self._expr._new(n.Strftime(self._expr.node, text))


STRFTIME_SPECIFIERS = ("%Y", "%m", "%d", "%H", "%M", "%S", "%j", "%u", "%V", "%G", "%U", "%%")
_SPECIFIER = re.compile(r"%.")

_CAST_NAMES = {"Utf8": "String", "Int64": "Int64", "Float64": "Float64", "String": "String",
               "Boolean": "Boolean", "Datetime": "Datetime", "Date": "Date"}


def cast_target(dtype: object) -> str:
    """The name of a cast target: a Polars dtype (class or instance) or its name.

    >>> cast_target("Float64")
    'Float64'
    """
    name = dtype if isinstance(dtype, str) else (
        dtype.__name__ if isinstance(dtype, type) else type(dtype).__name__)
    target = _CAST_NAMES.get(name)
    if target == "Datetime" and not isinstance(dtype, (str, type)):
        unit, zone = getattr(dtype, "time_unit", "ms"), getattr(dtype, "time_zone", "UTC")
        if unit != "ms" or zone not in (None, "UTC"):
            raise InvalidExpressionError(
                f"cast({dtype!r}): MongoDB stores UTC milliseconds. Hint: cast to "
                "pl.Datetime('ms', 'UTC') and convert after loading.")
    if target is None:
        raise InvalidExpressionError(f"cast() converts to {', '.join(n.CAST_TARGETS)}, got "
                                     f"{dtype!r}.")
    return target


_PART_NAMES: dict[type[n.DatePart], str] = {
    n.Year: "year", n.Month: "month", n.Day: "day", n.Hour: "hour", n.Weekday: "weekday",
}
