"""Frames: a command's result as an Arrow table, record batches, pandas or Polars.

Per server reply: pymongoarrow decodes the raw BSON (:mod:`.decode`), columns become
their frame types, the few suspect cells are settled from the same raw bytes
(:mod:`.validity`), free-form columns are filled with Extended JSON text. Nothing is
asked of the server beyond the command itself: the user's query and the plain
projection of the result's columns.

The low-level entry points :func:`find_table`, :func:`aggregate_table` and
:func:`iter_batches` read any collection into a given Arrow schema (field metadata, as
:func:`loom_frames.schema.arrow_schema` writes it, says where each column is stored).

>>> import pyarrow as pa
>>> to_frame(pa.table({"a": [1, None]}), "pandas").dtypes.to_dict()
{'a': Int64Dtype()}
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from ..errors import PlanError, did_you_mean
from ..plan import Command
from ..progress import Progress, Reporter, check_progress
from ..codec import json_text
from ..schema import columns_from_arrow, projection_of, schema_name
from . import cursor
from .decode import ReadPlan, array, convert, decode, read_plan
from .validity import (
    Misfit,
    OnInvalid,
    RawBatch,
    check_on_invalid,
    misfit_error,
    settle,
)

if TYPE_CHECKING:
    from pymongo.collection import Collection

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "aggregate_table",
    "find_table",
    "iter_batches",
    "load_batches",
    "load_table",
    "load_tables",
    "to_frame",
]

log = logging.getLogger("loom_frames.read")

Backend = Literal["pandas", "polars", "pyarrow"]
_BACKENDS = ("pandas", "polars", "pyarrow")

DEFAULT_BATCH_SIZE = 65_536
"""Documents per batch for :func:`iter_batches` (bounded memory for large results)."""


# ------------------------------------------------------------------------ commands
def load_table(
    collection: Collection[Any],
    command: Command,
    *,
    on_invalid: OnInvalid = "raise",
    progress: Progress = "auto",
    batch_size: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> pa.Table:
    """A command's whole result as one table of its columns (typed empty when none).

    ``batch_size`` None: the server's own batches, or replies of 10,000 documents while
    progress is watched, so a bar moves.

    >>> load_table(User.collection(), User.filter(lm.fld["age"] > 25).compile())  # doctest: +SKIP
    pyarrow.Table
    id: string
    ...
    """
    check_on_invalid(on_invalid)
    check_progress(progress)
    tables = list(_read(collection, command, on_invalid, progress, batch_size, options))
    if not tables:
        if command.columns is None:
            return pa.table({})
        return _plan_of(command).frame_schema.empty_table()
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def load_batches(
    collection: Collection[Any],
    command: Command,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_invalid: OnInvalid = "raise",
    progress: Progress = "auto",
    options: Mapping[str, Any] | None = None,
) -> Iterator[pa.RecordBatch]:
    """A command's result as record batches of ``batch_size`` rows (the last one may be
    shorter), cut from the server's replies as they arrive (bounded memory: one reply at
    a time). No batch for no result.

    >>> batches = load_batches(User.collection(), User.filter().compile(), batch_size=1000)  # doctest: +SKIP
    >>> sum(b.num_rows for b in batches)  # doctest: +SKIP
    123456
    """
    check_on_invalid(on_invalid)
    check_progress(progress)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return _batches(collection, command, on_invalid, progress, batch_size, options)


def _batches(
    collection: Collection[Any], command: Command, on_invalid: OnInvalid,
    progress: Progress, batch_size: int, options: Mapping[str, Any] | None,
) -> Iterator[pa.RecordBatch]:
    # The server's own replies (a first batch of 101 documents, then up to 16 MiB), as
    # pymongoarrow reads them: asking for replies of batch_size documents cost SecantusDB
    # 6% more CPU for the same documents (bench/bench_read.py). Memory stays bounded: one
    # reply at a time, plus fewer than batch_size rows carried over to the next batch.
    carry: pa.Table | None = None
    for table in _read(collection, command, on_invalid, progress, None, options):
        if carry is not None:
            table = pa.concat_tables([carry, table])
        whole = table.num_rows - table.num_rows % batch_size
        for start in range(0, whole, batch_size):
            yield _one_batch(table.slice(start, batch_size))
        carry = table.slice(whole) if whole < table.num_rows else None
    if carry is not None:
        yield _one_batch(carry)


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    """A table's rows as one record batch (copied only where it spans two replies)."""
    batches = table.to_batches()
    return batches[0] if len(batches) == 1 else table.combine_chunks().to_batches()[0]


def load_tables(
    collection: Collection[Any],
    command: Command,
    *,
    batch_size: int | None = None,
    on_invalid: OnInvalid = "raise",
    progress: Progress = "auto",
) -> Iterator[pa.Table]:
    """A command's result as one table per server reply (replies of at most
    ``batch_size`` documents; None: the server's own). What a scan streams.

    >>> [t.num_rows for t in load_tables(User.collection(), User.filter().compile(),  # doctest: +SKIP
    ...                                  batch_size=50_000)]
    [50000, 50000, 23456]
    """
    check_on_invalid(on_invalid)
    check_progress(progress)
    return _read(collection, command, on_invalid, progress, batch_size, None)


