"""``upsert_dataframe``: one document per key, idempotent, safe beside other writers.

``upsert_dataframe(df, on=[keys])``:

1. **a unique index must cover the key** (one on the key's fields or on some of them;
   ``_id`` always is one): declare it on the model (``@declare_persist_db(...,
   unique=[("a", "b")])``, created on first use) or create it yourself. Without one,
   two writers upserting the same new key at once would both insert it; with one, the
   second insert is refused by MongoDB and that row is looked up again and updated.
   The refusal names the index to declare;
2. the frame's keys must be non-null and distinct;
3. per batch, ``find`` of the batch's keys, served by the unique index (see
   ``_Upsert._queries``), returns the stored ids and the values of the frame's columns;
4. new rows are inserted whole (``created_at`` set, defaults applied); a row whose key
   another writer inserted meanwhile (duplicate key) is looked up once more and updated;
5. a stored row is compared field by field with MongoDB's equality (``codec.same``):
   unchanged, nothing is sent (``updated_time`` not bumped); changed,
   ``UpdateOne({_id, keys}, {$set: {changed, updated_time}, $setOnInsert: {rest of the
   row}}, upsert=True)``: if another writer deleted the document meanwhile it is stored
   again whole (the row counts as inserted), if it re-keyed it the row is looked up
   again. Between the read and the write, the last writer wins.

Every row ends in exactly one of inserted / updated / unchanged / failed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import bson
import numpy as np
import pyarrow as pa
from pymongo import UpdateOne
from pymongo.collection import Collection

from ..codec import ABSENT, same
from ..columns import Column, column_of, with_role
from ..connection import driver_errors
from ..dask_io import is_dask_frame, write_dask
from ..errors import FrameValidationError, LoomError, ModelDeclarationError
from ..expr.bind import Kind
from ..fields import Role, utc_now
from ..model import LedgerModel, Persistable
from ..progress import Progress
from ..storage import collection_for, serves_with_index, unique_index_for
from .frames import (
    DEFAULT_BATCH_SIZE,
    INSERTED,
    UNCHANGED,
    UPDATED,
    Extra,
    OnError,
    Run,
    WriteResult,
    batches,
    check_options,
)
from .outcome import run_bulk
from .prepare import PreparedFrame, frame_to_arrow, prepare

__all__ = ["ID_CONFLICT", "LOOKUP_KEYS", "upsert_dataframe"]

LOOKUP_KEYS = 500
"""Keys per ``find`` of the key lookup (an ``$in`` or ``$or`` list of this length)."""

UPSERT_CHUNK = 4096
"""Rows an upsert decodes and compares at a time (Python dicts weigh far more than BSON)."""

ID_CONFLICT = "IdConflict"
"""Failed-row code: the row's id differs from the id of the document its key matches."""

# Both the frame's documents and the stored ones are decoded with pymongo's plain
# options (naive UTC datetimes, Decimal128, UUIDs as Binary): 3x faster than the model
# codec, and both sides alike.
_PLAIN: bson.CodecOptions[dict[str, Any]] = bson.CodecOptions()


def upsert_dataframe(
    model: type[Persistable],
    df: Any,
    on: Sequence[str] | str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress = "auto",
    extra: Extra = "raise",
    on_error: OnError = "raise",
) -> WriteResult:
    """Insert new rows and ``$set`` changed fields of stored ones, one document per key.

    Idempotent: the second run of the same frame writes nothing and reports every row
    unchanged. ``created_at`` is set only on insert, ``updated_time`` only when a value
    changed; fields without a column in the frame are left as stored. Needs a unique
    index covering ``on`` (see the module docstring).

    >>> User.upsert_dataframe(df, on=["email"])  # doctest: +SKIP
    WriteResult(inserted=1, updated=1, unchanged=0, failed=0)
    """
    if isinstance(model, type) and issubclass(model, LedgerModel):
        raise ModelDeclarationError(
            f"{model.__name__} is a ledger (append-only): upserting would rewrite history. "
            f"Hint: use {model.__name__}.insert_dataframe(df)."
        )
    check_options(batch_size, on_error, progress)
    keys = key_columns(model, on)
    if is_dask_frame(df):
        return write_dask(model, df, "upsert", on=on, batch_size=batch_size, extra=extra,
                          on_error=on_error)
    table, backend, index = frame_to_arrow(df, model)
    frame = prepare(model, table, extra=extra, now=utc_now())
    check_frame_keys(frame, keys)
    coll = collection_for(model)
    unique = _require_unique_index(model, coll, keys)
    run = Run(model, frame, progress, "upsert")
    upsert = _Upsert(model, frame, keys, unique, run)
    with run.reporter:
        for rows, docs in batches(frame, batch_size, run):
            upsert.batch(coll, rows, docs)
            run.advance(len(docs))
    return run.finish(upsert.ids, backend, index, on_error, "upsert_dataframe")


