"""Writing frames back: ``insert_dataframe`` and the idempotent ``upsert_dataframe``.

Both take a pandas, Polars or PyArrow frame, hold it to the model exactly as a single
``persist()`` holds an object (see :mod:`loom_frames._write_prepare` for the column, type,
marker and null rules: a frame that does not fit raises
:class:`~loom_frames.errors.FrameValidationError` before anything is written), then
encode BSON in bounded batches (at most ``batch_size`` rows and 16 MiB of documents;
never the whole frame at once) and write each batch unordered, so a failed row never
stops the others. The :class:`WriteResult` counts what was written and lists every row
that was not (frame position, id, error code, message); by default a
:class:`~loom_frames.errors.FrameWriteError` carrying that result is raised at the end
when any row failed (``on_error="report"`` returns it instead).

**Upsert.** ``upsert_dataframe(df, on=[keys])`` writes each row as one document per key:

1. the frame's keys must be non-null and distinct (else ``FrameValidationError``);
2. per batch, ``find`` of the batch's keys (``{key: {$in: [...]}}``, LOOKUP_KEYS keys a
   command) returns the stored documents' ids and the values of the frame's columns. It
   tells new rows from existing ones and counts the documents per key: a key matching
   several documents is a failed row (code ``"AmbiguousKey"``), never a multi-update.
   A unique index on the key (or on part of it; ``_id`` always is one) makes that
   impossible by construction;
3. new rows are inserted whole (``created_at``/``TimeInserted`` set, defaults applied);
4. existing rows are compared with what is stored, field by field, with MongoDB's
   equality (``5 == 5.0``, null == missing, NaN == NaN, never ``True == 1``): an
   unchanged row sends nothing at all, so its ``TimeUpdated`` is not bumped; a changed
   row gets ``UpdateOne({_id, keys}, {$set: {changed fields..., updated_time: now}})``.
   Running the same frame twice reports every row ``unchanged`` the second time and
   writes nothing. Between the read and the write the last writer wins.

>>> import loom_frames as lm  # doctest: +SKIP
>>> result = User.insert_dataframe(df)  # doctest: +SKIP
>>> result.inserted, result.ids[:1]  # doctest: +SKIP
(2, ['6650f0c2a1b2c3d4e5f60718'])
>>> User.upsert_dataframe(df, on=["email"])  # doctest: +SKIP
WriteResult(inserted=0, updated=0, unchanged=2, failed=0)
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import bson
import numpy as np
import pyarrow as pa
from bson import Decimal128
from bson.errors import InvalidDocument
from bson.raw_bson import RawBSONDocument
from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, ConnectionFailure, OperationFailure, PyMongoError

from ._write_prepare import Backend, PreparedFrame, frame_to_arrow, prepare
from .errors import FrameValidationError, FrameWriteError, ModelDeclarationError, did_you_mean
from .expr.bind import Kind
from .fields import Role, utc_now
from .model import LedgerModel, Persistable
from .persist import collection_for
from .progress import Progress, Reporter, check_progress
from .schema import Column, model_columns

__all__ = [
    "AMBIGUOUS_KEY",
    "DEFAULT_BATCH_SIZE",
    "DOCUMENT_TOO_LARGE",
    "ID_CONFLICT",
    "MAX_BATCH_BYTES",
    "NOT_ATTEMPTED",
    "FailedRow",
    "WriteResult",
    "insert_dataframe",
    "upsert_dataframe",
]

DEFAULT_BATCH_SIZE = 10_000
"""Rows per write command (and per key lookup of an upsert)."""

MAX_BATCH_ROWS = 100_000
"""MongoDB's maxWriteBatchSize: one batch is one command."""

MAX_BATCH_BYTES = 16 * 1024 * 1024
"""Bytes of encoded documents per write command (the only documents held at once)."""

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
"""MongoDB's maxBsonObjectSize: a larger row fails alone, client side."""

