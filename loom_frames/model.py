"""The model classes: Persistable, LedgerModel, TimeSeriesLedgerModel, and their declarations.

A model is a Pydantic class plus a :class:`PersistConfig` (where it lives) attached by
:func:`declare_persist_db`. This module holds the classes, their field bookkeeping and
change tracking; the writes live in :mod:`loom_frames.persist`, the reads in the query
modules.

>>> from loom_frames import Persistable, declare_persist_db, StrLower
>>> @declare_persist_db(db_name="my_app", collection_name="users")
... class User(Persistable):
...     name: str
...     email: StrLower
...     age: int
>>> User(name="Alice", email="Alice@Example.com", age=30).email
'alice@example.com'
"""

from __future__ import annotations

import datetime as _dt
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from bson import ObjectId
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, model_validator
from pymongo import IndexModel

from .columns import check_storage_keys, storage_key

if TYPE_CHECKING:
    import polars as pl

    from .query import Query
    from .write.frames import WriteResult
from .errors import ModelDeclarationError, did_you_mean
from .fields import (
    Increment,
    ObjectIdField,
    Role,
    TimeInserted,
    TimeUpdated,
    field_role,
    normalize_datetime,
)

__all__ = [
    "GRANULARITIES",
    "LedgerModel",
    "PersistConfig",
    "Persistable",
    "TimeSeriesConfig",
    "TimeSeriesLedgerModel",
    "declare_persist_db",
    "declare_timeseries",
]

GRANULARITIES = ("seconds", "minutes", "hours")

M = TypeVar("M", bound="Persistable")

STORED = MappingProxyType({"loom_frames": "stored document"})
"""Validation context of a document read back from MongoDB (see ``codec.hydrate``):
its datetimes are already UTC milliseconds, so the time rule has nothing to do."""


@dataclass(frozen=True, slots=True)
class TimeSeriesConfig:
    """Options of a native time-series collection (see :func:`declare_timeseries`)."""

    metakey: str
    timekey: str = "updated_time"
    granularity: str = "seconds"
    ttl: int | None = None

    def create_options(self) -> dict[str, Any]:
        """The ``create`` options MongoDB needs for this collection."""
        options: dict[str, Any] = {
            "timeseries": {
                "timeField": self.timekey,
                "metaField": self.metakey,
                "granularity": self.granularity,
            }
        }
        if self.ttl is not None:
            options["expireAfterSeconds"] = self.ttl
        return options


@dataclass(frozen=True, slots=True)
class PersistConfig:
    """Where a model is stored (see :func:`declare_persist_db`)."""

    db_name: str
    collection_name: str
    version: int | None = None
    test: bool = False
    indexes: tuple[IndexModel, ...] = ()
    timeseries: TimeSeriesConfig | None = field(default=None)

    @property
    def database(self) -> str:
        """The database actually used: ``<db_name>_test`` for ``test=True`` models."""
        return f"{self.db_name}_test" if self.test else self.db_name


def _holds_datetime(annotation: Any, _seen: frozenset[type] = frozenset()) -> bool:
    if annotation is _dt.datetime:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in _seen:
            return False
        seen = _seen | {annotation}
        return any(_holds_datetime(f.annotation, seen) for f in annotation.model_fields.values())
    return any(_holds_datetime(arg, _seen) for arg in typing.get_args(annotation))


