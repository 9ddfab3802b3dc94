"""User input -> validated, frozen values: field names, literals, value lists, flags.

Every value a user passes becomes a literal here, checked and frozen (lists to tuples,
dicts to :class:`~loom_frames.expr.nodes.Doc`, datetimes to UTC milliseconds), so it
can never turn into an operator or a field path, and a tree never changes once built.

>>> freeze({"$ne": None}, "==")
{'$ne': None}
>>> check_name("$where")
Traceback (most recent call last):
...
loom_frames.errors.InvalidExpressionError: invalid field name '$where': names must be non-empty, contain no NUL character, and no dot-separated part may be empty or start with '$'. Hint: operators are written with Python operators and methods, never as '$' names.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import re
import uuid
from collections.abc import Iterable
from typing import Any

from bson import Decimal128, ObjectId

from ..errors import InvalidExpressionError
from . import nodes as n
from .bind import normalize_datetime

__all__ = [
    "CLOSED",
    "RESERVED_PREFIX",
    "check_name",
    "check_output_name",
    "check_time_zone",
    "freeze",
    "key_problem",
    "literal_values",
    "regex_flags",
    "text_argument",
]

RESERVED_PREFIX = "__loom"
"""Keys starting with this are the library's own (e.g. computed fields of a load)."""

_SCALARS = (bool, int, float, str, bytes, decimal.Decimal, Decimal128, ObjectId, uuid.UUID,
            _dt.date)
_FLAGS = {re.IGNORECASE: "i", re.MULTILINE: "m", re.DOTALL: "s", re.VERBOSE: "x"}
CLOSED = ("both", "left", "right", "none")


def _is_expression(value: Any) -> bool:
    from .api import Expr  # the wrapper imports this module

    return isinstance(value, Expr)


def key_problem(key: object, *, reserved: bool = True) -> str | None:
    """Why ``key`` cannot be one key of a document (a stored field, an output column),
    or None when it can: the ONE naming rule, also applied to each part of a field path.

    MongoDB reads ``$`` at the start of a name as an operator and ``.`` as a path, and
    a NUL ends a BSON key; names starting with ``__loom`` are the library's own.

    >>> key_problem("a.b"), key_problem("ok")
    ("it contains '.' (a path separator in MongoDB)", None)
    """
    if not isinstance(key, str) or not key:
        return "it is not a non-empty string"
    if key.startswith("$"):
        return "it starts with '$' (an operator in MongoDB)"
    if "." in key:
        return "it contains '.' (a path separator in MongoDB)"
    if "\x00" in key:
        return "it contains a NUL character"
    if reserved and key.startswith(RESERVED_PREFIX):
        return f"names starting with {RESERVED_PREFIX!r} are reserved by loom-frames"
    return None


def check_output_name(name: object, what: str) -> str:
    """``name`` if it can name an output column (of ``what``), else ``InvalidExpressionError``.

    Output names become keys of a ``$project``/``$group``/``$set`` stage, so they follow
    the stored-key rule (:func:`key_problem`).
    """
    problem = key_problem(name)
    if problem is not None:
        raise InvalidExpressionError(
            f"{what}: {name!r} cannot name a column: {problem}. Hint: choose a plain name "
            "such as 'total' (letters, digits, '_')."
        )
    assert isinstance(name, str)
    return name


def check_name(name: object, what: str = "field name") -> str:
    if not isinstance(name, str):
        raise InvalidExpressionError(f"a {what} must be a str, got {type(name).__name__} "
                                     f"{name!r}. Hint: fld['age'] or fld('age').")
    if not name or any(key_problem(part, reserved=False) for part in name.split(".")):
        raise InvalidExpressionError(
            f"invalid {what} {name!r}: names must be non-empty, contain no NUL character, "
            "and no dot-separated part may be empty or start with '$'. Hint: operators are "
            "written with Python operators and methods, never as '$' names.")
    return name


def freeze(value: Any, where: str) -> Any:
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
        return tuple(freeze(v, where) for v in value)
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str) or "\x00" in key:
                raise InvalidExpressionError(f"{where}: document keys must be str without "
                                             f"NUL characters, got {key!r}.")
        return n.Doc(tuple((k, freeze(v, where)) for k, v in value.items()))
    if _is_expression(value):
        raise InvalidExpressionError(f"{where} takes literal values, got the expression "
                                     f"{value!r}.")
    hint = " Hint: use .regex() for patterns." if isinstance(value, re.Pattern) else ""
    raise InvalidExpressionError(f"{where}: unsupported literal {value!r} of type "
                                 f"{type(value).__name__}.{hint}")


def literal_values(values: Any, method: str) -> tuple[n.Literal, ...]:
    if isinstance(values, (str, bytes, dict)) or _is_expression(values) \
            or not isinstance(values, Iterable):
        raise InvalidExpressionError(
            f".{method}() takes a collection of values (list, tuple, set, ...), got "
            f"{type(values).__name__} {values!r}. Hint: .{method}([{values!r}]).")
    items = list(values)
    if isinstance(values, (set, frozenset)):
        items.sort(key=lambda v: (type(v).__name__, repr(v)))
    frozen = tuple(freeze(v, f".{method}()") for v in items)
    if any(isinstance(v, tuple) for v in frozen):
        raise InvalidExpressionError(f".{method}() values must be scalars or documents, "
                                     "not lists.")
    return tuple(n.Literal(v) for v in frozen)


def text_argument(value: Any, method: str) -> str:
    if not isinstance(value, str):
        raise InvalidExpressionError(f".{method}() takes a str, got {value!r}.")
    return value


def regex_flags(flags: Any) -> str:
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


def check_time_zone(value: Any, method: str) -> str | None:
    """An IANA time zone name (``"America/New_York"``), or None for UTC.

    Both engines must know the zone: MongoDB's date operators take it as ``timezone``,
    Polars as ``convert_time_zone``. Fixed offsets (``"+01:00"``) are refused: they mean
    no daylight saving time, which a zone name says better (``"Etc/GMT-1"``).

    >>> check_time_zone("UTC", "dt.hour") is None
    True
    >>> check_time_zone("Europe/Lndon", "dt.hour")
    Traceback (most recent call last):
    ...
    loom_frames.errors.InvalidExpressionError: dt.hour(time_zone=...) takes an IANA time zone name such as 'America/New_York' or 'Europe/London', got 'Europe/Lndon'. Hint: zoneinfo.available_timezones() lists them.
    """
    if value is None or value == "UTC":
        return None
    import zoneinfo

    problem = not isinstance(value, str) or not value or value[0] in "+-" or "\x00" in value
    if not problem:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            problem = True
    if problem:
        raise InvalidExpressionError(
            f"{method}(time_zone=...) takes an IANA time zone name such as "
            f"'America/New_York' or 'Europe/London', got {value!r}. Hint: "
            "zoneinfo.available_timezones() lists them.")
    return str(value)