LOOKUP_KEYS = 256
"""Keys per ``find`` of an upsert's key lookup (small ``$in`` lists stay cheap everywhere)."""

UPSERT_CHUNK = 4096
"""Rows an upsert compares (and sends one update command for) at a time."""

AMBIGUOUS_KEY = "AmbiguousKey"
"""Failed-row code: the upsert key matches more than one stored document."""

ID_CONFLICT = "IdConflict"
"""Failed-row code: the row's id differs from the id of the document its key matches."""

DOCUMENT_TOO_LARGE = "DocumentTooLarge"
"""Failed-row code: the row's document exceeds 16 MiB."""

NOT_ATTEMPTED = "NotAttempted"
"""Failed-row code: not sent, because the connection was lost on the batches before."""

_GIVE_UP_AFTER = 2  # consecutive batches lost to connection failures

OnError = Literal["raise", "report"]
Extra = Literal["raise", "ignore"]


# ------------------------------------------------------------------ results
@dataclass(frozen=True, slots=True)
class FailedRow:
    """A frame row that was not written.

    ``row`` is its 0-based position in the frame; ``id`` the 24-hex document id it was
    given; ``code`` MongoDB's error code (an int, e.g. 11000 for a duplicate key), the
    driver's exception name for a lost connection (``"AutoReconnect"``, ...), or one of
    this module's codes (:data:`AMBIGUOUS_KEY`, :data:`ID_CONFLICT`,
    :data:`DOCUMENT_TOO_LARGE`, :data:`NOT_ATTEMPTED`).
    """

    row: int
    id: str | None
    code: int | str
    message: str


@dataclass(frozen=True, slots=True, eq=False)
class WriteResult:
    """What a frame write did.

    ``ids`` holds every row's document id as 24-hex strings in frame order (a
    ``polars.Series`` for a Polars frame, a ``pandas.Series`` on the frame's index for
    pandas, a ``pyarrow.StringArray`` otherwise), so ``df.with_columns(id=result.ids)``
    lines up; the ids of rows listed in ``failed`` are not in the database.

    >>> WriteResult(2, 0, 0, pa.array(["a", "b"]), ())
    WriteResult(inserted=2, updated=0, unchanged=0, failed=0)
    """

    inserted: int
    updated: int
    unchanged: int
    ids: Any
    failed: tuple[FailedRow, ...]

    @property
    def ok(self) -> bool:
        """True when every row was written (or found unchanged)."""
        return not self.failed

    @property
    def written(self) -> int:
        """Documents inserted or updated."""
        return self.inserted + self.updated

    @property
    def failed_rows(self) -> list[int]:
        """Frame positions of the failed rows, in order."""
        return [f.row for f in self.failed]

    def __repr__(self) -> str:
        return (
            f"WriteResult(inserted={self.inserted}, updated={self.updated}, "
            f"unchanged={self.unchanged}, failed={len(self.failed)})"
        )


