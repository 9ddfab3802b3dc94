"""The write paths: persist, persist_many, delete, from_id; ledger and time-series inserts.

A stored object keeps a snapshot of its document (``_loom_saved``). ``persist()``
diffs against it and sends ONE command:

* new object: ``insert_one`` of the whole document;
* stored object: ``find_one_and_update`` with ``$set`` (changed fields), ``$unset``
  (fields changed to None), ``$inc`` (counter deltas), ``$setOnInsert`` (``created_at``
  and unchanged fields, so a document deleted meanwhile comes back whole), returning the
  counters' new values;
* nothing changed: no command at all;
* ledger models: always ``insert_one`` of a new document.
"""

from __future__ import annotations

import datetime as _dt
import enum
import math
import threading
from collections.abc import Mapping
from typing import Any

from bson import ObjectId
from pymongo import InsertOne, ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, CollectionInvalid, PyMongoError
from pymongo.errors import DuplicateKeyError as _PyMongoDuplicateKey

from .connection import CODEC_OPTIONS, get_client
from .errors import (
    DocumentValidationError,
    DuplicateKeyError,
    ModelDeclarationError,
    NotPersistedError,
    WriteFailedError,
)
from .fields import Role, normalize_datetime, to_object_id, utc_now
from .model import STORED, LedgerModel, Persistable, TimeSeriesLedgerModel

__all__ = [
    "collection_for",
    "delete",
    "document_of",
    "document_projection",
    "from_id",
    "hydrate",
    "persist",
    "persist_many",
    "to_bson",
]

_prepared: set[tuple[int, str, str]] = set()
_prepared_lock = threading.Lock()


# ------------------------------------------------------------------ collections
def collection_for(model: type[Persistable]) -> Collection[Any]:
    """The model's collection, created (time series) and indexed once per process."""
    config = model.persist_config()
    client = get_client()
    coll = client[config.database].get_collection(
        config.collection_name, codec_options=CODEC_OPTIONS
    )
    key = (id(client), config.database, config.collection_name)
    if key not in _prepared:
        with _prepared_lock:
            if key not in _prepared:
                _prepare(model, coll)
                _prepared.add(key)
    return coll


def _prepare(model: type[Persistable], coll: Collection[Any]) -> None:
    config = model.persist_config()
    ts = config.timeseries
    if issubclass(model, TimeSeriesLedgerModel) and ts is None:
        raise ModelDeclarationError(
            f"{model.__name__} is a TimeSeriesLedgerModel without @declare_timeseries. "
            "Hint: add @declare_timeseries(metakey=...) above @declare_persist_db."
        )
    if ts is not None:
        found = coll.database.list_collections(filter={"name": coll.name})
        existing = next(iter(found), None)
        if existing is None:
            try:
                coll.database.create_collection(coll.name, **ts.create_options())
            except CollectionInvalid:  # created concurrently: check it below
                existing = next(iter(coll.database.list_collections(filter={"name": coll.name})))
        if existing is not None:
            options = existing.get("options", {})
            if "timeseries" not in options:
                raise ModelDeclarationError(
                    f"{model.__name__} is a time-series model, but "
                    f"{coll.database.name}.{coll.name} already exists as a plain collection. "
                    "Hint: drop or rename that collection, or store the model elsewhere."
                )
            if options["timeseries"].get("timeField") != ts.timekey:
                raise ModelDeclarationError(
                    f"{coll.database.name}.{coll.name} is a time-series collection with "
                    f"timeField {options['timeseries'].get('timeField')!r}, but "
                    f"{model.__name__} declares timekey {ts.timekey!r}."
                )
    if config.indexes:
        coll.create_indexes(list(config.indexes))


# ------------------------------------------------------------------ encode/decode
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
        return _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.UTC)
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


# ------------------------------------------------------------------ the verbs
def persist(obj: Persistable) -> None:
    """Insert ``obj`` when new (and for ledgers, always); else update what changed."""
    model = type(obj)
    coll = collection_for(model)
    if isinstance(obj, LedgerModel):
        _insert(obj, coll, ledger=True)
    elif obj._loom_saved is None:
        _insert(obj, coll, ledger=False)
    else:
        _update(obj, coll)


