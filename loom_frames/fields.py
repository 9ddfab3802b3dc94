"""Field markers and the value conventions every model shares.

The markers are ``typing.Annotated`` aliases carrying a :class:`Role`, so the schema,
the persistence path and the expression binder can all ask a field what it is::

    >>> from loom_frames import Persistable, StrLower
    >>> class Person(Persistable):
    ...     email: StrLower
    >>> Person(email="Alice@Example.COM").email
    'alice@example.com'

Time: MongoDB stores UTC milliseconds. Every datetime a model holds is therefore
normalised when it is set: a naive datetime is taken to be UTC, an aware one is
converted to UTC, and microseconds are floored to whole milliseconds, so what an object
holds is exactly what a later load returns.
"""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass
from typing import Annotated, Any, Self

from bson import ObjectId
from pydantic import AfterValidator, Field, PlainSerializer
from pydantic_core import core_schema

__all__ = [
    "IncrCounter",
    "ObjectIdField",
    "Role",
    "StrLower",
    "StrUpper",
    "TimeInserted",
    "TimeUpdated",
    "case_rule",
    "date_to_datetime",
    "normalize_datetime",
    "to_object_id",
]


class Role(enum.Enum):
    """What a marked field does when an object is persisted."""

    STR_LOWER = "str_lower"
    STR_UPPER = "str_upper"
    TIME_INSERTED = "time_inserted"
    TIME_UPDATED = "time_updated"
    INCR_COUNTER = "incr_counter"


@dataclass(frozen=True, slots=True)
class Marker:
    """The ``Annotated`` metadata that tags a field with its :class:`Role`."""

    role: Role


def utc_now() -> _dt.datetime:
    """The current time as MongoDB will store it (UTC, millisecond precision)."""
    return normalize_datetime(_dt.datetime.now(_dt.UTC))


def normalize_datetime(value: _dt.datetime) -> _dt.datetime:
    """Naive -> UTC, aware -> converted to UTC, microseconds floored to milliseconds.

    >>> normalize_datetime(_dt.datetime(2024, 5, 1, 12, 0, 0, 123456))
    datetime.datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=datetime.timezone.utc)
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    elif value.utcoffset() != _dt.timedelta(0) or value.tzinfo is not _dt.UTC:
        value = value.astimezone(_dt.UTC)
    micro = value.microsecond - value.microsecond % 1000
    return value if micro == value.microsecond else value.replace(microsecond=micro)


def date_to_datetime(value: _dt.date) -> _dt.datetime:
    """A ``date`` as MongoDB stores it: the datetime at midnight UTC of that day.

    >>> date_to_datetime(_dt.date(2024, 5, 1))
    datetime.datetime(2024, 5, 1, 0, 0, tzinfo=datetime.timezone.utc)
    """
    return _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.UTC)


def to_object_id(value: Any) -> ObjectId:
    """Coerce an ``ObjectId`` or a 24-hex string; anything else is a ``ValueError``.

    >>> to_object_id("64f8a0000000000000000000")
    ObjectId('64f8a0000000000000000000')
    """
    if isinstance(value, ObjectId):
        return value
    if isinstance(value, str) and ObjectId.is_valid(value):
        return ObjectId(value)
    raise ValueError(f"expected an ObjectId or a 24-character hex string, got {value!r}")


class _ObjectIdAnnotation:
    """Pydantic core schema for ``bson.ObjectId``: accepts ObjectId or 24-hex str."""

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: Any) -> Any:
        return core_schema.no_info_plain_validator_function(
            to_object_id,
            serialization=core_schema.to_string_ser_schema(when_used="json-unless-none"),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, _schema: Any, _handler: Any) -> dict[str, Any]:
        return {"type": "string", "pattern": "^[0-9a-f]{24}$"}


ObjectIdField = Annotated[ObjectId, _ObjectIdAnnotation]
"""An ObjectId field: accepts a ``bson.ObjectId`` or its 24-hex string."""


class Counter(int):
    """The value of an :data:`IncrCounter` field; ``+=``/``-=`` yield an :class:`Increment`."""

    __slots__ = ()

    def __add__(self, other: Any) -> Any:
        if isinstance(other, int) and not isinstance(other, bool):
            return Increment(int(self) + other, base=self)
        return int(self) + other

    __radd__ = __add__

    def __sub__(self, other: Any) -> Any:
        if isinstance(other, int) and not isinstance(other, bool):
            return Increment(int(self) - other, base=self)
        return int(self) - other


class Increment(int):
    """An int produced by ``counter += n``: remembers the counter it came from."""

    base: Counter

    def __new__(cls, value: int, *, base: Counter) -> Self:
        obj = super().__new__(cls, value)
        obj.base = base
        return obj


def _as_counter(value: int) -> Counter:
    return value if type(value) is Counter else Counter(value)


def _lower(value: str) -> str:
    return value.lower()


def _upper(value: str) -> str:
    return value.upper()


_CASE_RULES = {Role.STR_LOWER: _lower, Role.STR_UPPER: _upper}


def case_rule(role: Role | None) -> Any:
    """The normalisation of a StrLower / StrUpper field (Python's ``str.lower`` /
    ``str.upper``, exactly), or None for other roles. Objects, frame writes and query
    literals all apply this one rule.

    >>> case_rule(Role.STR_UPPER)("straße")
    'STRASSE'
    """
    return _CASE_RULES.get(role) if role is not None else None


_plain_int = PlainSerializer(int, return_type=int)

StrLower = Annotated[str, AfterValidator(_lower), Marker(Role.STR_LOWER)]
"""A string stored lowercase (normalised on construction and on assignment)."""

StrUpper = Annotated[str, AfterValidator(_upper), Marker(Role.STR_UPPER)]
"""A string stored uppercase (normalised on construction and on assignment)."""

TimeInserted = Annotated[
    _dt.datetime | None, Field(default=None), Marker(Role.TIME_INSERTED)
]
"""Set once, when the document is first stored (``$setOnInsert`` on updates)."""

TimeUpdated = Annotated[_dt.datetime | None, Field(default=None), Marker(Role.TIME_UPDATED)]
"""Refreshed on every persist that writes something."""

IncrCounter = Annotated[
    int,
    Field(validate_default=True),
    AfterValidator(_as_counter),
    _plain_int,
    Marker(Role.INCR_COUNTER),
]
"""An integer changed only with ``+=`` / ``-=``; persisted as ``$inc`` of the delta."""


def field_role(metadata: list[Any]) -> Role | None:
    """The :class:`Role` among a field's ``Annotated`` metadata, if any."""
    for item in metadata:
        if isinstance(item, Marker):
            return item.role
    return None