def _normalise_time_value(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        return normalize_datetime(value)
    if isinstance(value, BaseModel):  # nested models hold what a load returns, too
        for name, item in value.__dict__.items():
            value.__dict__[name] = _normalise_time_value(item)
        return value
    if isinstance(value, list):
        return [_normalise_time_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise_time_value(v) for k, v in value.items()}
    return value


class Persistable(BaseModel):
    """A Pydantic model stored as one MongoDB document per object.

    ``persist()`` inserts a new object and afterwards sends only what changed:
    ``$set``/``$unset`` of changed fields, ``$inc`` of counter deltas, nothing at all
    when nothing changed.
    """

    model_config = ConfigDict(
        validate_assignment=True,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        arbitrary_types_allowed=True,
    )

    id: ObjectIdField | None = Field(default=None, alias="_id")
    created_at: TimeInserted = None
    updated_time: TimeUpdated = None

    __loom_persist__: ClassVar[PersistConfig | None] = None
    __loom_counters__: ClassVar[frozenset[str]] = frozenset()
    __loom_datetime_fields__: ClassVar[tuple[str, ...]] = ()

    # The stored document as last written or read (storage keys, BSON-ready values);
    # None while the object has never been stored.
    _loom_saved: dict[str, Any] | None = PrivateAttr(default=None)
    # Time fields persist() filled in itself (refreshed again on the next ledger insert).
    _loom_auto_times: set[str] = PrivateAttr(default_factory=set)
    # The insert document sent by a persist() whose outcome is unknown (the reply was
    # lost): the next persist() completes it first, at most once (see write.objects).
    _loom_pending: dict[str, Any] | None = PrivateAttr(default=None)
    # Why this object refuses to persist until reloaded: an update carrying counter
    # increments was sent and its outcome is unknown (a blind retry could apply it twice).
    _loom_unsure: str | None = PrivateAttr(default=None)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        check_storage_keys(cls)
        cls.__loom_counters__ = frozenset(
            name for name, info in cls.model_fields.items()
            if field_role(info.metadata) is Role.INCR_COUNTER
        )
        cls.__loom_datetime_fields__ = tuple(
            name for name, info in cls.model_fields.items() if _holds_datetime(info.annotation)
        )

    @model_validator(mode="after")
    def _normalise_datetimes(self, info: ValidationInfo) -> Self:
        # One call per object (not per field): naive -> UTC, floor to milliseconds.
        # A stored document decoded from BSON already holds UTC milliseconds.
        if info.context is STORED:
            return self
        values = self.__dict__
        for name in self.__loom_datetime_fields__:
            value = values[name]
            if value is not None:
                values[name] = _normalise_time_value(value)
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__loom_counters__ and self._loom_saved is not None:
            current = self.__dict__[name]
            if not (isinstance(value, Increment) and value.base is current):
                raise ModelDeclarationError(
                    f"{type(self).__name__}.{name} is an IncrCounter of a stored object: "
                    f"it changes only with += or -= (got plain assignment of {value!r}). "
                    f"Hint: write obj.{name} += {_delta_hint(current, value)}."
                )
        super().__setattr__(name, value)

    def __eq__(self, other: object) -> bool:
        # Equal field values are equal objects; the persistence bookkeeping is not data.
        if not isinstance(other, BaseModel):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]

    # ----------------------------------------------------------------- bookkeeping
    @classmethod
    def persist_config(cls) -> PersistConfig:
        """The model's storage declaration; a clear error when it has none."""
        config = cls.__dict__.get("__loom_persist__")
        if config is None:
            raise ModelDeclarationError(
                f"{cls.__name__} has no storage declared. Hint: decorate it with "
                f"@declare_persist_db(db_name=..., collection_name=...)."
            )
        return config

    @property
    def is_stored(self) -> bool:
        """True once the object was persisted or loaded from MongoDB."""
        return self._loom_saved is not None

    # The persistence verbs live in write/objects.py; these are thin entry points.
    def persist(self) -> Self:
        """Store the object: insert it when new, else send one update of what changed.

        Returns the object itself (its ``id`` and counters updated). Failures say their
        outcome: :class:`~loom_frames.errors.WriteRejectedError` (nothing applied, the
        object as it was) or :class:`~loom_frames.errors.WriteOutcomeUnknownError` (may
        have been applied; calling ``persist()`` again completes it at most once, except
        after counter increments: reload the object first).
        """
        from .write import objects

        objects.persist(self)
        return self

    @classmethod
    def persist_many(cls, objects: Iterable[Persistable]) -> list[ObjectId]:
        """Store many objects of this model in ONE bulk write; returns their ids."""
        from .write import objects as _objects

        return _objects.persist_many(cls, list(objects))

    def delete(self) -> bool:
        """Delete the stored document; True if a document was deleted."""
        from .write import objects

        return objects.delete(self)

    @classmethod
    def from_id(cls, id: ObjectId | str) -> Self | None:
        """Load the object with this id (ObjectId or 24-hex str), or None when none has it.

        A malformed id string gives None as well (no document can have it); an id of
        another type raises :class:`~loom_frames.errors.DocumentValidationError`.
        """
        from .errors import DocumentValidationError
        from .expr import fld
        from .fields import to_object_id
        from .query import Query

        if isinstance(id, str) and not ObjectId.is_valid(id):
            return None
        try:
            oid = to_object_id(id)
        except ValueError as exc:
            raise DocumentValidationError(
                f"{cls.__name__}.from_id expects an ObjectId or a 24-character hex string, "
                f"got {id!r}"
            ) from exc
        found: Self | None = Query.from_model(cls).filter(fld("id") == oid).load_one()
        return found

    @classmethod
    def collection(cls) -> Any:
        """The pymongo ``Collection`` behind this model (created/indexed on first use)."""
        from .storage import collection_for

        return collection_for(cls)

    @classmethod
    def filter(cls, *exprs: Any) -> Query[Self]:
        """Start a query: ``User.filter(lm.fld['age'] > 25)`` (the conjunction of exprs)."""
        from .query import Query

        return Query.from_model(cls).filter(*exprs)

    @classmethod
    def scan(cls, *, on_invalid: str = "raise") -> pl.LazyFrame:
        """A Polars ``LazyFrame`` over the collection (pushdown of columns, filters, limits).

        ``on_invalid="null"`` reads stored values that do not fit the model as null.

        >>> import polars as pl
        >>> lazy = User.scan().filter(pl.col("age") > 25).select("name")  # doctest: +SKIP
        """
        from .query import Query

        return Query.from_model(cls).scan(on_invalid=on_invalid)

    @classmethod
    def insert_dataframe(
        cls,
        df: Any,
        *,
        batch_size: int = 10_000,
        progress: Any = "auto",
        extra: str = "raise",
        on_error: str = "raise",
    ) -> WriteResult:
        """Insert every row of a pandas / Polars / PyArrow frame as a new document.

        The frame is held to the model like ``persist()`` holds an object (columns,
        types, markers, defaults); returns a ``WriteResult`` (see
        :func:`loom_frames.write.insert_dataframe`).

        >>> User.insert_dataframe(pd.DataFrame({"name": ["Bob"], "email": ["Bob@x.org"], "age": [25]}))  # doctest: +SKIP
        WriteResult(inserted=1, updated=0, unchanged=0, failed=0)
        """
        from .write import frames

        return frames.insert_dataframe(
            cls, df, batch_size=batch_size, progress=progress, extra=extra,  # type: ignore[arg-type]
            on_error=on_error,  # type: ignore[arg-type]
        )

    @classmethod
    def upsert_dataframe(
        cls,
        df: Any,
        on: Sequence[str] | str,
        *,
        batch_size: int = 10_000,
        progress: Any = "auto",
        extra: str = "raise",
        on_error: str = "raise",
    ) -> WriteResult:
        """Insert new rows and update changed ones, one document per key ``on``.

        Idempotent: re-running the same frame changes nothing and reports the rows
        unchanged (see :func:`loom_frames.write.upsert.upsert_dataframe`).

        >>> User.upsert_dataframe(df, on=["email"])  # doctest: +SKIP
        WriteResult(inserted=0, updated=1, unchanged=1, failed=0)
        """
        from .write import upsert

        return upsert.upsert_dataframe(
            cls, df, on, batch_size=batch_size, progress=progress, extra=extra,  # type: ignore[arg-type]
            on_error=on_error,  # type: ignore[arg-type]
        )

    @classmethod
    def arrow_schema(cls) -> Any:
        """The model's frame schema as a ``pyarrow.Schema`` (``id`` is a hex string)."""
        from .schema import arrow_schema

        return arrow_schema(cls)

    @classmethod
    def polars_schema(cls) -> Any:
        """The model's frame schema as a ``polars.Schema``."""
        from .schema import polars_schema

        return polars_schema(cls)

    @classmethod
    def agg(cls, pipeline: Any, *, schema: Any = None, infer_schema_length: int | None = 100
            ) -> Query[Self]:
        """Run an aggregation pipeline (a list of stages or ``AggregationStages``).

        ``load_many()`` returns its result documents as dicts; frames use ``schema`` (a
        ``pyarrow.Schema``) when given, else a schema inferred from the first
        ``infer_schema_length`` result rows (see ``Query.agg``).
        """
        from .query import Query

        return Query.from_model(cls).agg(pipeline, schema=schema,
                                         infer_schema_length=infer_schema_length)