def _prepare_insert(obj: Persistable, *, ledger: bool) -> dict[str, Any]:
    model = type(obj)
    now = utc_now()
    explicit = obj.model_fields_set
    auto = obj._loom_auto_times
    values = obj.__dict__
    for info in model.fields_with_role(Role.TIME_INSERTED):
        if values[info.name] is None or (ledger and info.name in auto):
            values[info.name] = now
            auto.add(info.name)
    for info in model.fields_with_role(Role.TIME_UPDATED):
        # An explicitly given time is honoured (a time series records history).
        if values[info.name] is None or info.name in auto or info.name not in explicit:
            values[info.name] = now
            auto.add(info.name)
    if ledger:
        values["id"] = ObjectId()
    ts = model.persist_config().timeseries
    if ts is not None and values.get(ts.metakey) is None:
        raise DocumentValidationError(
            f"{model.__name__} is a time series keyed by {ts.metakey!r}, which is None. "
            f"Hint: give every {model.__name__} a {ts.metakey}."
        )
    if values.get("id") is None:
        values["id"] = ObjectId()
    return document_of(obj)


def _insert(obj: Persistable, coll: Collection[Any], *, ledger: bool) -> None:
    before = obj.id
    doc = _prepare_insert(obj, ledger=ledger)
    try:
        coll.insert_one(doc)
    except PyMongoError as exc:
        obj.__dict__["id"] = before  # a failed insert leaves the object as it was
        if isinstance(exc, _PyMongoDuplicateKey):
            raise DuplicateKeyError(_duplicate_message(type(obj), doc, exc)) from exc
        raise WriteFailedError(f"inserting a {type(obj).__name__} failed: {exc}") from exc
    obj._loom_saved = doc


def _changes(obj: Persistable) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(update, counters)`` for a stored object, or None when nothing changed."""
    model = type(obj)
    saved = obj._loom_saved or {}
    doc = document_of(obj)
    counters = {f.key for f in model.fields_with_role(Role.INCR_COUNTER)}
    unsettable = {f.key for f in model.__loom_fields__.values() if f.default_is_none}
    times = {f.key for f in model.fields_with_role(Role.TIME_UPDATED)}
    inserted = {f.key for f in model.fields_with_role(Role.TIME_INSERTED)}
    set_: dict[str, Any] = {}
    unset: dict[str, str] = {}
    inc: dict[str, int] = {}
    for key, value in doc.items():
        if key == "_id" or key in times or key in inserted:
            continue
        old = saved.get(key, _MISSING)
        if key in counters:
            delta = int(value) - int(old if old is not _MISSING and old is not None else 0)
            if delta:
                inc[key] = delta
        elif not _same(old, value):
            if value is None and key in unsettable:
                unset[key] = ""  # absent loads back as the None default
            else:
                set_[key] = value
    if not (set_ or unset or inc):
        return None
    now = utc_now()
    for key in times:
        set_[key] = now
    keep = {
        k: v
        for k, v in doc.items()
        if k not in set_ and k not in unset and k not in inc and k != "_id" and v is not None
    }
    for key in inserted:
        keep[key] = doc.get(key) or now
    update: dict[str, Any] = {"$setOnInsert": keep}
    if set_:
        update["$set"] = set_
    if unset:
        update["$unset"] = unset
    if inc:
        update["$inc"] = inc
    return update, {k: v for k, v in doc.items() if k in counters}


def _update(obj: Persistable, coll: Collection[Any]) -> None:
    changes = _changes(obj)
    if changes is None:
        return
    update, _ = changes
    model = type(obj)
    projection = {f.key: 1 for f in model.fields_with_role(Role.INCR_COUNTER)}
    projection.update({f.key: 1 for f in model.fields_with_role(Role.TIME_INSERTED)})
    try:
        after = coll.find_one_and_update(
            {"_id": obj.id},
            update,
            upsert=True,
            return_document=ReturnDocument.AFTER,
            projection=projection or {"_id": 1},
        )
    except _PyMongoDuplicateKey as exc:
        raise DuplicateKeyError(_duplicate_message(model, {"_id": obj.id}, exc)) from exc
    except PyMongoError as exc:
        raise WriteFailedError(f"updating {model.__name__} {obj.id}: {exc}") from exc
    _apply_written(obj, update, after or {})


def _apply_written(obj: Persistable, update: dict[str, Any], after: Mapping[str, Any]) -> None:
    """Bring the object and its snapshot to what the server now holds."""
    model = type(obj)
    values = obj.__dict__
    for key, value in update.get("$set", {}).items():
        info = model.field_info(key)
        if info.role is Role.TIME_UPDATED:
            values[info.name] = value
    for info in model.fields_with_role(Role.INCR_COUNTER):
        if info.key in after:
            values[info.name] = type(values[info.name])(after[info.key])
        elif info.key in update.get("$inc", {}):  # bulk path: no read-back
            pass
    for info in model.fields_with_role(Role.TIME_INSERTED):
        if after.get(info.key) is not None:
            values[info.name] = after[info.key]
    obj._loom_saved = document_of(obj)


def persist_many(model: type[Persistable], objects: list[Persistable]) -> list[ObjectId]:
    """One unordered bulk write for all objects; returns their ids in order.

    New objects (and all ledger objects) are inserted, stored ones updated with only
    what changed (counters are not read back here: they hold the local value).
    Raises :class:`~loom_frames.errors.DuplicateKeyError` /
    :class:`~loom_frames.errors.WriteFailedError` listing every failed object; the
    others are written.
    """
    for obj in objects:
        if type(obj) is not model and not isinstance(obj, model):
            raise TypeError(f"{model.__name__}.persist_many got a {type(obj).__name__}")
    if not objects:
        return []
    coll = collection_for(model)
    ops: list[Any] = []
    # (op index, position in objects, object, update or None for an insert, document)
    pending: list[tuple[int, int, Persistable, dict[str, Any] | None, dict[str, Any]]] = []
    ledger = issubclass(model, LedgerModel)
    ids_before = [obj.id for obj in objects]
    for position, obj in enumerate(objects):
        if ledger or obj._loom_saved is None:
            doc = _prepare_insert(obj, ledger=ledger)
            pending.append((len(ops), position, obj, None, doc))
            ops.append(InsertOne(doc))
        else:
            changes = _changes(obj)
            if changes is not None:
                pending.append((len(ops), position, obj, changes[0], {}))
                ops.append(UpdateOne({"_id": obj.id}, changes[0], upsert=True))
    if not ops:
        return [obj.id for obj in objects]  # type: ignore[misc]
    failed: dict[int, dict[str, Any]] = {}
    try:
        coll.bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        failed = {e["index"]: e for e in exc.details.get("writeErrors", [])}
        if not failed:
            raise WriteFailedError(f"bulk write of {model.__name__} failed: {exc}") from exc
    except PyMongoError as exc:
        raise WriteFailedError(f"bulk write of {model.__name__} failed: {exc}") from exc
    for index, position, obj, update, doc in pending:
        if index in failed:  # a failed insert leaves the object as it was
            obj.__dict__["id"] = ids_before[position]
            continue
        if update is None:
            obj._loom_saved = doc
        else:
            _apply_written(obj, update, {})
    if failed:
        lines = [
            f"  objects[{position}] _id={failed[i].get('op', {}).get('_id', obj.id)}: "
            f"{failed[i].get('errmsg')}"
            for i, position, obj, _, _ in pending
            if i in failed
        ]
        codes = {e.get("code") for e in failed.values()}
        error = DuplicateKeyError if codes == {11000} else WriteFailedError
        raise error(
            f"{len(failed)} of {len(ops)} writes of {model.__name__} failed (the others "
            "were written):\n" + "\n".join(lines)
        )
    return [obj.id for obj in objects]  # type: ignore[misc]


def delete(obj: Persistable) -> bool:
    """Delete the object's document; the object becomes new again (no id)."""
    if obj.id is None:
        raise NotPersistedError(f"this {type(obj).__name__} was never persisted (it has no id)")
    result = collection_for(type(obj)).delete_one({"_id": obj.id})
    obj._loom_saved = None
    return result.deleted_count == 1