# ------------------------------------------------------------------ entry points
def insert_dataframe(
    model: type[Persistable],
    df: Any,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress = "auto",
    extra: Extra = "raise",
    on_error: OnError = "raise",
) -> WriteResult:
    """Insert every row of ``df`` as a new document of ``model``.

    Rows with an ``id`` keep it; the others get new ObjectIds. Unordered batches of at
    most ``batch_size`` rows and 16 MiB. ``progress``: a bar when the frame spans several
    batches and the session is interactive (``"auto"``), always (``True``), never
    (``False``), or a callable getting ``(rows_done, rows_total)`` after each batch (see
    :mod:`loom_frames.progress`).

    >>> User.insert_dataframe(pd.DataFrame({"name": ["Bob"], "email": ["Bob@X.org"], "age": [25]}))  # doctest: +SKIP
    WriteResult(inserted=1, updated=0, unchanged=0, failed=0)
    """
    _check_options(batch_size, on_error, progress)
    table, backend, index = frame_to_arrow(df)
    frame = prepare(model, table, extra=extra, now=utc_now())
    run = _Run(model, frame, Reporter(progress, f"{model.__name__}: insert", frame.num_rows,
                                      "rows"))
    coll = collection_for(model)
    with run.reporter:
        for rows, docs in _batches(frame, batch_size, run):
            run.insert(coll, docs, rows)
    return run.finish(frame.ids, backend, index, on_error, "insert_dataframe")


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
    """Insert new rows and ``$set`` changed fields of existing ones, matched by ``on``.

    Idempotent: the second run of the same frame writes nothing and reports every row
    unchanged. ``created_at`` is set only on insert, ``updated_time`` only when a value
    changed; fields without a column in the frame are left as stored.

    >>> User.upsert_dataframe(df, on=["email"])  # doctest: +SKIP
    WriteResult(inserted=1, updated=1, unchanged=0, failed=0)
    """
    if isinstance(model, type) and issubclass(model, LedgerModel):
        raise ModelDeclarationError(
            f"{model.__name__} is a ledger (append-only): upserting would rewrite history. "
            f"Hint: use {model.__name__}.insert_dataframe(df)."
        )
    _check_options(batch_size, on_error, progress)
    keys = _key_columns(model, on)
    table, backend, index = frame_to_arrow(df)
    frame = prepare(model, table, extra=extra, now=utc_now())
    _check_frame_keys(frame, keys)
    run = _Run(model, frame, Reporter(progress, f"{model.__name__}: upsert", frame.num_rows,
                                      "rows"))
    coll = collection_for(model)
    upsert = _Upsert(model, frame, keys, run)
    with run.reporter:
        for rows, docs in _batches(frame, batch_size, run):
            upsert.batch(coll, rows, docs)
    return run.finish(upsert.ids, backend, index, on_error, "upsert_dataframe")


def _check_options(batch_size: int, on_error: str, progress: Any) -> None:
    check_progress(progress)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not (
        1 <= batch_size <= MAX_BATCH_ROWS
    ):
        raise ValueError(
            f"batch_size must be an int from 1 to {MAX_BATCH_ROWS} (MongoDB's write batch "
            f"limit), got {batch_size!r}"
        )
    if on_error not in ("raise", "report"):
        raise ValueError(
            f"on_error must be 'raise' or 'report', got {on_error!r}"
            + did_you_mean(str(on_error), ["raise", "report"])
        )


