"""Objects <-> BSON documents: one set of rules for every write path and the loaders.

* :func:`to_bson` / :func:`document_of`: the document an object is stored as (enum ->
  value, date -> midnight UTC, datetimes -> UTC milliseconds, storage keys, ``_v``);
* :func:`encode`: that document as BSON bytes, refusing client side, before anything is
  sent, what MongoDB cannot store (an int beyond 64 bits, a lone surrogate, a NUL in a
  key, a document over 16 MiB), naming the field;
* :func:`fits` / :func:`problem`: which stored values fit a field: ONE rule for the
  object loaders and the frame loaders (see "Stored values" below);
* :func:`hydrate` / :func:`document_projection`: a stored document back into an object;
* :func:`same`: MongoDB's equality of two stored values, decided client side, which is
  how ``persist()`` and ``upsert_dataframe`` both tell a change from no change;
* :data:`ABSENT`: a field the document does not have (MongoDB's "missing", not null);
* :func:`json_text` / :func:`from_json_text`: a free-form value (``dict``, ``Any``, ...)
  as a frame holds it, relaxed Extended JSON text, and back (what a frame write reads).

**Stored values.** A value fits a field when its BSON type is one the field is stored as,
with the leniency MongoDB's own numbers have: an ``int`` field takes int32, int64, a
boolean (as 0/1) and a double without a fraction within int64 (mongosh writes numbers as
doubles); a ``float`` field takes any of those numbers. Nothing else is converted: a
Decimal128 in an ``int`` field, the string ``"true"`` in a ``bool`` field or a string in
a ``datetime`` field does not fit, for objects as for frames (Pydantic's own lax
conversions would accept them, and parse the string as a *naive* datetime). Null,
missing and a NaN double outside ``float`` fields are all absent: null in a frame, None
in an object (or its error when the field cannot be None).

>>> import datetime as dt
>>> to_bson({"born": dt.date(2024, 5, 1)})
{'born': datetime.datetime(2024, 5, 1, 0, 0, tzinfo=datetime.timezone.utc)}
>>> same(5, 5.0), same(True, 1), same(ABSENT, None), same(float("nan"), float("nan"))
(True, False, True, True)
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import functools
import math
import uuid
import weakref
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import bson
from bson import Binary, DatetimeMS, Decimal128, Int64, ObjectId
from bson.errors import InvalidDocument
from pydantic import BaseModel

from .connection import CODEC_OPTIONS
from .errors import DocumentValidationError
from .expr.bind import Kind
from .fields import date_to_datetime, normalize_datetime
from .model import STORED

if TYPE_CHECKING:
    from .columns import Column
    from .model import Persistable

__all__ = [
    "ABSENT",
    "MAX_DOCUMENT_BYTES",
    "describe_value",
    "document_of",
    "document_projection",
    "encode",
    "expected",
    "fits",
    "fits_decimal",
    "hydrate",
    "hydrator",
    "problem",
    "same",
    "to_bson",
]

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
"""MongoDB's maxBsonObjectSize: the largest document it stores."""


