"""Objects <-> BSON documents: one set of rules for every write path and the loaders.

* :func:`to_bson` / :func:`document_of`: the document an object is stored as (enum ->
  value, date -> midnight UTC, datetimes -> UTC milliseconds, storage keys, ``_v``);
* :func:`encode`: that document as BSON bytes, refusing client side, before anything is
  sent, what MongoDB cannot store (an int beyond 64 bits, a lone surrogate, a NUL in a
  key, a document over 16 MiB), naming the field;
* :func:`hydrate` / :func:`document_projection`: a stored document back into an object;
* :func:`same`: MongoDB's equality of two stored values, decided client side, which is
  how ``persist()`` and ``upsert_dataframe`` both tell a change from no change;
* :data:`ABSENT`: a field the document does not have (MongoDB's "missing", not null).

>>> import datetime as dt
>>> to_bson({"born": dt.date(2024, 5, 1)})
{'born': datetime.datetime(2024, 5, 1, 0, 0, tzinfo=datetime.timezone.utc)}
>>> same(5, 5.0), same(True, 1), same(ABSENT, None), same(float("nan"), float("nan"))
(True, False, True, True)
"""

from __future__ import annotations

import datetime as _dt
import enum
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import bson
from bson import Decimal128
from bson.errors import InvalidDocument

from .connection import CODEC_OPTIONS
from .errors import DocumentValidationError
from .fields import date_to_datetime, normalize_datetime
from .model import STORED

if TYPE_CHECKING:
    from .model import Persistable

__all__ = [
    "ABSENT",
    "MAX_DOCUMENT_BYTES",
    "document_of",
    "document_projection",
    "encode",
    "hydrate",
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
    """The ``find`` projection of the model's top-level stored keys (whole documents to
    hydrate objects; frames project leaf paths: ``schema.model_projection``)."""
    from .columns import model_columns

    return {col.key: 1 for col in model_columns(model)}


def hydrate(model: type[Persistable], doc: dict[str, Any]) -> Persistable:
    """Validate a stored document (fetched with :func:`document_projection`) into an object.

    The fetched document itself becomes the object's snapshot: it is already in stored
    form, so hydrating costs one ``model_validate`` and nothing more.
    """
    try:
        obj = model.model_validate(doc, context=STORED)
    except ValueError as exc:
        raise DocumentValidationError(
            f"document _id={doc.get('_id')!r} in {model.persist_config().collection_name} "
            f"does not fit {model.__name__}: {exc}"
        ) from exc
    obj.__pydantic_private__["_loom_saved"] = doc  # type: ignore[index]
    return obj


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