class LedgerModel(Persistable):
    """Append-only: every ``persist()`` inserts a new document, preserving history."""


class TimeSeriesLedgerModel(LedgerModel):
    """A ledger stored in a native MongoDB time-series collection.

    Declare it with :func:`declare_timeseries`; the time field defaults to
    ``updated_time`` (set at persist unless the object was given a time explicitly).
    """

    __loom_timeseries__: ClassVar[TimeSeriesConfig | None] = None


def declare_persist_db(
    *,
    db_name: str,
    collection_name: str,
    version: int | None = None,
    test: bool = False,
    indexes: Sequence[Any] = (),
    unique: Sequence[str | Sequence[str]] = (),
) -> Callable[[type[M]], type[M]]:
    """Declare where a model is stored.

    ``indexes`` items may be a field name, a ``(field, direction)`` pair, a list of
    pairs (a compound index), or a ``pymongo.IndexModel``. ``unique`` items are a field
    name or a tuple of field names: a unique (compound) index, which is what lets
    ``upsert_dataframe(on=...)`` run safely beside other writers. Both are created once
    per process on first use; field names are checked here (a typo is an error) and
    mapped to their storage keys. ``test=True`` stores in ``<db_name>_test``.
    ``version`` is written into each new document as ``_v`` so later migrations can find
    old shapes.

    >>> @declare_persist_db(db_name="my_app", collection_name="events", indexes=["kind"],
    ...                     unique=[("source", "seq")])
    ... class Event(Persistable):
    ...     kind: str
    ...     source: str
    ...     seq: int
    >>> [dict(i.document["key"]) for i in Event.persist_config().indexes]
    [{'kind': 1}, {'source': 1, 'seq': 1}]
    """
    for label, value in (("db_name", db_name), ("collection_name", collection_name)):
        if not isinstance(value, str) or not value or "$" in value or "\x00" in value:
            raise ModelDeclarationError(
                f"{label} must be a non-empty string without '$' or NUL, got {value!r}"
            )
    bad = sorted(set(db_name) & set('/\\. "*<>:|?'))
    if bad or len(db_name.encode()) + (5 if test else 0) > 63:
        raise ModelDeclarationError(
            f"db_name {db_name!r} is not a MongoDB database name: "
            + (f"it contains {', '.join(map(repr, bad))}" if bad else "it is over 63 bytes")
            + ". Hint: use letters, digits, '_' and '-', e.g. 'my_app'."
        )
    if collection_name.startswith("system."):
        raise ModelDeclarationError(
            f"collection_name {collection_name!r} is reserved by MongoDB (system.*). "
            "Hint: choose another name."
        )

    def decorate(cls: type[M]) -> type[M]:
        if not (isinstance(cls, type) and issubclass(cls, Persistable)):
            raise ModelDeclarationError(
                f"@declare_persist_db decorates a Persistable subclass, got {cls!r}"
            )
        if version is not None:
            check_storage_keys(cls, version=True)
        config = PersistConfig(
            db_name=db_name,
            collection_name=collection_name,
            version=version,
            test=test,
            indexes=tuple(_index_model(cls, spec) for spec in indexes)
            + tuple(_unique_index(cls, spec) for spec in unique),
            timeseries=cls.__dict__.get("__loom_persist__", None)
            and cls.__dict__["__loom_persist__"].timeseries,
        )
        type.__setattr__(cls, "__loom_persist__", config)
        return cls

    return decorate