class _Absent:
    """The type of :data:`ABSENT`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()
"""A field the stored document does not have (equal to null under :func:`same`)."""


# ------------------------------------------------------------------ which values fit
_INT64_LIMIT = 2.0**63
_DAY_MS = 86_400_000


def is_nan(value: Any) -> bool:
    """A NaN double (absent outside float fields; a Decimal128 NaN is a decimal)."""
    return type(value) is float and math.isnan(value)


@functools.lru_cache(maxsize=4096)
def base_kind(col: Column) -> Kind:
    """The kind whose stored types a column takes (an Enum/Literal by its values' type).

    >>> import pyarrow as pa
    >>> from loom_frames.columns import Column
    >>> base_kind(Column("c", "c", Kind.ENUM, pa.int64(), values=(1, 2)))
    <Kind.INT: 'int'>
    """
    if col.kind is Kind.ENUM:
        arrow = str(col.type)
        return Kind.INT if arrow == "int64" else Kind.FLOAT if arrow == "double" else Kind.STR
    return col.kind


def fits(value: Any, col: Column, *, frame: bool = True) -> bool:
    """True when a stored scalar ``value`` (not None, missing or a NaN outside float
    fields) fits the column ``col`` (not a list or struct column).

    ``value`` is as the driver decodes it (Decimal128 may be ``Decimal``, a date out of
    Python's range ``DatetimeMS``, a UUID ``uuid.UUID`` or a subtype-4 ``Binary``).
    ``frame`` adds what a frame column must also hold: a decimal within its
    ``decimal128(p, s)``. A free-form column takes anything.

    >>> from loom_frames.schema import columns_from_arrow
    >>> import pyarrow as pa
    >>> (age,) = columns_from_arrow(pa.schema({"age": pa.int64()}))
    >>> fits(30.0, age), fits(2.5, age), fits(True, age), fits("30", age)
    (True, False, True, False)
    """
    if col.free_form:
        return True  # objects and frames take anything
    base = base_kind(col)
    kind = type(value)
    if col.binary:
        return kind is bytes
    if base is Kind.STR:
        ok = kind is str
    elif base is Kind.INT:
        ok = kind is int or kind is bool or kind is Int64 or (
            kind is float and value.is_integer() and abs(value) < _INT64_LIMIT
        )
    elif base is Kind.FLOAT:
        ok = kind is float or kind is int or kind is bool or kind is Int64
    elif base is Kind.BOOL:
        ok = kind is bool
    elif base is Kind.DATETIME:
        ok = kind is _dt.datetime or kind is DatetimeMS
    elif base is Kind.DATE:
        ok = _is_midnight(value)
    elif base is Kind.DECIMAL:
        if isinstance(value, Decimal128):
            value = value.to_decimal()
        ok = isinstance(value, Decimal) and value.is_finite() and (
            not frame or (col.type is not None
                          and fits_decimal(value, col.type.precision, col.type.scale))
        )
    elif base is Kind.UUID:
        ok = kind is uuid.UUID or (
            kind is Binary and value.subtype == 4 and len(value) == 16
        )
    elif base is Kind.OBJECTID:
        ok = kind is ObjectId
    else:
        return True
    if ok and col.values is not None:  # an Enum's / Literal's values (a bool as 0/1)
        return value in col.values
    return ok


def problem(
    value: Any, col: Column, path: str, *, frame: bool = True
) -> tuple[str, Any, Column] | None:
    """``(path, value, column)`` of the first value under ``value`` that does not fit.

    The reference of the rule (:func:`fits`), walking lists and sub-documents; missing
    (:data:`ABSENT`), None and NaN always fit (they are absent, or NaN in a float field).
    Paths name list elements ``x[1]`` and sub-fields ``x.city``.

    >>> from loom_frames.schema import columns_from_arrow
    >>> import pyarrow as pa
    >>> (ints,) = columns_from_arrow(pa.schema({"x": pa.list_(pa.int64())}))
    >>> problem([1, 2.0, 2.5], ints, "x")[:2]
    ('x[2]', 2.5)
    """
    if value is ABSENT or value is None or is_nan(value) or col.free_form:
        return None
    if col.kind is Kind.LIST:
        if type(value) is not list:
            return (path, value, col)
        assert col.item is not None
        for i, item in enumerate(value):
            found = problem(item, col.item, f"{path}[{i}]", frame=frame)
            if found is not None:
                return found
        return None
    if col.kind is Kind.STRUCT:
        if not isinstance(value, Mapping):
            return (path, value, col)
        for child in col.children:
            found = problem(value.get(child.key, ABSENT), child, f"{path}.{child.name}",
                            frame=frame)
            if found is not None:
                return found
        return None
    return None if fits(value, col, frame=frame) else (path, value, col)


def _is_midnight(value: Any) -> bool:
    if isinstance(value, DatetimeMS):
        return int(value) % _DAY_MS == 0
    if not isinstance(value, _dt.datetime):
        return False
    if value.tzinfo is not None:
        value = value.astimezone(_dt.UTC)
    return (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0)


def fits_decimal(value: Decimal, precision: int, scale: int) -> bool:
    """True when ``value`` is exactly representable as ``decimal128(precision, scale)``.

    >>> fits_decimal(Decimal("1.25"), 10, 2), fits_decimal(Decimal("1.255"), 10, 2)
    (True, False)
    """
    if not value.is_finite():
        return False
    exact = decimal.Context(prec=100)  # Decimal128 holds 34 digits; never round here
    unscaled = value.scaleb(scale, context=exact)
    if unscaled != unscaled.to_integral_value(context=exact):
        return False
    return bool(abs(int(unscaled)) < 10**precision)


def expected(col: Column) -> str:
    """What a column accepts, for error messages.

    >>> from loom_frames.columns import Column
    >>> expected(Column("n", "n", Kind.INT, None))
    'an integer (int32/int64, or a double without a fraction)'
    """
    if col.values is not None:
        shown = ", ".join(repr(v) for v in col.values[:8])
        more = ", ..." if len(col.values) > 8 else ""
        return f"one of {shown}{more}"
    if col.binary:
        return "binary data"
    kind = base_kind(col)
    return {
        Kind.STR: "a string",
        Kind.INT: "an integer (int32/int64, or a double without a fraction)",
        Kind.FLOAT: "a number",
        Kind.BOOL: "a boolean",
        Kind.DATETIME: "a date",
        Kind.DATE: "a date at midnight UTC",
        Kind.DECIMAL: f"a decimal128 that fits {col.type}",
        Kind.UUID: "a UUID (binary subtype 4)",
        Kind.OBJECTID: "an ObjectId",
        Kind.LIST: "an array",
        Kind.STRUCT: "an embedded document",
    }.get(kind, "a value of its type")


_BSON_NAMES: list[tuple[type, str]] = [
    (bool, "bool"),
    (int, "int"),
    (float, "double"),
    (str, "string"),
    (_dt.datetime, "date"),
    (DatetimeMS, "date"),
    (Decimal, "decimal128"),
    (Decimal128, "decimal128"),
    (ObjectId, "objectId"),
    (uuid.UUID, "binary subtype 4"),
    (Binary, "binary"),
    (bytes, "binary"),
    (list, "array"),
    (Mapping, "document"),
]


def describe_value(value: Any, limit: int = 80) -> str:
    """``repr`` (shortened) and BSON type of a stored value, for error messages.

    >>> describe_value("abc")
    "'abc' (string)"
    """
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    name = next((n for t, n in _BSON_NAMES if isinstance(value, t)), type(value).__name__)
    if isinstance(value, Binary):
        name = f"binary subtype {value.subtype}"
    return f"{text} ({name})"


def misfit_message(where: str, model: str, path: str, value: Any, col: Column) -> str:
    """The message of a stored value that does not fit (objects and frames alike).

    >>> from loom_frames.columns import Column
    >>> misfit_message("document _id=1 in db.c", "User", "age", "old", Column("age", "age", Kind.INT, None))[:70]
    "document _id=1 in db.c does not fit User: field 'age' holds 'old' (str"
    """
    return (
        f"{where} does not fit {model}: field {path!r} holds {describe_value(value)}, "
        f"expected {expected(col)}."
    )


# ------------------------------------------------------------------ objects -> documents
def to_bson(value: Any) -> Any:
    """A Python value (as Pydantic dumps it) in the form BSON stores.

    Enum -> its value, date -> datetime at midnight UTC, datetime -> UTC milliseconds,
    tuple/set -> list; dicts and lists recursively. (Decimal <-> Decimal128 is the
    collection codec's job, so a stored document and a loaded one compare equal.)
    """
    if isinstance(value, dict):
        return {k: to_bson(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_bson(v) for v in value]
    if isinstance(value, enum.Enum):
        return to_bson(value.value)
    if isinstance(value, _dt.datetime):
        return normalize_datetime(value)
    if isinstance(value, _dt.date):
        return date_to_datetime(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and type(value) is not int:  # Counter and other subclasses
        return int(value)
    return value


def document_of(obj: Persistable) -> dict[str, Any]:
    """The object's stored document (storage keys; ``_id`` left out while None)."""
    doc = to_bson(obj.model_dump(by_alias=True, round_trip=True))
    if doc.get("_id") is None:
        doc.pop("_id", None)
    version = type(obj).persist_config().version
    if version is not None:
        doc["_v"] = version
    return doc


def encode(model: type, doc: Mapping[str, Any]) -> bytes:
    """``doc`` as BSON bytes; a :class:`DocumentValidationError` naming the field when
    MongoDB could not store it. Nothing has been sent when this raises.

    >>> encode(dict, {"n": 2**64})
    Traceback (most recent call last):
    ...
    loom_frames.errors.DocumentValidationError: dict cannot be stored: field 'n' holds 18446744073709551616, beyond MongoDB's 64-bit integers. Hint: store it as a Decimal or a string.
    """
    try:
        data = bson.encode(doc, codec_options=CODEC_OPTIONS)
    except (InvalidDocument, OverflowError, UnicodeEncodeError) as exc:
        raise DocumentValidationError(
            f"{model.__name__} cannot be stored: {_locate(doc, exc)}"
        ) from exc
    if len(data) > MAX_DOCUMENT_BYTES:
        sizes = sorted(
            ((len(bson.encode({k: v}, codec_options=CODEC_OPTIONS)), k) for k, v in doc.items()),
            reverse=True,
        )
        largest = ", ".join(f"{k!r} ({n:,} bytes)" for n, k in sizes[:3])
        raise DocumentValidationError(
            f"{model.__name__} cannot be stored: its document is {len(data):,} bytes and "
            f"MongoDB stores at most {MAX_DOCUMENT_BYTES:,}; the largest fields are "
            f"{largest}. Hint: keep large payloads out of the document (e.g. GridFS), or "
            "split it."
        )
    return data


def _locate(doc: Mapping[str, Any], exc: Exception) -> str:
    """Which field of ``doc`` made ``exc``, and why, in words."""
    for key, value in doc.items():
        path = _bad_path(key, value)
        if path is not None:
            where, what = path
            at = f" (at {where!r})" if where != key else ""
            return f"field {key!r}{at} {what}"
    return f"{type(exc).__name__}: {exc}"


def _bad_path(path: str, value: Any) -> tuple[str, str] | None:
    problem = _bad_key(path.rpartition(".")[2])
    if problem is not None:
        return path, problem
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return path, (
            f"holds {value}, beyond MongoDB's 64-bit integers. Hint: store it as a Decimal "
            "or a string."
        )
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return path, (
                f"holds a string with a lone surrogate {value[exc.start : exc.end]!r} at "
                f"position {exc.start}, which UTF-8 (and so BSON) cannot encode. Hint: "
                "decode the source text with errors='replace', or drop the character."
            )
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _bad_path(f"{path}.{key}", item)
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _bad_path(f"{path}.{i}", item)
            if found is not None:
                return found
    return None


def _bad_key(key: Any) -> str | None:
    if not isinstance(key, str):
        return f"has a key {key!r} that is not a string"
    if "\x00" in key:
        return f"has a key {key!r} holding a NUL character, which BSON keys cannot hold"
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return f"has a key {key!r} holding a lone surrogate, which BSON cannot encode"
    return None


# ------------------------------------------------------------------ documents -> objects
def document_projection(model: type[Persistable]) -> dict[str, int]:
    """The ``find`` projection of the model's top-level stored keys (what hydrating an
    object needs; the same as a whole-document plan's ``Command.projection``)."""
    from .columns import model_columns

    return {col.key: 1 for col in model_columns(model)}


def hydrate(model: type[Persistable], doc: dict[str, Any]) -> Persistable:
    """A stored document (fetched with :func:`document_projection`) as a model object.

    Every value is held to the rule (:func:`fits`): one that does not fit is a
    :class:`DocumentValidationError` naming the model, the field, the ``_id`` and the
    value. Values decoded from BSON that fit are not validated again: a model whose
    fields are plain (no constraints, no validators of its own) gets its object built
    directly, converting only what must be (an int stored as a double, an enum's value to
    its member, a sub-document to its model); other models go through
    ``model_validate``. The fetched document itself becomes the object's snapshot (what
    ``persist()`` compares with).

    >>> from bson import ObjectId
    >>> user = hydrate(User, {"_id": ObjectId("64f8a0000000000000000001"), "name": "Ann",
    ...                       "age": 30.0})
    >>> user.age, user.is_stored
    (30, True)
    >>> hydrate(User, {"_id": ObjectId("64f8a0000000000000000001"), "name": "Ann",
    ...                "age": "30"})
    Traceback (most recent call last):
    ...
    loom_frames.errors.DocumentValidationError: document _id=ObjectId('64f8a0000000000000000001') in app.users does not fit User: field 'age' holds '30' (string), expected an integer (int32/int64, or a double without a fraction). Hint: fix the stored value (load_polars(on_invalid='null') reads the other documents, with such values as null).
    """
    return _builder(model)(doc)


def hydrator(model: type[Persistable]) -> Callable[[dict[str, Any]], Any]:
    """:func:`hydrate` for one model, looked up once (a load calls it per document)."""
    return _builder(model)


class _Misfit(Exception):
    """A stored value that does not fit its field (raised while building an object)."""

    def __init__(self, path: str, value: Any, col: Column, what: str | None = None) -> None:
        super().__init__(path)
        self.path, self.value, self.col, self.what = path, value, col, what


_builders: weakref.WeakKeyDictionary[type, Callable[[dict[str, Any]], Any]] = (
    weakref.WeakKeyDictionary()
)


def _builder(model: type[Persistable]) -> Callable[[dict[str, Any]], Any]:
    found = _builders.get(model)
    if found is None:
        found = _ObjectBuilder(model)
        _builders[model] = found
    return found


class _ObjectBuilder:
    """Builds one model's objects from stored documents (see :func:`hydrate`)."""

    __slots__ = ("columns", "fast", "fields", "model", "names", "private", "where")

    def __init__(self, model: type[Persistable]) -> None:
        from .columns import model_columns

        self.model = model
        self.columns = model_columns(model)
        config = model.__dict__.get("__loom_persist__")
        self.where = (f"{config.database}.{config.collection_name}" if config is not None
                      else model.__name__)
        self.fields = tuple(_field_plan(model, col) for col in self.columns)
        self.names = tuple(col.name for col in self.columns)
        self.fast = _plain_model(model) and all(plan[3] is not None for plan in self.fields)
        self.private = _private_defaults(model)

    def __call__(self, doc: dict[str, Any]) -> Any:
        try:
            if self.fast:
                return self._build(doc)
            return self._validate(doc)
        except _Misfit as bad:
            raise self._error(doc, bad) from None

    def _build(self, doc: dict[str, Any]) -> Any:
        values: dict[str, Any] = {}
        get = doc.get
        missing = None
        for name, key, exact, convert in self.fields:
            value = get(key, ABSENT)
            if type(value) is exact:
                values[name] = value
            elif value is ABSENT:
                missing = (missing or set()) | {name}
                values[name] = convert(value)  # type: ignore[misc]
            else:
                values[name] = convert(value)  # type: ignore[misc]
        obj = _new(self.model)
        _setattr(obj, "__dict__", values)
        _setattr(obj, "__pydantic_fields_set__",
                 set(self.names) if missing is None else set(self.names) - missing)
        _setattr(obj, "__pydantic_extra__", None)
        shared, factories = self.private
        private = dict(shared)
        for name, factory in factories:
            private[name] = factory()
        private["_loom_saved"] = doc
        _setattr(obj, "__pydantic_private__", private)
        return obj

    def _validate(self, doc: dict[str, Any]) -> Any:
        given = doc
        for col in self.columns:
            value = doc.get(col.key, ABSENT)
            found = problem(value, col, col.name, frame=False)
            if found is not None:
                raise _Misfit(*found)
            cleaned = _absent_nans(value, col)
            if cleaned is not value:
                given = given if given is not doc else dict(doc)
                given[col.key] = cleaned
        try:
            obj = self.model.model_validate(given, context=STORED)
        except ValueError as exc:
            raise DocumentValidationError(
                f"document _id={doc.get('_id')!r} in {self.where} does not fit "
                f"{self.model.__name__}: {exc}"
            ) from exc
        obj.__pydantic_private__["_loom_saved"] = doc  # type: ignore[index]
        return obj

    def _error(self, doc: dict[str, Any], bad: _Misfit) -> DocumentValidationError:
        where = f"document _id={doc.get('_id')!r} in {self.where}"
        if bad.what is not None:
            text = (f"{where} does not fit {self.model.__name__}: field {bad.path!r} "
                    f"{bad.what}.")
        else:
            text = misfit_message(where, self.model.__name__, bad.path, bad.value, bad.col)
        return DocumentValidationError(
            text + " Hint: fix the stored value (load_polars(on_invalid='null') reads "
            "the other documents, with such values as null)."
        )


_new = object.__new__
_setattr = object.__setattr__
_IMMUTABLE = (type(None), bool, int, float, str, bytes, tuple, frozenset)


def _private_defaults(model: type[BaseModel]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """A model's private attributes' defaults: the immutable ones shared, and a factory
    for each other one (what ``model_construct`` gives every object afresh)."""
    shared: dict[str, Any] = {}
    factories: list[tuple[str, Any]] = []
    for name, attr in model.__private_attributes__.items():
        if attr.default_factory is not None:
            factories.append((name, attr.default_factory))
        elif isinstance(attr.default, _IMMUTABLE):
            shared[name] = attr.default
        else:
            factories.append((name, lambda a=attr: a.get_default(call_default_factory=True)))
    return shared, factories
_CASE = {"str_lower": str.lower, "str_upper": str.upper}


def _field_plan(model: type[BaseModel], col: Column) -> tuple[str, str, type | None, Any]:
    """``(name, key, exact type, convert)`` of one field; ``convert`` is None when the
    field needs Pydantic (constraints, validators, free-form values)."""
    info = model.model_fields[col.name]
    if not _plain_metadata(info.metadata) or not _plain_annotation(info.annotation):
        return col.name, col.key, None, None
    convert = _converter(col, col.name)
    if convert is None:
        return col.name, col.key, None, None
    exact = _exact_type(col)
    default: Any = _required
    if not info.is_required():
        def default() -> Any:
            return info.get_default(call_default_factory=True)

    counter = col.role is not None and col.role.value == "incr_counter"

    def field(value: Any) -> Any:
        if value is ABSENT:
            if default is _required:
                raise _Misfit(col.name, value, col, "is missing (the field is required)")
            value = default()
            if counter:  # validate_default: the default 0 is a Counter as well
                return convert(value)
            return value
        return convert(value)

    return col.name, col.key, exact, field


def _required() -> Any:
    raise AssertionError("unreachable")


def _exact_type(col: Column) -> type | None:
    """The Python type a fitting value already has when nothing is to be converted."""
    if col.role is not None and col.role.value in ("str_lower", "str_upper", "incr_counter"):
        return None
    return {
        Kind.STR: str, Kind.INT: int, Kind.FLOAT: float, Kind.BOOL: bool,
        Kind.DATETIME: _dt.datetime, Kind.UUID: uuid.UUID, Kind.OBJECTID: ObjectId,
    }.get(col.kind) if col.values is None else None


def _converter(col: Column, path: str) -> Callable[[Any], Any] | None:
    """A function: stored value -> the value the object holds (``_Misfit`` when it does
    not fit); None when this column needs Pydantic."""
    from .fields import Counter

    kind = col.kind
    nullable = col.optional

    def absent(value: Any) -> Any:
        if nullable:
            return None
        raise _Misfit(path, value, col, "is null (the field cannot be None)")

    if col.free_form:
        return None
    if kind is Kind.LIST:
        assert col.item is not None
        item = _converter(col.item, path + "[]")
        container = _container(col.annotation)
        if item is None or container is None:
            return None

        def convert_list(value: Any) -> Any:
            if value is None or is_nan(value):
                return absent(value)
            if type(value) is not list:
                raise _Misfit(path, value, col)
            out = []
            for i, element in enumerate(value):
                try:
                    out.append(item(element))
                except _Misfit as bad:
                    bad.path = f"{path}[{i}]" + bad.path[len(path) + 2:]
                    raise
            return out if container is list else container(out)

        return convert_list
    if kind is Kind.STRUCT:
        nested = _model_class(col.annotation)
        if nested is None or not _plain_model(nested):
            return None
        plans = [_nested_plan(nested, child, f"{path}.{child.name}") for child in col.children]
        if any(p is None for p in plans):
            return None
        names = tuple(child.name for child in col.children)
        private = _private_defaults(nested) if nested.__private_attributes__ else None

        def convert_struct(value: Any) -> Any:
            if value is None or is_nan(value):
                return absent(value)
            if not isinstance(value, Mapping):
                raise _Misfit(path, value, col)
            values: dict[str, Any] = {}
            present = set(names)
            for name, key, convert, default in plans:  # type: ignore[misc]
                got = value.get(key, ABSENT)
                if got is ABSENT:
                    present.discard(name)
                    values[name] = default()
                else:
                    values[name] = convert(got)
            obj = _new(nested)
            _setattr(obj, "__dict__", values)
            _setattr(obj, "__pydantic_fields_set__", present)
            _setattr(obj, "__pydantic_extra__", None)
            if private is None:
                _setattr(obj, "__pydantic_private__", None)
            else:
                own = dict(private[0])
                for name, factory in private[1]:
                    own[name] = factory()
                _setattr(obj, "__pydantic_private__", own)
            return obj

        return convert_struct
    case = _CASE.get(col.role.value) if col.role is not None else None
    counter = col.role is not None and col.role.value == "incr_counter"
    members = None
    if col.kind is Kind.ENUM and col.enum_type is not None:
        members = col.enum_type._value2member_map_
    base = base_kind(col)
    stored_type = {Kind.STR: str, Kind.INT: int, Kind.FLOAT: float}.get(base)

    def convert(value: Any) -> Any:
        if members is not None and type(value) is stored_type:  # an enum's usual case
            member = members.get(value)
            if member is not None:
                return member
        if value is None or (is_nan(value) and base is not Kind.FLOAT):
            return absent(value)
        if not fits(value, col, frame=False):
            raise _Misfit(path, value, col)
        if type(value) is DatetimeMS:
            raise _Misfit(path, value, col, f"holds {describe_value(value)}, a date "
                          "outside years 1-9999, which a Python object cannot hold")
        if base is Kind.INT and type(value) is not int:
            value = int(value)
        elif base is Kind.FLOAT and type(value) is not float:
            value = float(value)
        elif base is Kind.DATE:
            value = value.astimezone(_dt.UTC).date()
        elif base is Kind.DECIMAL and isinstance(value, Decimal128):
            value = value.to_decimal()
        elif base is Kind.UUID and type(value) is Binary:
            value = uuid.UUID(bytes=bytes(value))
        if case is not None:
            value = case(value)
        elif counter:
            value = Counter(value)
        if members is not None:
            return members[value]
        return value

    return convert


def _nested_plan(model: type[BaseModel], col: Column, path: str) -> tuple[Any, ...] | None:
    info = model.model_fields[col.name]
    if not _plain_metadata(info.metadata) or not _plain_annotation(info.annotation):
        return None
    convert = _converter(col, path)
    if convert is None:
        return None
    if info.is_required():
        def default() -> Any:
            raise _Misfit(path, ABSENT, col, "is missing (the field is required)")
    else:
        def default() -> Any:
            return info.get_default(call_default_factory=True)
    return col.name, col.key, convert, default


def _container(annotation: Any) -> Any:
    """list / set / frozenset / tuple: what a list field holds (None: unknown)."""
    import types
    import typing
    from collections import abc

    ann = annotation
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(members) != 1:
                return None
            ann = members[0]
        else:
            break
    return {list: list, set: set, frozenset: frozenset, tuple: tuple, abc.Sequence: list,
            abc.MutableSequence: list, abc.Set: frozenset, abc.MutableSet: set}.get(origin)


def _model_class(annotation: Any) -> type[BaseModel] | None:
    from .columns import _nested_models

    found = _nested_models(annotation)
    return found[0] if len(found) == 1 else None


_SAFE_CONFIG = {
    "validate_assignment", "validate_by_name", "validate_by_alias", "populate_by_name",
    "arbitrary_types_allowed", "title", "protected_namespaces", "json_schema_extra",
    "frozen", "defer_build", "from_attributes", "ser_json_timedelta", "ser_json_bytes",
    "use_attribute_docstrings", "extra", "model_title_generator", "field_title_generator",
    "json_encoders", "alias_generator",
}


def _plain_model(model: type[BaseModel]) -> bool:
    """True when building ``model``'s objects directly gives what ``model_validate``
    gives: no validators or post-init of its own, no config that changes values."""
    decorators = model.__pydantic_decorators__
    if decorators.field_validators or decorators.validators or decorators.root_validators:
        return False
    if set(decorators.model_validators) - {"_normalise_datetimes"}:
        return False
    for cls in model.__mro__:
        post = cls.__dict__.get("model_post_init")
        if post is not None and cls is not BaseModel and (
            getattr(post, "__name__", "") != "init_private_attributes"
        ):
            return False
    config = model.model_config
    if set(config) - _SAFE_CONFIG or config.get("extra") not in (None, "ignore", "forbid"):
        return False
    return not (config.get("extra") == "forbid" and not _is_persistable(model))


def _is_persistable(model: type) -> bool:
    from .model import Persistable

    return issubclass(model, Persistable)


def _plain_metadata(metadata: list[Any]) -> bool:
    """A field's ``Annotated`` metadata is only our markers (or nothing)."""
    from .fields import Marker, _as_counter, _lower, _upper

    for item in metadata:
        if isinstance(item, Marker) or type(item).__name__ == "PlainSerializer":
            continue
        if getattr(item, "func", None) in (_lower, _upper, _as_counter):
            continue
        return False
    return True


def _plain_annotation(annotation: Any) -> bool:
    """No constraint or validator hides inside the annotation (``list[conint(...)]``)."""
    import typing

    from .fields import _ObjectIdAnnotation

    if typing.get_origin(annotation) is typing.Annotated and not all(
        m is _ObjectIdAnnotation or _plain_metadata([m]) for m in annotation.__metadata__
    ):
        return False
    return all(_plain_annotation(a) for a in typing.get_args(annotation)
               if not isinstance(a, (str, int, float, bool, enum.Enum)) and a is not Ellipsis)


def _absent_nans(value: Any, col: Column) -> Any:
    """``value`` with NaN doubles outside float fields as None (for ``model_validate``)."""
    if is_nan(value):
        return value if col.kind is Kind.FLOAT else None
    if col.kind is Kind.LIST and type(value) is list and col.item is not None:
        items = [_absent_nans(v, col.item) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if col.kind is Kind.STRUCT and isinstance(value, dict) and col.children:
        out = value
        for child in col.children:
            got = value.get(child.key, ABSENT)
            cleaned = _absent_nans(got, child)
            if cleaned is not got:
                out = out if out is not value else dict(value)
                out[child.key] = cleaned
        return out
    return value


# ------------------------------------------------------------------ equality
_EXACT = frozenset({str, int, _dt.datetime, bson.ObjectId, bytes, type(None), bson.Binary})


def same(stored: Any, new: Any) -> bool:
    """MongoDB's equality of a stored value and a new one, decided client side.

    Numbers compare by value (``5 == 5.0``, ``Decimal128("5") == 5``) but never with
    booleans; a missing field (:data:`ABSENT`) equals null; NaN equals NaN; lists
    compare element-wise; sub-documents by content (their key order is not compared:
    rewriting the same content in another order is no change).

    >>> same([1, {"a": 2.0}], [1.0, {"a": 2}]), same("1", 1), same([float("nan")], [float("nan")])
    (True, False, True)
    """
    kind = type(new)
    if kind in _EXACT and type(stored) is kind:
        return bool(stored == new)
    if stored is ABSENT:
        stored = None
    if new is ABSENT:
        new = None
    if isinstance(stored, Decimal128):
        stored = stored.to_decimal()
    if isinstance(new, Decimal128):
        new = new.to_decimal()
    if isinstance(stored, bool) or isinstance(new, bool):
        return type(stored) is type(new) and stored == new
    if _is_nan(stored) or _is_nan(new):
        return _is_nan(stored) and _is_nan(new)
    if isinstance(new, (list, tuple)):
        return isinstance(stored, (list, tuple)) and len(stored) == len(new) and all(
            same(a, b) for a, b in zip(stored, new, strict=True)
        )
    if isinstance(new, Mapping):
        return isinstance(stored, Mapping) and stored.keys() == new.keys() and all(
            same(stored[k], new[k]) for k in new
        )
    if isinstance(stored, str) != isinstance(new, str):
        return False
    try:
        return bool(stored == new)
    except TypeError:
        return False


def _is_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, Decimal) and value.is_nan()


# ------------------------------------------------------------------ free-form values
def _relaxed() -> Any:
    import bson.json_util
    from bson.binary import UuidRepresentation

    return bson.json_util.JSONOptions(
        json_mode=bson.json_util.JSONMode.RELAXED,
        datetime_representation=bson.json_util.DatetimeRepresentation.ISO8601,
        uuid_representation=UuidRepresentation.STANDARD,
        tz_aware=True, tzinfo=_dt.UTC,
    )


def json_text(value: Any) -> str | None:
    """A free-form value as a frame holds it: relaxed Extended JSON text (None for null or
    missing).

    >>> json_text({"source": "web", "n": 2, "at": _dt.datetime(2024, 5, 1, tzinfo=_dt.UTC)})
    '{"source": "web", "n": 2, "at": {"$date": "2024-05-01T00:00:00Z"}}'
    """
    if value is None or value is ABSENT:
        return None
    import bson.json_util

    return bson.json_util.dumps(value, json_options=_relaxed())


def from_json_text(text: str) -> Any:
    """The value of a free-form field's frame text (:func:`json_text`'s inverse), as a
    frame write stores it.

    >>> from_json_text('{"n": 2, "at": {"$date": "2024-05-01T00:00:00Z"}}')
    {'n': 2, 'at': datetime.datetime(2024, 5, 1, 0, 0, tzinfo=datetime.timezone.utc)}
    """
    import bson.json_util

    return bson.json_util.loads(text, json_options=_relaxed())