def _plan_of(command: Command) -> ReadPlan:
    assert command.columns is not None
    return read_plan(command.columns, command.name or command.namespace, command.computed)


def _read(
    collection: Collection[Any],
    command: Command,
    on_invalid: OnInvalid,
    progress: Progress,
    batch_size: int | None,
    options: Mapping[str, Any] | None,
) -> Iterator[pa.Table]:
    """One table per server reply."""
    reporter = Reporter(progress, f"reading {command.namespace}", None, "B")
    if batch_size is None:
        watched = reporter.watching
        batch_size = cursor.FEEDBACK_BATCH if watched else cursor.WHOLE_RESULT_BATCH
    plan = _plan_of(command) if command.columns is not None else None
    replies = cursor.raw_batches(collection, command, batch_size=batch_size, options=options)
    with reporter:
        if plan is None:  # a raw pipeline's own shape: inferred from its first rows
            plan, replies = _inferred_plan(replies, command)
        for raw in replies:
            table = _table(raw, plan, on_invalid)
            if isinstance(table, Misfit):
                if "_id" not in table.doc and command.documents:  # name the document
                    table = replace(table, doc={"_id": cursor.first_id(
                        collection, command, table.column.key, table.doc.get(table.column.key)
                    ), **table.doc})
                raise misfit_error(table, plan, command.namespace)
            yield table
            reporter.update(len(raw))


def _inferred_plan(
    replies: Iterator[bytes], command: Command
) -> tuple[ReadPlan, Iterator[bytes]]:
    """The plan of a schema inferred from the first ``command.infer_schema_length``
    result rows (all for None), and the replies, those read for it included."""
    import itertools

    from .infer import describe, infer_columns

    wanted = command.infer_schema_length
    held: list[bytes] = []
    sample: list[Any] = []
    for raw in replies:
        held.append(raw)
        sample.extend(RawBatch(raw).docs())
        if wanted is not None and len(sample) >= wanted:
            break
    sample = sample if wanted is None else sample[:wanted]
    columns, notes = infer_columns(sample)
    log.info("%s: %s", command.namespace, describe(len(sample), notes))
    name = f"the schema inferred from the first {len(sample)} result rows"
    return read_plan(columns, name), itertools.chain(held, replies)


def _table(raw: bytes, plan: ReadPlan, on_invalid: OnInvalid) -> pa.Table | Misfit:
    """One raw batch as a table of the plan's frame schema (or its first misfit)."""
    batch = RawBatch(raw)
    typed = [col for col in plan.columns if not col.free_form]
    stored = decode(raw, plan) if typed else None
    storage: list[pa.Array | None] = []
    arrays: list[pa.Array | None] = []
    nominated: list[Any] = []
    for col in plan.columns:
        if col.free_form or stored is None:
            storage.append(None)
            arrays.append(None)
            nominated.append(None)
            continue
        arr = array(stored.column(col.key))
        out, bad = convert(arr, col)
        storage.append(arr)
        arrays.append(out)
        nominated.append(bad)
    settled = settle(batch, plan, storage, arrays, nominated, on_invalid)  # type: ignore[arg-type]
    if isinstance(settled, Misfit):
        return settled
    if plan.free_form:
        docs = batch.docs()
        settled = [
            pa.array([json_text(doc.get(col.key)) for doc in docs], type=pa.string())
            if col.free_form else arr
            for col, arr in zip(plan.columns, settled, strict=True)
        ]
    return pa.Table.from_arrays(settled, schema=plan.frame_schema)


# ------------------------------------------------------------------ schema-typed reads
def _schema_command(
    collection: Collection[Any], schema: pa.Schema, *, filter: Mapping[str, Any] | None = None,
    sort: Any = None, skip: int = 0, limit: int = 0,
    pipeline: Sequence[Mapping[str, Any]] | None = None,
) -> Command:
    if not isinstance(schema, pa.Schema):
        raise TypeError(f"schema must be a pyarrow.Schema, got {type(schema).__name__}")
    columns = columns_from_arrow(schema)
    name = schema_name(schema) or "the frame schema"
    projection = projection_of(columns)
    database, coll = collection.database.name, collection.name
    if pipeline is None:
        order = tuple((k, d) for k, d in (sort or ()))
        return Command(database, coll, "find", columns, dict(filter or {}), order, skip,
                       limit, documents=True, name=name, projection=projection)
    stages = list(pipeline)
    if stages and ("$out" in stages[-1] or "$merge" in stages[-1]):
        raise PlanError(
            "an aggregation ending in $out/$merge writes instead of returning documents. "
            "Hint: run it with the collection's aggregate(), then load the target."
        )
    return Command(database, coll, "aggregate", columns, pipeline=tuple(stages), name=name,
                   projection=projection)