# ------------------------------------------------------------------ checks
def key_columns(model: type[Persistable], on: Sequence[str] | str) -> tuple[Column, ...]:
    """The key's columns: plain scalar fields of the model, each once."""
    names = [on] if isinstance(on, str) else list(on)
    if not names:
        raise ValueError("on must name at least one key column, e.g. on=['id']")
    out: list[Column] = []
    for name in names:
        try:
            col = column_of(model, name)
        except LoomError as exc:
            raise FrameValidationError(f"upsert key: {exc}") from exc
        scalar = col.kind in (Kind.STR, Kind.INT, Kind.FLOAT, Kind.BOOL, Kind.DATETIME,
                              Kind.DATE, Kind.OBJECTID, Kind.ENUM)
        if not scalar or col.role in (Role.TIME_UPDATED, Role.TIME_INSERTED):
            raise FrameValidationError(
                f"{model.__name__}.{col.name} cannot be an upsert key: keys are plain "
                "scalar fields (str, int, float, bool, datetime, date, ObjectId, enum), "
                "not lists, sub-documents or the insert/update times."
            )
        if col not in out:
            out.append(col)
    return tuple(out)


def _require_unique_index(model: type[Persistable], coll: Collection[Any],
                          keys: Sequence[Column]) -> tuple[str, ...]:
    """The fields of the unique index covering the key (or a clear refusal)."""
    index = unique_index_for(coll, [c.key for c in keys])
    if index is not None:
        return index
    names = [c.name for c in keys]
    spec = repr(names[0]) if len(names) == 1 else repr(tuple(names))
    raise ModelDeclarationError(
        f"upsert_dataframe(on={names}) needs a unique index on {', '.join(names)} (or on "
        f"some of them) in {coll.full_name}: without one, two writers upserting the same "
        "new key at once would both insert it, and each lookup would scan the collection. "
        f"Hint: declare it on the model, @declare_persist_db(..., unique=[{spec}]) (it is "
        f"created on first use), or create it: {model.__name__}.collection().create_index("
        f"{[(c.key, 1) for c in keys]}, unique=True). Or upsert on=['id']."
    )


def check_frame_keys(frame: PreparedFrame, keys: Sequence[Column]) -> None:
    """Every key column present and non-null (ids may be null: new rows); keys distinct."""
    arrays: dict[str, pa.Array] = {}
    for col in keys:
        if col.name not in frame.arrays:
            raise FrameValidationError(
                f"upsert key {col.name!r} has no column in the frame. Hint: add it "
                f"(for on=['id'], df.with_columns(id=...) from an earlier result.ids)."
            )
        if col.name == "id":  # only rows that give an id (the others are new)
            ids = pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(12), frame.num_rows, [None, pa.py_buffer(frame.ids)]
            )
            arrays["id"] = ids.filter(pa.array(frame.id_given))
            continue
        arr = frame.arrays[col.name]
        if arr.null_count:
            row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise FrameValidationError(
                f"upsert key {col.name!r} is null in row {row}: every row needs its key. "
                "Hint: drop or fill those rows, or insert them with insert_dataframe."
            )
        arrays[col.name] = arr
    rows = np.flatnonzero(frame.id_given) if "id" in arrays else np.arange(frame.num_rows)
    keyed = pa.table({**{f"k{i}": a for i, a in enumerate(arrays.values())},
                      "row": pa.array(rows)})
    names = [f"k{i}" for i in range(len(arrays))]
    counts = keyed.group_by(names).aggregate([("row", "count")])
    if counts.num_rows == keyed.num_rows:
        return
    groups = keyed.group_by(names).aggregate([("row", "list")])
    dup = next(r for r in groups.column("row_list").to_pylist() if len(r) > 1)
    raise FrameValidationError(
        f"rows {', '.join(map(str, dup[:5]))} of the frame have the same upsert key "
        f"({', '.join(c.name for c in keys)}): one document per key means one row per key. "
        "Hint: drop_duplicates / unique() on the key first."
    )