def declare_timeseries(
    *,
    metakey: str,
    granularity: str = "seconds",
    ttl: int | None = None,
    timekey: str = "updated_time",
) -> Callable[[type[M]], type[M]]:
    """Declare a :class:`TimeSeriesLedgerModel`'s native time-series collection.

    Put it above ``@declare_persist_db``. The collection is created on first use with
    ``timeField=timekey``, ``metaField=metakey``, ``granularity`` and, only when ``ttl``
    (seconds) is given, ``expireAfterSeconds``.
    """
    if granularity not in GRANULARITIES:
        raise ModelDeclarationError(
            f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}"
            + did_you_mean(str(granularity), GRANULARITIES)
        )
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0):
        raise ModelDeclarationError(f"ttl must be a positive number of seconds, got {ttl!r}")

    def decorate(cls: type[M]) -> type[M]:
        if not (isinstance(cls, type) and issubclass(cls, TimeSeriesLedgerModel)):
            raise ModelDeclarationError(
                f"@declare_timeseries decorates a TimeSeriesLedgerModel subclass, got {cls!r}"
            )
        for label, name in (("metakey", metakey), ("timekey", timekey)):
            if name not in cls.model_fields:
                raise ModelDeclarationError(
                    f"{label} {name!r} is not a field of {cls.__name__}."
                    + did_you_mean(name, cls.model_fields)
                )
        annotation = cls.model_fields[timekey].annotation
        if not (annotation is _dt.datetime or _dt.datetime in typing.get_args(annotation)):
            raise ModelDeclarationError(
                f"timekey {timekey!r} of {cls.__name__} must be a datetime field"
            )
        ts = TimeSeriesConfig(metakey=metakey, timekey=timekey, granularity=granularity, ttl=ttl)
        config = cls.persist_config()
        type.__setattr__(
            cls, "__loom_persist__", PersistConfig(**{**_asdict(config), "timeseries": ts})
        )
        return cls

    return decorate