def find_table(
    collection: Collection[Any],
    schema: pa.Schema,
    *,
    filter: Mapping[str, Any] | None = None,
    sort: Any = None,
    skip: int = 0,
    limit: int = 0,
    on_invalid: OnInvalid = "raise",
    batch_size: int | None = None,
    progress: Progress = "auto",
    **options: Any,
) -> pa.Table:
    """Run one ``find`` and return its documents as a table of exactly ``schema``.

    ``filter`` and ``sort`` use storage keys (``_id``, aliases); ``sort`` is a list of
    ``(key, direction)`` pairs as pymongo takes it. Other keyword options (``hint``,
    ``collation``, ``max_time_ms``, ``comment``, ...) go to ``find``.

    >>> from loom_frames.schema import arrow_schema
    >>> table = find_table(  # doctest: +SKIP
    ...     User.collection(), arrow_schema(User), filter={"age": {"$gt": 25}}, limit=10
    ... )
    >>> table.schema.names  # doctest: +SKIP
    ['id', 'created_at', 'updated_time', 'name', 'email', 'age', 'is_active']
    """
    command = _schema_command(collection, schema, filter=filter, sort=sort, skip=skip,
                              limit=limit)
    return load_table(collection, command, on_invalid=on_invalid, progress=progress,
                      batch_size=batch_size, options=options)


def aggregate_table(
    collection: Collection[Any],
    pipeline: Sequence[Mapping[str, Any]],
    schema: pa.Schema,
    *,
    on_invalid: OnInvalid = "raise",
    batch_size: int | None = None,
    progress: Progress = "auto",
    **options: Any,
) -> pa.Table:
    """Run an aggregation and return its output documents as a table of ``schema``.

    A final ``$project`` of the schema's top-level keys is appended. Output keys are the
    schema's storage keys (a plain Arrow schema: its field names).

    >>> schema = pa.schema({"_id": pa.bool_(), "avg_age": pa.float64()})
    >>> group = {"$group": {"_id": "$is_active", "avg_age": {"$avg": "$age"}}}
    >>> aggregate_table(User.collection(), [group], schema).to_pylist()  # doctest: +SKIP
    [{'_id': True, 'avg_age': 31.5}, {'_id': False, 'avg_age': 40.0}]
    """
    command = _schema_command(collection, schema, pipeline=pipeline)
    return load_table(collection, command, on_invalid=on_invalid, progress=progress,
                      batch_size=batch_size, options=options)


def iter_batches(
    collection: Collection[Any],
    schema: pa.Schema,
    *,
    filter: Mapping[str, Any] | None = None,
    pipeline: Sequence[Mapping[str, Any]] | None = None,
    sort: Any = None,
    skip: int = 0,
    limit: int = 0,
    on_invalid: OnInvalid = "raise",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress = "auto",
    **options: Any,
) -> Iterator[pa.RecordBatch]:
    """Stream a find (or, with ``pipeline``, an aggregation) as record batches.

    Each batch holds at most ``batch_size`` rows, read from one server batch, so memory
    stays bounded for results larger than memory. No batch is yielded for no result.

    >>> batches = iter_batches(User.collection(), arrow_schema(User), batch_size=10_000)  # doctest: +SKIP
    >>> sum(batch.num_rows for batch in batches)  # doctest: +SKIP
    123456
    """
    if pipeline is not None and (filter or sort or skip or limit):
        raise PlanError("iter_batches takes a filter/sort/skip/limit or a pipeline, not both")
    command = _schema_command(collection, schema, filter=filter, sort=sort, skip=skip,
                              limit=limit, pipeline=pipeline)
    return load_batches(collection, command, batch_size=batch_size, on_invalid=on_invalid,
                        progress=progress, options=options)


# ----------------------------------------------------------------------- frames
def to_frame(table: pa.Table, backend: Backend = "pandas") -> Any:
    """An Arrow table as a pandas / Polars DataFrame, or the table itself.

    Polars goes through narwhals (``pl.from_arrow``: every type maps one to one). pandas
    uses ``Table.to_pandas`` with a types mapper so dtypes follow the schema, not the
    data: int64 -> ``Int64`` and bool -> ``boolean`` (nullable: no silent cast to float
    or object when a value is missing), timestamps -> ``datetime64[ms, UTC]``, strings ->
    pandas' string dtype, date32 -> ``datetime.date`` objects, decimals -> ``Decimal``
    objects, lists and structs -> objects.

    >>> to_frame(pa.table({"a": [1, 2]}), "polars").schema
    Schema([('a', Int64)])
    """
    if not isinstance(table, pa.Table):
        raise TypeError(f"to_frame takes a pyarrow.Table, got {type(table).__name__}")
    if backend == "pyarrow":
        return table
    if backend == "polars":
        import narwhals as nw

        return nw.from_native(table, eager_only=True).to_polars()
    if backend == "pandas":
        import pandas as pd

        mapping = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype(),
                   pa.int32(): pd.Int32Dtype(), pa.int8(): pd.Int8Dtype(),
                   pa.uint32(): pd.UInt32Dtype()}
        return table.to_pandas(types_mapper=mapping.get)
    raise ValueError(
        f"backend must be one of {', '.join(_BACKENDS)}, got {backend!r}"
        + did_you_mean(str(backend), _BACKENDS)
    )
