"""Writing frames: ``insert_dataframe``, its result, and what every frame write shares.

A pandas, Polars or PyArrow frame is held to the model exactly as a single ``persist()``
holds an object (:mod:`loom_frames.write.prepare`: a frame that does not fit raises
:class:`~loom_frames.errors.FrameValidationError` before anything is written), then
encoded to BSON in bounded batches (at most ``batch_size`` rows and 16 MiB of documents;
never the whole frame at once) and written unordered, so a failed row never stops the
others.

Every row ends in exactly one of inserted / updated / unchanged / failed (``_Run`` holds
one status per row and refuses to settle a row twice or finish with one unsettled). A
failed row says its outcome: ``"rejected"`` (not written), ``"unknown"`` (its batch was
sent and the reply lost: it may be stored) or ``"not_attempted"``. By default a
:class:`~loom_frames.errors.FrameWriteError` carrying the :class:`WriteResult` is raised
at the end when any row failed (``on_error="report"`` returns it instead).

>>> import loom_frames as lm  # doctest: +SKIP
>>> result = User.insert_dataframe(df)  # doctest: +SKIP
>>> result.inserted, result.ids[:1]  # doctest: +SKIP
(2, ['6650f0c2a1b2c3d4e5f60718'])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from bson.raw_bson import RawBSONDocument
from pymongo import InsertOne
from pymongo.collection import Collection

from .. import codec
from ..dask_io import is_dask_frame, write_dask
from ..errors import FrameWriteError, did_you_mean
from ..fields import utc_now
from ..model import Persistable
from ..progress import Progress, Reporter, check_progress
from ..storage import collection_for
from .arrow_bson import object_id_hex
from .outcome import DUPLICATE_KEY, BulkOutcome, Outcome, run_bulk
from .prepare import Backend, PreparedFrame, frame_to_arrow, prepare

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DOCUMENT_TOO_LARGE",
    "MAX_BATCH_BYTES",
    "NOT_ATTEMPTED",
    "FailedRow",
    "WriteResult",
    "insert_dataframe",
]

DEFAULT_BATCH_SIZE = 10_000
"""Rows per write command (and per key lookup of an upsert)."""

MAX_BATCH_ROWS = 100_000
"""MongoDB's maxWriteBatchSize: one batch is one command."""

MAX_BATCH_BYTES = 16 * 1024 * 1024
"""Bytes of encoded documents per write command (the only documents held at once)."""

DOCUMENT_TOO_LARGE = "DocumentTooLarge"
"""Failed-row code: the row's document exceeds 16 MiB."""

NOT_ATTEMPTED = "NotAttempted"
"""Failed-row code: not sent, because the connection was lost on the batches before."""

_GIVE_UP_AFTER = 2  # consecutive batches lost to connection failures

OnError = Literal["raise", "report"]
Extra = Literal["raise", "ignore"]

# Row statuses (_Run.status)
PENDING, INSERTED, UPDATED, UNCHANGED, FAILED = range(5)


# ------------------------------------------------------------------ results
@dataclass(frozen=True, slots=True)
class FailedRow:
    """A frame row that was not (certainly) written.

    ``row`` is its 0-based position in the frame; ``id`` the 24-hex document id it was
    given; ``code`` MongoDB's error code (an int, e.g. 11000 for a duplicate key), the
    driver's exception name for a lost connection (``"AutoReconnect"``, ...), or a code
    of the library's (:data:`DOCUMENT_TOO_LARGE`, :data:`NOT_ATTEMPTED`, and the
    upsert's ``IdConflict``); ``outcome`` is ``"rejected"`` (nothing written),
    ``"unknown"`` (sent, reply lost: it may be stored) or ``"not_attempted"``. For a Dask
    frame, ``partition`` is the partition's number and ``row`` the position in it.
    """

    row: int
    id: str | None
    code: int | str
    message: str
    outcome: Outcome = "rejected"
    partition: int | None = None

    @property
    def where(self) -> str:
        """``"row 3"``, or ``"row 3 of partition 2"``."""
        return f"row {self.row}" + (f" of partition {self.partition}"
                                    if self.partition is not None else "")