# ------------------------------------------------------------------------- helpers
def _asdict(config: PersistConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def _index_model(cls: type[Persistable], spec: Any) -> IndexModel:
    if isinstance(spec, IndexModel):
        return spec
    if isinstance(spec, str):
        keys: list[tuple[str, Any]] = [(spec, 1)]
    elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        keys = [spec]
    elif isinstance(spec, list) and all(isinstance(k, tuple) and len(k) == 2 for k in spec):
        keys = list(spec)
    else:
        raise ModelDeclarationError(
            f"index spec {spec!r} of {cls.__name__} is not a field name, a (field, "
            "direction) pair, a list of pairs or a pymongo.IndexModel"
        )
    return IndexModel([(storage_key(cls, name), direction) for name, direction in keys])


def _unique_index(cls: type[Persistable], spec: Any) -> IndexModel:
    names = (spec,) if isinstance(spec, str) else tuple(spec) if isinstance(
        spec, (tuple, list)
    ) else ()
    if not names or not all(isinstance(n, str) for n in names):
        raise ModelDeclarationError(
            f"unique spec {spec!r} of {cls.__name__} is not a field name or a tuple of "
            "field names (e.g. unique=['sku', ('year', 'flight')])"
        )
    return IndexModel([(storage_key(cls, name), 1) for name in names], unique=True)


def _delta_hint(current: int, value: Any) -> str:
    try:
        return str(int(value) - int(current))
    except (TypeError, ValueError):
        return "1"