def from_id(model: type[Persistable], id: ObjectId | str) -> Persistable | None:
    """Load by id; None when no document has it.

    A string that is not a 24-hex ObjectId is an id no document can have, so it gives
    None too (the guide's ``User.from_id("64f8a...")`` runs); any other type of id is a
    ``DocumentValidationError``.
    """
    if isinstance(id, str) and not ObjectId.is_valid(id):
        return None
    try:
        oid = to_object_id(id)
    except ValueError as exc:
        raise DocumentValidationError(
            f"{model.__name__}.from_id expects an ObjectId or a 24-character hex string, "
            f"got {id!r}"
        ) from exc
    doc = collection_for(model).find_one({"_id": oid}, projection=document_projection(model))
    return None if doc is None else hydrate(model, doc)


def document_projection(model: type[Persistable]) -> dict[str, int]:
    """The ``find`` projection of the model's top-level stored keys (whole documents to
    hydrate objects; frames project leaf paths: ``schema.model_projection``)."""
    return {info.key: 1 for info in model.__loom_fields__.values()}


# ------------------------------------------------------------------ small helpers
class _Missing:
    __slots__ = ()


_MISSING: Any = _Missing()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _duplicate_message(model: type, doc: Mapping[str, Any], exc: PyMongoError) -> str:
    details = getattr(exc, "details", None) or {}
    key = details.get("keyValue") or {"_id": doc.get("_id")}
    return (
        f"a {model.__name__} with {key} already exists. Hint: load it with "
        f"{model.__name__}.from_id(...) and persist() changes, or give a new id."
    )