@dataclass(frozen=True, slots=True, eq=False)
class WriteResult:
    """What a frame write did: every row is counted exactly once.

    ``ids`` holds every row's document id as 24-hex strings in frame order (a
    ``polars.Series`` for a Polars frame, a ``pandas.Series`` on the frame's index for
    pandas, a ``pyarrow.StringArray`` otherwise), so ``df.with_columns(id=result.ids)``
    lines up; the ids of rows listed in ``failed`` are not (certainly) in the database.

    >>> WriteResult(2, 0, 0, ["a", "b"], ())
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

    @property
    def rows(self) -> int:
        """Rows of the frame: inserted + updated + unchanged + failed."""
        return self.inserted + self.updated + self.unchanged + len(self.failed)

    def __repr__(self) -> str:
        return (
            f"WriteResult(inserted={self.inserted}, updated={self.updated}, "
            f"unchanged={self.unchanged}, failed={len(self.failed)})"
        )


# ------------------------------------------------------------------ insert_dataframe
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
    check_options(batch_size, on_error, progress)
    if is_dask_frame(df):
        return write_dask(model, df, "insert", batch_size=batch_size, extra=extra,
                          on_error=on_error)
    table, backend, index = frame_to_arrow(df, model)
    frame = prepare(model, table, extra=extra, now=utc_now())
    run = Run(model, frame, progress, "insert")
    coll = collection_for(model)
    with run.reporter:
        for rows, docs in batches(frame, batch_size, run):
            run.insert(coll, rows, docs)
            run.advance(len(docs))
    return run.finish(frame.ids, backend, index, on_error, "insert_dataframe")


def check_options(batch_size: int, on_error: str, progress: Any) -> None:
    """The options every frame write takes, checked before any work."""
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
def batches(
    frame: PreparedFrame, batch_size: int, run: Run
) -> Iterator[tuple[np.ndarray, list[bytes]]]:
    """Encoded batches of at most ``batch_size`` rows and MAX_BATCH_BYTES bytes.

    Rows are encoded a chunk at a time; the chunk size adapts to the average document
    size seen so far, and a chunk that still exceeds the byte budget is split. A row
    over 16 MiB fails alone; after repeated lost connections the rest is not attempted.
    """
    n = frame.num_rows
    start = 0
    rows = min(batch_size, 1024)
    while start < n:
        stop = min(n, start + rows)
        if run.gave_up:
            run.fail(np.arange(start, stop), NOT_ATTEMPTED, run.give_up_message,
                     "not_attempted")
            run.advance(stop - start)
            start = stop
            continue
        docs, lengths = frame.documents(start, stop)
        big = lengths > codec.MAX_DOCUMENT_BYTES
        if big.any():
            for i in np.flatnonzero(big).tolist():
                run.fail(
                    np.array([start + i]), DOCUMENT_TOO_LARGE,
                    f"the document is {lengths[i]} bytes; MongoDB stores at most "
                    f"{codec.MAX_DOCUMENT_BYTES}", "rejected",
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
class Run:
    """One frame write: a status per row, failed rows, progress, connection losses.

    Every row is settled exactly once (``settle``/``fail`` refuse a row settled
    before), and :meth:`finish` refuses to report while a row has no outcome: the
    result's counts add up to the frame's rows by construction.
    """

    def __init__(self, model: type[Persistable], frame: PreparedFrame, progress: Progress,
                 verb: str) -> None:
        self.model = model
        self.frame = frame
        self.reporter = Reporter(progress, f"{model.__name__}: {verb}", frame.num_rows, "rows")
        self.status = np.zeros(frame.num_rows, dtype=np.int8)
        self.failed: dict[int, FailedRow] = {}
        self.lost_in_a_row = 0
        self.gave_up = False
        self.give_up_message = ""

    # -------------------------------------------------------------- settling rows
    def settle(self, rows: np.ndarray, status: int) -> None:
        """Rows ``rows`` ended as ``status`` (INSERTED / UPDATED / UNCHANGED)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return
        if (self.status[rows] != PENDING).any():
            twice = rows[self.status[rows] != PENDING][:5].tolist()
            raise RuntimeError(
                f"loom-frames bug: frame rows {twice} were given a second outcome. "
                "Please report it (nothing more was written)."
            )
        self.status[rows] = status

    def fail(self, rows: np.ndarray, code: int | str, message: str, outcome: Outcome,
             ids: Sequence[str] | None = None) -> None:
        """Rows ``rows`` failed (``ids``: their document ids, else the frame's)."""
        self.settle(rows, FAILED)
        for i, row in enumerate(np.asarray(rows).tolist()):
            doc_id = ids[i] if ids is not None else self.hex_id(row)
            self.failed[row] = FailedRow(row, doc_id, code, message, outcome)

    def apply(self, rows: np.ndarray, outcome: BulkOutcome, status: int, *,
              upserted: int | None = None, skip: frozenset[int] = frozenset(),
              ids: Sequence[str] | None = None) -> None:
        """Settle the rows of one bulk write (operation ``i`` wrote frame row
        ``rows[i]``): done ones as ``status`` (``upserted`` for updates that inserted),
        failed ones with their failure; operations in ``skip`` stay pending."""
        self.note_connection(outcome.connection_lost)
        rows = np.asarray(rows, dtype=np.int64)
        done = np.ones(len(rows), dtype=bool)
        for i in [*outcome.failures, *skip]:
            done[i] = False
        if upserted is not None and outcome.upserted:
            ups = np.zeros(len(rows), dtype=bool)
            ups[list(outcome.upserted)] = True
            self.settle(rows[done & ups], upserted)
            done &= ~ups
        self.settle(rows[done], status)
        for i, failure in outcome.failures.items():
            if i not in skip:
                self.fail(rows[i:i + 1], failure.code, failure.message, failure.outcome,
                          None if ids is None else [ids[i]])

    def note_connection(self, connection_lost: bool) -> None:
        """Count connection losses in a row (a command that got through resets it)."""
        if not connection_lost:
            self.lost_in_a_row = 0
            return
        self.lost_in_a_row += 1
        if self.lost_in_a_row >= _GIVE_UP_AFTER:
            self.gave_up = True
            self.give_up_message = (
                f"not sent: the connection to MongoDB was lost on {self.lost_in_a_row} "
                "batches in a row, so the rest of the frame was not attempted"
            )

    # -------------------------------------------------------------- writing
    def insert(self, coll: Collection[Any], rows: np.ndarray, docs: Sequence[bytes], *,
               skip_duplicates: bool = False) -> BulkOutcome:
        """One unordered insert of encoded documents (frame rows ``rows``). With
        ``skip_duplicates``, rows rejected for a duplicate key stay pending (the caller
        decides: an upsert looks them up again)."""
        ops = [InsertOne(RawBSONDocument(doc)) for doc in docs]
        outcome = run_bulk(coll, ops, f"inserting {len(ops)} rows of {self.model.__name__}")
        skip = frozenset(
            i for i, f in outcome.failures.items() if f.duplicate_key
        ) if skip_duplicates else frozenset()
        self.apply(rows, outcome, INSERTED, skip=skip)
        return outcome

    def hex_id(self, row: int) -> str:
        return bytes(self.frame.ids[row]).hex()

    def advance(self, rows: int) -> None:
        self.reporter.update(rows)

    # -------------------------------------------------------------- the result
    def finish(self, ids: np.ndarray, backend: Backend, index: Any, on_error: OnError,
               verb: str) -> WriteResult:
        """The :class:`WriteResult` (raising :class:`FrameWriteError` per ``on_error``)."""
        if (self.status == PENDING).any():
            left = np.flatnonzero(self.status == PENDING)[:5].tolist()
            raise RuntimeError(
                f"loom-frames bug: frame rows {left} ended with no outcome. Please report "
                "it; re-running upsert_dataframe on the frame completes the write."
            )
        counts = np.bincount(self.status, minlength=5)
        failed = tuple(self.failed[row] for row in sorted(self.failed))
        result = WriteResult(int(counts[INSERTED]), int(counts[UPDATED]),
                             int(counts[UNCHANGED]), native_ids(ids, backend, index), failed)
        if failed and on_error == "raise":
            raise FrameWriteError(failure_message(self.model, verb, result), result)
        return result