# ------------------------------------------------------------------ the upsert
class _Upsert:
    """The upsert of one frame, batch by batch (see the module docstring)."""

    def __init__(self, model: type[Persistable], frame: PreparedFrame,
                 keys: Sequence[Column], index: tuple[str, ...], run: Run) -> None:
        self.model = model
        self.frame = frame
        self.run = run
        self.keys = tuple(c.key for c in keys)
        self.index = index  # the unique index's fields, in its order
        self.by_or: bool | None = None  # look compound keys up with $or (decided once)
        self.by_id = self.keys == ("_id",)
        times = {c.key for c in with_role(model, Role.TIME_INSERTED)} | {
            c.key for c in with_role(model, Role.TIME_UPDATED)
        }
        self.compare = tuple(k for k in frame.supplied if k not in times and k not in self.keys)
        self.time_updated = tuple(c.key for c in with_role(model, Role.TIME_UPDATED))
        self.ids = frame.ids.copy()  # stored rows get the stored document's id

    # -------------------------------------------------------------- a batch
    def batch(self, coll: Collection[Any], rows: np.ndarray, raw: list[bytes]) -> None:
        """Look the batch's keys up, insert the new rows, update the changed ones; rows
        another writer raced for are looked up once more."""
        retry: list[int] = []
        new: list[int] = []
        for lo in range(0, len(raw), UPSERT_CHUNK):
            hi = min(len(raw), lo + UPSERT_CHUNK)
            found_new, raced = self._chunk(coll, rows[lo:hi], raw[lo:hi], final=False)
            new.extend(lo + i for i in found_new)
            retry.extend(lo + i for i in raced)
        if new:
            outcome = self.run.insert(coll, rows[new], [raw[i] for i in new],
                                      skip_duplicates=True)
            retry.extend(new[i] for i, f in outcome.failures.items() if f.duplicate_key)
        if retry:  # another writer inserted, deleted or re-keyed these keys meanwhile
            retry.sort()
            for i in retry:
                self.ids[rows[i]] = self.frame.ids[rows[i]]
            found_new, _ = self._chunk(coll, rows[retry], [raw[i] for i in retry], final=True)
            if found_new:
                self.run.insert(coll, rows[retry][found_new], [raw[retry[i]] for i in found_new])

    def _chunk(self, coll: Collection[Any], rows: np.ndarray, raw: list[bytes], *,
               final: bool) -> tuple[list[int], list[int]]:
        """Classify rows, settle unchanged and failed ones, update the changed ones.

        Returns the positions of new rows (to insert) and, unless ``final``, of rows
        whose update met another writer's change (to look up again).
        """
        run = self.run
        docs = [bson.decode(d, codec_options=_PLAIN) for d in raw]
        given = (self.frame.id_given[rows] if self.by_id  # rows without an id are new
                 else np.ones(len(rows), dtype=bool))
        try:
            found = self._existing(coll, [docs[i] for i in np.flatnonzero(given).tolist()])
        except LoomError as exc:  # a read: nothing of these rows was written
            run.note_connection(isinstance(exc, ConnectionError))
            run.fail(rows, type(exc.__cause__ or exc).__name__, str(exc), "not_attempted")
            return [], []
        new: list[int] = []
        updates: list[tuple[int, UpdateOne]] = []
        unchanged: list[int] = []
        now = utc_now()
        for i, doc in enumerate(docs):
            row = int(rows[i])
            stored = found.get(self._key(doc)) if given[i] else None
            if stored is None:
                new.append(i)
            elif self.frame.id_given[row] and not self.by_id and stored["_id"] != doc["_id"]:
                run.fail(rows[i:i + 1], ID_CONFLICT,
                         f"the key {self._describe(doc)} belongs to document "
                         f"{stored['_id']}, but the row's id is {doc['_id']}", "rejected")
            else:
                self.ids[row] = np.frombuffer(stored["_id"].binary, np.uint8)
                changed = {k: doc.get(k) for k in self.compare
                           if not same(stored.get(k, ABSENT), doc.get(k))}
                if changed:
                    updates.append((i, self._update(doc, stored["_id"], changed, now)))
                else:
                    unchanged.append(i)
        run.settle(rows[unchanged], UNCHANGED)
        return new, self._write_updates(coll, rows, updates, final=final)

    def _write_updates(self, coll: Collection[Any], rows: np.ndarray,
                       updates: list[tuple[int, UpdateOne]], *, final: bool) -> list[int]:
        """Send the updates; return the positions to look up again (not ``final``):
        updates whose document was re-keyed meanwhile (a duplicate ``_id`` on upsert)."""
        if not updates:
            return []
        positions = [i for i, _ in updates]
        outcome = run_bulk(coll, [op for _, op in updates],
                           f"updating {len(updates)} rows of {self.model.__name__}")
        raced = frozenset(j for j, f in outcome.failures.items() if f.duplicate_key
                          ) if not final else frozenset()
        ids = [bytes(self.ids[rows[i]]).hex() for i in positions]
        self.run.apply(rows[positions], outcome, UPDATED, upserted=INSERTED, skip=raced,
                       ids=ids)
        return [positions[j] for j in sorted(raced)]

    # -------------------------------------------------------------- the key lookup
    def _existing(self, coll: Collection[Any], docs: list[dict[str, Any]]
                  ) -> dict[tuple[Any, ...], dict[str, Any]]:
        """``{key: stored document}`` for the documents' keys (compared fields only; the
        unique index leaves at most one per key).

        The queries match the keys themselves, so the unique index serves them and only
        matching documents are read (:meth:`_queries`).
        """
        found: dict[tuple[Any, ...], dict[str, Any]] = {}
        coll = coll.with_options(codec_options=_PLAIN)
        projection = dict.fromkeys((*self.keys, *self.compare), 1) | {"_id": 1}
        wanted = list(dict.fromkeys(self._key(doc) for doc in docs))
        with driver_errors(f"looking up {len(wanted)} upsert keys of {self.model.__name__}"):
            for query in self._queries(coll, wanted):
                for stored in coll.find(query, projection):
                    try:
                        found[self._key(stored)] = stored
                    except TypeError:  # an array / sub-document value: not a key of ours
                        continue
        return found

    def _queries(self, coll: Collection[Any], keys: list[tuple[Any, ...]]
                 ) -> Iterator[dict[str, Any]]:
        """The lookup queries of ``keys``, LOOKUP_KEYS keys a query at most.

        A one-field index: ``{field: {$in: [...]}}``. A compound one: ``{$or: [{a: ..,
        b: ..}, ...]}`` of whole keys when the server plans that through the index (real
        MongoDB does, branch by branch), else (a server that would scan the collection
        for an ``$or``, as SecantusDB does) one ``{a: .., b: {$in: [...]}}`` per distinct
        value of the index's leading fields: equality on a prefix and ``$in`` on the
        last field is what every server serves from a compound index.
        """
        position = {k: i for i, k in enumerate(self.keys)}
        if len(self.index) > 1 and self.by_or is None:
            self.by_or = serves_with_index(coll, self._or(keys[:2]))
        if len(self.index) > 1 and self.by_or:
            for lo in range(0, len(keys), LOOKUP_KEYS):
                yield self._or(keys[lo:lo + LOOKUP_KEYS])
            return
        *lead, last = self.index
        groups: dict[tuple[Any, ...], list[Any]] = {}
        for key in keys:
            groups.setdefault(tuple(key[position[f]] for f in lead), []).append(
                key[position[last]])
        for prefix, values in groups.items():
            values = list(dict.fromkeys(values))
            for lo in range(0, len(values), LOOKUP_KEYS):
                yield dict(zip(lead, prefix, strict=True)) | {
                    last: {"$in": values[lo:lo + LOOKUP_KEYS]}}

    def _or(self, keys: list[tuple[Any, ...]]) -> dict[str, Any]:
        return {"$or": [dict(zip(self.keys, k, strict=True)) for k in keys]}

    def _key(self, doc: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(_hashable(doc.get(k)) for k in self.keys)

    def _describe(self, doc: dict[str, Any]) -> str:
        return "{" + ", ".join(f"{k}: {doc.get(k)!r}" for k in self.keys) + "}"

    def _update(self, doc: dict[str, Any], stored_id: Any, changed: dict[str, Any],
                now: Any) -> UpdateOne:
        query: dict[str, Any] = {"_id": stored_id}
        for k in self.keys:
            if k != "_id":
                query[k] = doc[k]
        set_ = changed | dict.fromkeys(self.time_updated, now)
        update: dict[str, Any] = {"$set": set_}
        rest = {k: v for k, v in doc.items() if k not in set_ and k not in query}
        if rest:  # stored whole again if another writer deleted the document meanwhile
            update["$setOnInsert"] = rest
        return UpdateOne(query, update, upsert=True)


def _hashable(value: Any) -> Any:
    if type(value) is list or type(value) is dict:
        raise TypeError("unhashable key value")
    return value
