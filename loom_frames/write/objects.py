"""Writing objects: ``persist()``, ``persist_many()``, ``delete()``.

A stored object keeps a snapshot of its document (``_loom_saved``). ``persist()``
diffs against it and sends ONE command:

* new object: an insert of the whole document (its ObjectId generated here, client side);
* stored object: ``findAndModify`` with ``$set`` (changed fields), ``$unset`` (fields
  changed to None), ``$inc`` (counter deltas), ``$setOnInsert`` (``created_at`` and
  unchanged fields, so a document deleted meanwhile comes back whole), returning the
  counters' new values;
* nothing changed: no command at all;
* ledger models: always an insert of a new document.

**Failures say their outcome** (README "When a write fails"):

* rejected (:class:`~loom_frames.errors.WriteRejectedError`,
  :class:`~loom_frames.errors.DuplicateKeyError`, or
  :class:`~loom_frames.errors.DocumentValidationError` before anything is sent): nothing
  was applied and the object is exactly as it was;
* unknown (:class:`~loom_frames.errors.WriteOutcomeUnknownError`): the reply was lost.
  An insert keeps the id and times it was sent with (``_loom_pending``), and the next
  ``persist()`` completes it at most once: the same document again, a duplicate ``_id``
  holding that same document counting as done. A ``$set`` update is resent as is
  (idempotent). An update with counter increments cannot be completed safely (a resent
  ``$inc`` adds twice): the object then refuses to persist until it is reloaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo import InsertOne, ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from ..codec import ABSENT, document_of, encode, same
from ..columns import model_columns, with_role
from ..connection import driver_error, driver_errors
from ..errors import (
    DocumentValidationError,
    DuplicateKeyError,
    NotPersistedError,
    WriteOutcomeUnknownError,
    WriteRejectedError,
)
from ..fields import Role, utc_now
from ..model import LedgerModel, Persistable
from ..storage import collection_for
from .outcome import BulkOutcome, OpFailure, run_bulk

__all__ = ["delete", "persist", "persist_many"]


# ------------------------------------------------------------------ one object's write
@dataclass(slots=True, eq=False)
class _Write:
    """One object's write, planned before anything is sent and applied after the reply.

    The object is changed only by :meth:`done` (the write happened) or :meth:`unknown`
    (it may have); :meth:`rejected` puts back what planning set (ids, times).
    """

    obj: Persistable
    insert: dict[str, Any] | None = None  # the document to insert
    raw: bytes = b""  # ... encoded
    update: dict[str, Any] | None = None  # the update of a stored object
    completes: bool = False  # this insert completes one whose outcome was unknown
    followup: bool = False  # after completing, the object has changes of its own to send
    restore: dict[str, Any] = field(default_factory=dict)  # attribute -> value before
    auto_before: set[str] = field(default_factory=set)

    @property
    def increments(self) -> bool:
        return self.update is not None and "$inc" in self.update

    def op(self) -> Any:
        if self.insert is not None:
            return InsertOne(RawBSONDocument(self.raw))
        assert self.update is not None
        return UpdateOne({"_id": self.obj.id}, self.update, upsert=True)

    def done(self, after: Mapping[str, Any] | None = None) -> None:
        obj = self.obj
        obj._loom_pending = None
        if self.insert is not None:
            obj._loom_saved = self.insert
        else:
            assert self.update is not None
            _apply_update(obj, self.update, after or {})

    def unknown(self) -> None:
        if self.insert is not None:
            self.obj._loom_pending = self.insert  # the next persist() completes it
        elif self.increments:
            self.obj._loom_unsure = (
                f"the last persist() of this {type(self.obj).__name__} (id {self.obj.id}) "
                "sent counter increments and lost the reply: they may or may not have "
                "been applied, and sending them again could add them twice"
            )

    def rejected(self) -> None:
        if self.insert is not None and not self.completes:  # put back id and times
            self.obj.__dict__.update(self.restore)
            self.obj._loom_auto_times = self.auto_before


def _plan(obj: Persistable, *, ledger: bool) -> _Write | None:
    """The write ``persist()`` sends for ``obj`` now, or None when there is nothing to do."""
    model = type(obj)
    if obj._loom_unsure is not None:
        raise WriteRejectedError(
            f"refused: {obj._loom_unsure}. Hint: load it again with "
            f"{model.__name__}.from_id({str(obj.id)!r}), check the counters, and apply "
            "what is missing to the fresh object."
        )
    pending = obj._loom_pending
    if pending is not None:
        write = _Write(obj, insert=pending, raw=encode(model, pending), completes=True)
        write.followup = not same(pending, document_of(obj))
        return write
    if ledger or obj._loom_saved is None:
        return _plan_insert(obj, ledger=ledger)
    update = _changes(obj)
    return None if update is None else _Write(obj, update=update)


def _plan_insert(obj: Persistable, *, ledger: bool) -> _Write:
    """Fill id and times as the insert stores them; remember what they were."""
    model = type(obj)
    values = obj.__dict__
    write = _Write(obj, auto_before=set(obj._loom_auto_times))
    auto = set(obj._loom_auto_times)
    now = utc_now()
    explicit = obj.model_fields_set
    changes: dict[str, Any] = {}
    for col in with_role(model, Role.TIME_INSERTED):
        if values[col.name] is None or (ledger and col.name in auto):
            changes[col.name] = now
            auto.add(col.name)
    for col in with_role(model, Role.TIME_UPDATED):
        # An explicitly given time is honoured (a time series records history).
        if values[col.name] is None or col.name in auto or col.name not in explicit:
            changes[col.name] = now
            auto.add(col.name)
    if ledger or values.get("id") is None:
        changes["id"] = ObjectId()
    ts = model.persist_config().timeseries
    if ts is not None and values.get(ts.metakey) is None:
        raise DocumentValidationError(
            f"{model.__name__} is a time series keyed by {ts.metakey!r}, which is None. "
            f"Hint: give every {model.__name__} a {ts.metakey}."
        )
    write.restore = {name: values[name] for name in changes}
    values.update(changes)
    obj._loom_auto_times = auto
    try:
        write.insert = document_of(obj)
        write.raw = encode(model, write.insert)
    except Exception:
        write.rejected()
        raise
    return write


def _changes(obj: Persistable) -> dict[str, Any] | None:
    """The update of a stored object, or None when nothing changed."""
    model = type(obj)
    saved = obj._loom_saved or {}
    doc = document_of(obj)
    encode(model, doc)  # what MongoDB could not store fails here, before anything is sent
    columns = model_columns(model)
    counters = {c.key for c in columns if c.role is Role.INCR_COUNTER}
    unsettable = {c.key for c in columns if c.default_is_none}
    times = {c.key for c in columns if c.role is Role.TIME_UPDATED}
    inserted = {c.key for c in columns if c.role is Role.TIME_INSERTED}
    set_: dict[str, Any] = {}
    unset: dict[str, str] = {}
    inc: dict[str, int] = {}
    for key, value in doc.items():
        if key == "_id" or key in times or key in inserted:
            continue
        old = saved.get(key, ABSENT)
        if key in counters:
            delta = int(value) - int(old if old is not ABSENT and old is not None else 0)
            if delta:
                inc[key] = delta
        elif value is None and key in unsettable:
            if old is not ABSENT and old is not None:
                unset[key] = ""  # absent loads back as the None default
        elif old is ABSENT or not same(old, value):  # absent would load as the default
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
    return update


def _apply_update(obj: Persistable, update: dict[str, Any], after: Mapping[str, Any]) -> None:
    """Bring the object and its snapshot to what the server now holds."""
    model = type(obj)
    values = obj.__dict__
    for col in model_columns(model):
        if col.role is Role.TIME_UPDATED and col.key in update.get("$set", {}):
            values[col.name] = update["$set"][col.key]
        elif col.role is Role.INCR_COUNTER and col.key in after:  # read back (persist())
            values[col.name] = type(values[col.name])(after[col.key])
        elif col.role is Role.TIME_INSERTED and after.get(col.key) is not None:
            values[col.name] = after[col.key]
    obj._loom_saved = document_of(obj)


# ------------------------------------------------------------------ persist()
def persist(obj: Persistable) -> None:
    """Insert ``obj`` when new (and for ledgers, always); else update what changed."""
    model = type(obj)
    ledger = isinstance(obj, LedgerModel)
    write = _plan(obj, ledger=ledger)
    if write is None:
        return
    coll = collection_for(model)
    if write.insert is not None:
        _insert_one(coll, write)
        if write.followup:  # the completed insert is stored; the object changed since
            persist(obj)
    else:
        _update_one(coll, write)


def _insert_one(coll: Collection[Any], write: _Write) -> None:
    what = f"inserting a {type(write.obj).__name__}"
    try:
        coll.insert_one(RawBSONDocument(write.raw))
    except PyMongoError as exc:
        error = driver_error(exc, what, write=True)
        if isinstance(error, DuplicateKeyError) and write.completes:
            assert write.insert is not None
            (state,) = _stored_states(coll, [write.insert])
            if state == "same":
                write.done()
                return
            if state == "different":
                error = _clash(write)
            else:  # nothing under its id: the earlier attempt is not stored; forget it
                write.obj._loom_pending = None
        if isinstance(error, WriteOutcomeUnknownError):
            write.unknown()
        else:
            write.rejected()
        raise error from exc
    write.done()


def _update_one(coll: Collection[Any], write: _Write) -> None:
    obj = write.obj
    model = type(obj)
    assert write.update is not None
    projection = {c.key: 1 for c in model_columns(model)
                  if c.role in (Role.INCR_COUNTER, Role.TIME_INSERTED)}
    try:
        after = coll.find_one_and_update(
            {"_id": obj.id},
            write.update,
            upsert=True,
            return_document=ReturnDocument.AFTER,
            projection=projection or {"_id": 1},
        )
    except PyMongoError as exc:
        error = driver_error(exc, f"updating {model.__name__} {obj.id}", write=True)
        if isinstance(error, WriteOutcomeUnknownError):
            write.unknown()
        raise error from exc
    write.done(after)


def _stored_states(coll: Collection[Any], docs: Sequence[dict[str, Any]]) -> list[str]:
    """For each document sent before: ``"same"`` (exactly it is stored under its
    ``_id``: the earlier attempt, applied), ``"absent"`` (nothing is: it was not) or
    ``"different"`` (another document holds the id)."""
    ids = [doc["_id"] for doc in docs]
    with driver_errors(f"checking {len(ids)} earlier insert(s)"):
        stored = {d["_id"]: d for d in coll.find({"_id": {"$in": ids}})}
    return [
        "absent" if doc["_id"] not in stored
        else "same" if same(stored[doc["_id"]], doc) else "different"
        for doc in docs
    ]


def _clash(write: _Write) -> DuplicateKeyError:
    model = type(write.obj)
    return DuplicateKeyError(
        f"completing the earlier persist() of this {model.__name__} found another "
        f"document under its id {write.obj.id}: the earlier attempt was not applied, or "
        f"the document was changed since. Hint: load it with {model.__name__}.from_id("
        f"{str(write.obj.id)!r}) and compare."
    )


# ------------------------------------------------------------------ persist_many()
def persist_many(model: type[Persistable], objects: list[Persistable]) -> list[ObjectId]:
    """One unordered bulk write for all objects; returns their ids in order.

    New objects (and all ledger objects) are inserted, stored ones updated with only
    what changed (counters are not read back here: they hold the local value). Every
    object is written that can be; then one error lists each failed object:
    :class:`WriteOutcomeUnknownError` when any outcome is unknown (the others are
    settled), else :class:`DuplicateKeyError` (all duplicate keys) or
    :class:`WriteRejectedError`.
    """
    for obj in objects:
        if not isinstance(obj, model):
            raise TypeError(f"{model.__name__}.persist_many got a {type(obj).__name__}")
    unsure = [f"objects[{i}]" for i, obj in enumerate(objects) if obj._loom_unsure]
    if unsure:
        raise WriteRejectedError(
            f"refused (nothing sent): {', '.join(unsure[:5])} lost the reply of an update "
            "with counter increments, so they may hold increments already applied. Hint: "
            f"load them again with {model.__name__}.from_id(...) first."
        )
    ledger = issubclass(model, LedgerModel)
    writes: list[tuple[int, _Write]] = []
    try:
        for position, obj in enumerate(objects):
            write = _plan(obj, ledger=ledger)
            if write is not None:
                writes.append((position, write))
    except Exception:
        for _, write in writes:
            write.rejected()
        raise
    if writes:
        coll = collection_for(model)
        outcome = run_bulk(coll, [w.op() for _, w in writes],
                           f"persist_many of {len(writes)} {model.__name__}")
        _settle_completions(coll, writes, outcome)
        failed = _settle(writes, outcome)
        followups = [w.obj for i, (_, w) in enumerate(writes)
                     if w.followup and i not in outcome.failures]
        if followups:
            persist_many(model, followups)
        if failed:
            raise _many_error(model, len(writes), failed)
    return [obj.id for obj in objects]  # type: ignore[misc]


def _settle_completions(coll: Collection[Any], writes: list[tuple[int, _Write]],
                        outcome: BulkOutcome) -> None:
    """A completing insert rejected as a duplicate key (on ``_id`` or any unique index:
    MongoDB names one of them) while its ``_id`` holds the same document is the earlier
    attempt, applied: done, not failed."""
    clashes = [i for i, (_, w) in enumerate(writes)
               if w.completes and (f := outcome.failures.get(i)) is not None
               and f.duplicate_key]
    if not clashes:
        return
    docs = [writes[i][1].insert for i in clashes]
    for i, state in zip(clashes, _stored_states(coll, docs), strict=True):  # type: ignore[arg-type]
        if state == "same":
            del outcome.failures[i]
        elif state == "different":
            outcome.failures[i] = OpFailure(11000, str(_clash(writes[i][1])), "rejected",
                                            {"_id": 1})
        else:  # not stored: the earlier attempt is forgotten, the object is new again
            writes[i][1].obj._loom_pending = None


def _settle(writes: list[tuple[int, _Write]], outcome: BulkOutcome
            ) -> list[tuple[int, OpFailure]]:
    failed: list[tuple[int, OpFailure]] = []
    for i, (position, write) in enumerate(writes):
        failure = outcome.failures.get(i)
        if failure is None:
            write.done()
        elif failure.outcome == "unknown":
            write.unknown()
            failed.append((position, failure))
        else:
            write.rejected()
            failed.append((position, failure))
    return failed


def _many_error(model: type[Persistable], sent: int, failed: list[tuple[int, OpFailure]]
                ) -> Exception:
    lines = "\n".join(
        f"  objects[{position}]: [{f.code}] {f.message} ({f.outcome})"
        for position, f in failed[:10]
    )
    more = f"\n  ... and {len(failed) - 10} more" if len(failed) > 10 else ""
    head = f"{len(failed)} of {sent} writes of {model.__name__} failed (the others were written)"
    if any(f.outcome == "unknown" for _, f in failed):
        return WriteOutcomeUnknownError(
            f"{head}; for some the reply was lost, so they may have been applied:\n{lines}"
            f"{more}\nHint: call persist_many with the same objects again: inserts and "
            "field changes complete at most once; objects with counter increments must be "
            "reloaded first."
        )
    error = DuplicateKeyError if all(f.duplicate_key for _, f in failed) else WriteRejectedError
    return error(f"{head}:\n{lines}{more}\nHint: the failed objects are as they were; fix "
                 "what the messages name and persist them again.")


# ------------------------------------------------------------------ delete()
def delete(obj: Persistable) -> bool:
    """Delete the object's document; the object becomes new again. Idempotent: after an
    unknown outcome, ``delete()`` again is safe (it returns False if it was applied)."""
    if obj.id is None:
        raise NotPersistedError(f"this {type(obj).__name__} was never persisted (it has no id)")
    with driver_errors(f"deleting {type(obj).__name__} {obj.id}", write=True):
        result = collection_for(type(obj)).delete_one({"_id": obj.id})
    obj._loom_saved = None
    obj._loom_pending = None
    obj._loom_unsure = None
    return result.deleted_count == 1