def native_ids(ids: np.ndarray, backend: Backend, index: Any) -> Any:
    """The rows' ids as 24-hex strings, in the frame's own library."""
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


def failure_message(model: type[Persistable], verb: str, result: WriteResult) -> str:
    """The message of a :class:`FrameWriteError`: the first failed rows, and hints."""
    shown = "\n".join(
        f"  {f.where} (id {f.id}): [{f.code}] {f.message} ({f.outcome})"
        for f in result.failed[:5]
    )
    more = f"\n  ... and {len(result.failed) - 5} more" if len(result.failed) > 5 else ""
    duplicates = [f for f in result.failed if f.code in DUPLICATE_KEY]
    others = [f for f in result.failed if f.code not in DUPLICATE_KEY]
    unknown = sum(f.outcome == "unknown" for f in result.failed)
    hints = ["the error's .result lists every failed row"]
    if unknown:
        hints.append(
            f"{unknown} row(s) were sent and the reply was lost, so they may be stored: "
            "re-run upsert_dataframe(df.with_columns(id=result.ids), on=['id']) (or on "
            "your unique key) to complete the collection without duplicates"
        )
    if duplicates:
        hints.append(
            "a duplicate key clashes with a stored document on a unique index: change or "
            "drop those rows, or upsert_dataframe(..., on=[that key]) to update the stored "
            "documents instead"
        )
    if others and not unknown:
        hints.append(
            "the other rows were not written: once what their messages name is fixed, "
            "re-running upsert_dataframe(..., on=['id'] or your key) with the same ids "
            "completes the collection without duplicates"
        )
    hints.append("on_error='report' returns the result instead of raising")
    return (
        f"{verb}: {len(result.failed)} row(s) of {model.__name__} were not written "
        f"(inserted {result.inserted}, updated {result.updated}, unchanged "
        f"{result.unchanged}):\n{shown}{more}\nHint: " + "; ".join(hints) + "."
    )