# ------------------------------------------------------------------ batching
def _batches(
    frame: PreparedFrame, batch_size: int, run: _Run
) -> Iterator[tuple[np.ndarray, list[bytes]]]:
    """Encoded batches of at most ``batch_size`` rows and MAX_BATCH_BYTES bytes.

    Rows are encoded a chunk at a time; the chunk size adapts to the average document
    size seen so far, and a chunk that still exceeds the byte budget is split.
    """
    n = frame.num_rows
    start = 0
    rows = min(batch_size, 1024)
    while start < n:
        stop = min(n, start + rows)
        if run.gave_up:
            run.fail_rows(np.arange(start, stop), NOT_ATTEMPTED, run.give_up_message)
            run.advance(stop - start)
            start = stop
            continue
        docs, lengths = frame.documents(start, stop)
        big = lengths > MAX_DOCUMENT_BYTES
        if big.any():
            for i in np.flatnonzero(big).tolist():
                run.fail_rows(
                    np.array([start + i]), DOCUMENT_TOO_LARGE,
                    f"the document is {lengths[i]} bytes; MongoDB stores at most "
                    f"{MAX_DOCUMENT_BYTES}",
                )
            run.advance(int(big.sum()))
        for lo, hi in _split_by_bytes(lengths, big):
            keep = ~big[lo:hi]
            if keep.all():
                yield np.arange(start + lo, start + hi), docs[lo:hi]
            elif keep.any():
                positions = np.flatnonzero(keep) + lo
                yield start + positions, [docs[i] for i in positions.tolist()]
        average = max(1, int(lengths.mean())) if len(lengths) else 1
        rows = max(1, min(batch_size, MAX_BATCH_BYTES // average))
        start = stop


def _split_by_bytes(lengths: np.ndarray, big: np.ndarray) -> Iterator[tuple[int, int]]:
    sizes = np.where(big, 0, lengths)
    lo = 0
    total = 0
    for i, size in enumerate(sizes.tolist()):
        if total + size > MAX_BATCH_BYTES and i > lo:
            yield lo, i
            lo, total = i, 0
        total += size
    if lo < len(sizes):
        yield lo, len(sizes)


# ------------------------------------------------------------------ one run
class _Run:
    """Counts, failed rows, progress and connection-loss bookkeeping of one write."""

    def __init__(self, model: type[Persistable], frame: PreparedFrame, reporter: Reporter):
        self.model = model
        self.frame = frame
        self.reporter = reporter
        self.inserted = 0
        self.updated = 0
        self.unchanged = 0
        self.failed: list[FailedRow] = []
        self.lost_in_a_row = 0
        self.gave_up = False
        self.give_up_message = ""

    def hex_id(self, row: int) -> str:
        return bytes(self.frame.ids[row]).hex()

    def fail_rows(self, rows: np.ndarray, code: int | str, message: str,
                  ids: Sequence[str] | None = None) -> None:
        for i, row in enumerate(rows.tolist()):
            doc_id = ids[i] if ids is not None else self.hex_id(row)
            self.failed.append(FailedRow(row, doc_id, code, message))

    def command_failed(self, rows: np.ndarray, exc: Exception, what: str) -> None:
        """A whole command failed: every row it carried is reported."""
        if isinstance(exc, ConnectionFailure):
            self.lost_in_a_row += 1
            message = (
                f"the connection to MongoDB was lost during the {what} ({exc}); these rows "
                "were most likely not written, but an interrupted write's outcome is "
                "unknown. Hint: re-run upsert_dataframe on the frame with the ids of "
                "result.ids and on=['id'] to complete without duplicates."
            )
            self.fail_rows(rows, type(exc).__name__, message)
            if self.lost_in_a_row >= _GIVE_UP_AFTER:
                self.gave_up = True
                self.give_up_message = (
                    f"not sent: the connection to MongoDB was lost on {self.lost_in_a_row} "
                    "batches in a row, so the rest of the frame was not attempted"
                )
            return
        self.lost_in_a_row = 0
        if isinstance(exc, OperationFailure):
            code: int | str = exc.code if exc.code is not None else type(exc).__name__
            reason = (exc.details or {}).get("errmsg", str(exc))
        else:
            code, reason = type(exc).__name__, str(exc)
        self.fail_rows(rows, code, f"the {what} command failed: {reason}")

    def insert(self, coll: Collection[Any], docs: Sequence[bytes], rows: np.ndarray,
               *, count: bool = True) -> None:
        """One unordered insert command of encoded documents (frame rows ``rows``)."""
        raws = [RawBSONDocument(doc) for doc in docs]
        try:
            coll.insert_many(raws, ordered=False)
            self.inserted += len(raws)
            self.lost_in_a_row = 0
        except BulkWriteError as exc:
            self.lost_in_a_row = 0
            details = exc.details or {}
            self.inserted += int(details.get("nInserted", 0))
            for error in details.get("writeErrors", []):
                row = int(rows[error["index"]])
                self.failed.append(
                    FailedRow(row, self.hex_id(row), error.get("code", "WriteError"),
                              str(error.get("errmsg", "write error")))
                )
        except (PyMongoError, InvalidDocument) as exc:
            self.command_failed(rows, exc, "insert")
        if count:
            self.advance(len(docs))

    def advance(self, rows: int) -> None:
        self.reporter.update(rows)

    def finish(self, ids: np.ndarray, backend: Backend, index: Any, on_error: OnError,
               verb: str) -> WriteResult:
        failed = tuple(sorted(self.failed, key=lambda f: f.row))
        result = WriteResult(self.inserted, self.updated, self.unchanged,
                             _native_ids(ids, backend, index), failed)
        if failed and on_error == "raise":
            raise FrameWriteError(_failure_message(self.model, verb, result), result)
        return result


def _native_ids(ids: np.ndarray, backend: Backend, index: Any) -> Any:
    from ._arrow_bson import object_id_hex

    array = object_id_hex(ids)
    if backend == "polars":
        import polars as pl

        series = pl.from_arrow(array)
        assert isinstance(series, pl.Series)
        return series.alias("id")
    if backend == "pandas":
        import pandas as pd

        return pd.Series(array.to_pylist(), index=index, name="id", dtype="string")
    return array


def _failure_message(model: type[Persistable], verb: str, result: WriteResult) -> str:
    shown = "\n".join(
        f"  row {f.row} (id {f.id}): [{f.code}] {f.message}" for f in result.failed[:5]
    )
    more = f"\n  ... and {len(result.failed) - 5} more" if len(result.failed) > 5 else ""
    codes = {f.code for f in result.failed}
    hints = ["the error's .result lists every failed row"]
    if codes & _DUPLICATE_KEY:
        hints.append(
            "a duplicate key clashes with a stored document on a unique index: change or "
            "drop those rows, or upsert_dataframe(..., on=[that key]) to update the stored "
            "documents instead"
        )
    if codes - _DUPLICATE_KEY:
        hints.append(
            "for the other rows, re-running upsert_dataframe(..., on=['id'] or your key) "
            "with the same ids completes the collection without duplicates"
            if codes & _DUPLICATE_KEY
            else "re-running upsert_dataframe(..., on=['id'] or your key) with the same ids "
            "completes the collection without duplicates"
        )
    hints.append("on_error='report' returns the result instead of raising")
    return (
        f"{verb}: {len(result.failed)} row(s) of {model.__name__} were not written "
        f"(inserted {result.inserted}, updated {result.updated}, unchanged "
        f"{result.unchanged}):\n{shown}{more}\nHint: " + "; ".join(hints) + "."
    )


_DUPLICATE_KEY = frozenset({11000, 11001})


# ------------------------------------------------------------------ upsert
def _key_columns(model: type[Persistable], on: Sequence[str] | str) -> tuple[Column, ...]:
    names = [on] if isinstance(on, str) else list(on)
    if not names:
        raise ValueError("on must name at least one key column, e.g. on=['id']")
    columns = model_columns(model)
    out: list[Column] = []
    for name in names:
        col = next((c for c in columns if c.name == name or c.key == name), None)
        if col is None:
            raise FrameValidationError(
                f"upsert key {name!r} is not a field of {model.__name__}."
                + did_you_mean(name, [c.name for c in columns])
            )
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


def _check_frame_keys(frame: PreparedFrame, keys: Sequence[Column]) -> None:
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


class _Upsert:
    """The upsert of one frame, batch by batch (see the module docstring)."""

    def __init__(self, model: type[Persistable], frame: PreparedFrame,
                 keys: Sequence[Column], run: _Run) -> None:
        self.model = model
        self.frame = frame
        self.run = run
        self.keys = tuple(c.key for c in keys)
        self.by_id = self.keys == ("_id",)
        times = {f.key for f in model.fields_with_role(Role.TIME_INSERTED)} | {
            f.key for f in model.fields_with_role(Role.TIME_UPDATED)
        }
        self.compare = tuple(k for k in frame.supplied if k not in times and k not in self.keys)
        self.time_updated = tuple(f.key for f in model.fields_with_role(Role.TIME_UPDATED))
        self.ids = frame.ids.copy()  # existing rows get the stored document's id

    def _key(self, doc: dict[str, Any]) -> tuple[Any, ...]:
        keys = self.keys
        if len(keys) == 1:
            return (_hashable(doc.get(keys[0])),)
        return tuple(_hashable(doc.get(k)) for k in keys)

    def _existing(self, coll: Collection[Any], docs: list[dict[str, Any]],
                  candidates: list[int]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
        """``{key: [stored document, ...]}`` for the batch's keys (compared fields only).

        One ``find`` per LOOKUP_KEYS keys, ``{first key: {$in: [...]}}`` (index
        friendly; further keys are matched here), so a key's documents are all counted.
        """
        found: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        coll = coll.with_options(codec_options=_PLAIN)  # both sides decoded alike
        first = self.keys[0]
        projection = dict.fromkeys((*self.keys, *self.compare), 1) | {"_id": 1}
        values = list(dict.fromkeys(docs[i][first] for i in candidates))
        for lo in range(0, len(values), LOOKUP_KEYS):
            query = {first: {"$in": values[lo : lo + LOOKUP_KEYS]}}
            for stored in coll.find(query, projection):
                try:
                    found.setdefault(self._key(stored), []).append(stored)
                except TypeError:  # an array / sub-document value: not a key of ours
                    continue
        return found

    def batch(self, coll: Collection[Any], rows: np.ndarray, raw: list[bytes]) -> None:
        """Look the batch's keys up, insert the new rows, update the changed ones.

        Decoded documents are held for UPSERT_CHUNK rows at a time (Python dicts weigh
        far more than BSON); the new rows of the whole batch are inserted in one command.
        """
        new: list[int] = []
        for lo in range(0, len(raw), UPSERT_CHUNK):
            hi = min(len(raw), lo + UPSERT_CHUNK)
            found_new = self._chunk(coll, rows[lo:hi], raw[lo:hi])
            new.extend(lo + i for i in found_new)
        if new:
            self.run.insert(coll, [raw[i] for i in new], rows[new], count=False)
        self.run.advance(len(raw))

    def _chunk(self, coll: Collection[Any], rows: np.ndarray, raw: list[bytes]) -> list[int]:
        """Classify rows; update the changed ones; return the positions of new rows."""
        run = self.run
        docs = [bson.decode(d, codec_options=_PLAIN) for d in raw]
        if self.by_id:  # rows without an id are new by definition
            given = self.frame.id_given[rows]
            candidates = np.flatnonzero(given).tolist()
        else:
            given = np.ones(len(rows), dtype=bool)
            candidates = list(range(len(docs)))
        try:
            found = self._existing(coll, docs, candidates)
        except PyMongoError as exc:
            run.command_failed(rows, exc, "key lookup (find)")
            return []
        new: list[int] = []
        updates: list[tuple[int, UpdateOne]] = []
        now = utc_now()
        for i, doc in enumerate(docs):
            row = int(rows[i])
            matches = found.get(self._key(doc), []) if given[i] else []
            if not matches:
                new.append(i)
                continue
            stored = matches[0]
            if len(matches) > 1:
                run.fail_rows(np.array([row]), AMBIGUOUS_KEY,
                              f"the key {self._describe(doc)} matches {len(matches)} documents "
                              f"in {coll.name}; an upsert updates one document per key. Hint: "
                              "remove the duplicates and create a unique index on the key.")
            elif self.frame.id_given[row] and not self.by_id and stored["_id"] != doc["_id"]:
                run.fail_rows(np.array([row]), ID_CONFLICT,
                              f"the key {self._describe(doc)} belongs to document "
                              f"{stored['_id']}, but the row's id is {doc['_id']}")
            else:
                self.ids[row] = np.frombuffer(stored["_id"].binary, np.uint8)
                changed = {k: doc.get(k) for k in self.compare
                           if not _same(stored.get(k, _ABSENT), doc.get(k))}
                if changed:
                    updates.append((row, self._update(doc, stored["_id"], changed, now)))
                else:
                    run.unchanged += 1
        self._write_updates(coll, updates)
        return new

    def _describe(self, doc: dict[str, Any]) -> str:
        return "{" + ", ".join(f"{k}: {doc.get(k)!r}" for k in self.keys) + "}"

    def _update(self, doc: dict[str, Any], stored_id: Any, changed: dict[str, Any],
                now: Any) -> UpdateOne:
        query: dict[str, Any] = {"_id": stored_id}
        for k in self.keys:
            if k != "_id":
                query[k] = doc[k]
        return UpdateOne(query, {"$set": changed | dict.fromkeys(self.time_updated, now)})

    def _write_updates(self, coll: Collection[Any], ops: list[tuple[int, UpdateOne]]) -> None:
        if not ops:
            return
        run = self.run
        rows = np.array([row for row, _ in ops], dtype=np.int64)
        ids = [bytes(self.ids[r]).hex() for r in rows.tolist()]
        try:
            result = coll.bulk_write([op for _, op in ops], ordered=False)
            run.updated += result.matched_count
            run.lost_in_a_row = 0
        except BulkWriteError as exc:
            run.lost_in_a_row = 0
            details = exc.details or {}
            run.updated += int(details.get("nMatched", 0))
            for error in details.get("writeErrors", []):
                i = error["index"]
                run.failed.append(FailedRow(int(rows[i]), ids[i], error.get("code", "WriteError"),
                                            str(error.get("errmsg", "write error"))))
        except (PyMongoError, InvalidDocument) as exc:
            before = len(run.failed)
            run.command_failed(rows, exc, "update")
            for i, failure in enumerate(run.failed[before:]):
                run.failed[before + i] = FailedRow(failure.row, ids[i], failure.code,
                                                   failure.message)


class _Absent:
    __slots__ = ()


_ABSENT: Any = _Absent()

# Upserts compare decoded values: both the frame's documents and the stored ones are
# decoded with pymongo's plain options (naive UTC datetimes, Decimal128, UUIDs as Binary),
# which is 3x faster than the model codec and re-encodes to the same BSON.
_PLAIN = bson.CodecOptions()
_EXACT = frozenset({str, int, datetime.datetime, bson.ObjectId, bytes, type(None), bson.Binary})


def _same(stored: Any, new: Any) -> bool:
    """MongoDB's equality of a stored value and a new one, decided client side.

    Numbers compare by value (``5 == 5.0``) but never with booleans; a missing field
    equals null; NaN equals NaN; lists element-wise, sub-documents by content.

    >>> _same(5, 5.0), _same(True, 1), _same(_ABSENT, None), _same(float("nan"), float("nan"))
    (True, False, True, True)
    """
    kind = type(new)
    if kind in _EXACT and type(stored) is kind:
        return bool(stored == new)
    if stored is _ABSENT:
        stored = None
    if isinstance(stored, Decimal128):
        stored = stored.to_decimal()
    if isinstance(new, Decimal128):
        new = new.to_decimal()
    if isinstance(stored, bool) or isinstance(new, bool):
        return type(stored) is type(new) and stored == new
    if isinstance(stored, float) and isinstance(new, float) and math.isnan(stored):
        return math.isnan(new)
    if isinstance(new, list):
        return isinstance(stored, list) and len(stored) == len(new) and all(
            _same(a, b) for a, b in zip(stored, new, strict=True)
        )
    if isinstance(new, dict):
        return isinstance(stored, dict) and stored.keys() == new.keys() and all(
            _same(stored[k], new[k]) for k in new
        )
    if isinstance(stored, str) != isinstance(new, str):
        return False
    try:
        return bool(stored == new)
    except TypeError:
        return False


def _hashable(value: Any) -> Any:
    if type(value) is list or type(value) is dict:
        raise TypeError("unhashable key value")
    return value
