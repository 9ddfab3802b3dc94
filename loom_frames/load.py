"""Materialisation: MongoDB -> pymongoarrow -> Arrow (the model's schema) -> pandas / Polars.

The loaders take an Arrow schema (normally :func:`loom_frames.schema.arrow_schema` of a
model, whose field metadata says where each column is stored and what it holds) and
return tables of exactly that schema:

* one ``find`` / ``aggregate`` command, read in raw BSON batches by pymongoarrow with a
  schema of storage types (ObjectId, Decimal128, binary UUID, ...), the projection being
  exactly the schema's stored leaf paths;
* columns then converted to the frame types (ObjectId -> 24-char hex string, UUID ->
  36-char string, Decimal128 -> ``decimal128(p, s)``, date -> ``date32``) and renamed from
  storage keys to field names (``_id`` -> ``id``);
* no result is a typed empty table.

**Documents that do not fit.** A missing field loads as null. A value of the wrong type
raises :class:`~loom_frames.errors.DocumentValidationError` naming the field, the
document's ``_id`` and the value, or, with ``on_invalid="null"``, loads as null. How it
is detected, cheaply: pymongoarrow itself raises on most wrong types; what it lets
through (see :mod:`loom_frames._validity`) is reported by the server in the same query, as
a computed projection field that is absent for clean documents (no extra bytes, no
extra round trip). Only when something is wrong does a second query find the culprit.
The same report restores NaN in float fields (pymongoarrow reads NaN as null) and tells
a null subdocument from one whose fields are all null. Requires MongoDB 4.4+ (computed
``find`` projections).

Inside arrays the report cannot point at elements: there a NaN element of a float list
loads as null, and a subdocument element whose fields are all null loads as null.

>>> import pyarrow as pa
>>> to_frame(pa.table({"a": [1, None]}), "pandas").dtypes.to_dict()
{'a': Int64Dtype()}
"""

import contextlib
import copy
import math
import re
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import bson
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection
from pymongo.errors import OperationFailure

from ._validity import (
    MISSING,
    REPORT_KEY,
    check_expr,
    describe_value,
    expected,
    problem,
    report_conditions,
    report_expr,
)
from .connection import CODEC_OPTIONS, driver_errors
from .errors import DocumentValidationError, PlanError, did_you_mean
from .execute import WHOLE_RESULT_BATCH
from .expr.bind import Kind
from .expr.dtypes import COMPUTED_METADATA
from .progress import Progress, Reporter, check_progress
from .schema import Column, columns_from_arrow, projection_of, schema_name

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "aggregate_table",
    "find_table",
    "iter_batches",
    "read_command",
    "to_frame",
]

OnInvalid = Literal["raise", "null"]
Backend = Literal["pandas", "polars", "pyarrow"]

DEFAULT_BATCH_SIZE = 65_536
"""Documents per batch for :func:`iter_batches` (bounded memory for large results)."""

_BACKENDS = ("pandas", "polars", "pyarrow")


# ------------------------------------------------------------------------ plans
@dataclass(frozen=True, slots=True, eq=False)
class _ReadPlan:
    """What one read needs, derived once from the Arrow schema."""

    columns: tuple[Column, ...]
    frame_schema: pa.Schema
    storage: Any  # pymongoarrow.schema.Schema of storage keys and types
    projection: dict[str, Any]
    projection_bson: Any  # the same, encoded once (RawBSONDocument): sent on every read
    has_report: bool
    name: str  # the model name (or "the frame schema") for messages


_PLAN_CACHE_SIZE = 256
_plans: dict[bytes, _ReadPlan] = {}
_plans_lock = threading.Lock()
_last_plan: tuple[Any, _ReadPlan] | None = None  # (weakref to the schema, its plan)


def _plan(schema: pa.Schema) -> _ReadPlan:
    """The (cached) read plan of a schema; the key includes all metadata."""
    global _last_plan
    last = _last_plan
    if last is not None and last[0]() is schema:  # the same schema object again
        return last[1]
    if not isinstance(schema, pa.Schema):
        raise TypeError(f"schema must be a pyarrow.Schema, got {type(schema).__name__}")
    key = schema.serialize().to_pybytes()
    plan = _plans.get(key)
    if plan is None:
        plan = _build_plan(schema)
        with _plans_lock:
            if len(_plans) >= _PLAN_CACHE_SIZE:
                _plans.pop(next(iter(_plans)))
            _plans[key] = plan
    _last_plan = (weakref.ref(schema), plan)
    return plan


def _build_plan(schema: pa.Schema) -> _ReadPlan:
    from pymongoarrow.schema import Schema

    columns = columns_from_arrow(schema)
    keys = [c.key for c in columns]
    if len(set(keys)) != len(keys) or REPORT_KEY in keys:
        raise PlanError(f"schema columns must have distinct storage keys, got {keys}")
    typemap = {c.key: _storage_type(c) for c in columns}
    projection: dict[str, Any] = projection_of(columns)
    report = report_expr(report_conditions(columns))
    if report is not None:
        typemap[REPORT_KEY] = pa.list_(pa.string())
        projection[REPORT_KEY] = report
    name = schema_name(schema) or "the frame schema"
    encoded = RawBSONDocument(bson.encode(projection, codec_options=CODEC_OPTIONS))
    return _ReadPlan(
        columns, schema, Schema(typemap), projection, encoded, report is not None, name
    )


def _storage_type(col: Column) -> pa.DataType:
    """The type pymongoarrow reads a column's stored values into."""
    from pymongoarrow.types import BinaryType, Decimal128Type, ObjectIdType

    kind = col.kind
    if kind is Kind.OBJECTID:
        return ObjectIdType()
    if kind is Kind.UUID:
        return BinaryType(4)
    if kind is Kind.DECIMAL:
        return Decimal128Type()
    if kind is Kind.DATE:  # read as a timestamp, so a time of day can be detected
        return pa.timestamp("ms", tz="UTC")
    if col.binary:
        return BinaryType(0)
    if kind is Kind.LIST:
        assert col.item is not None
        return pa.list_(_storage_type(col.item))
    if kind is Kind.STRUCT:
        return pa.struct([(c.key, _storage_type(c)) for c in col.children])
    assert col.type is not None
    if pa.types.is_timestamp(col.type):
        return pa.timestamp("ms", tz=col.type.tz)
    if pa.types.is_integer(col.type):  # uint32 counts, int8 date parts: cast after reading
        return pa.int64()
    return col.type


def read_command(schema: pa.Schema) -> dict[str, Any]:
    """The projection a load of ``schema`` sends (leaf paths plus the report field).

    >>> import pyarrow as pa
    >>> schema = pa.schema({"name": pa.string(), "score": pa.float64()})
    >>> projection = read_command(schema)["projection"]
    >>> list(projection), projection["__loom_report"]["$cond"][0]
    (['name', 'score', '_id', '__loom_report'], {'$eq': ['$score', nan]})
    """
    return {"projection": copy.deepcopy(_plan(schema).projection)}


# ---------------------------------------------------------------------- sources
@dataclass(frozen=True, slots=True, eq=False)
class _Source:
    """Where the documents come from: a find or an aggregation, and how to re-scope it."""

    collection: Collection[Any]
    filter: Mapping[str, Any] | None = None
    sort: Any = None
    skip: int = 0
    limit: int = 0
    pipeline: Sequence[Mapping[str, Any]] | None = None
    batch_size: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return f"{self.collection.database.name}.{self.collection.name}"

    def cursor(self, projection: Mapping[str, Any]) -> Any:
        """A raw-batch cursor over the documents, projected."""
        batch_size = self.batch_size or WHOLE_RESULT_BATCH
        if self.pipeline is not None:
            kwargs = {"batchSize": batch_size, **self.options}
            stages = [*self.pipeline, {"$project": projection}]
            return self.collection.aggregate_raw_batches(stages, **kwargs)
        kwargs = {"batch_size": batch_size, **self.options}
        if self.sort:
            kwargs["sort"] = self.sort
        return self.collection.find_raw_batches(
            dict(self.filter or {}),
            projection=projection,
            skip=self.skip,
            limit=self.limit,
            **kwargs,
        )

    def scope(self) -> list[dict[str, Any]]:
        """Aggregation stages selecting the same documents (for the error path)."""
        if self.pipeline is not None:
            return [dict(stage) for stage in self.pipeline]
        stages: list[dict[str, Any]] = [{"$match": dict(self.filter or {})}]
        if self.sort and (self.skip or self.limit):  # the order only matters for a window
            stages.append({"$sort": dict(self.sort)})
        if self.skip:
            stages.append({"$skip": self.skip})
        if self.limit:
            stages.append({"$limit": abs(self.limit)})
        return stages


def _server_errors(source: _Source) -> contextlib.AbstractContextManager[None]:
    """Driver errors become the library's own (:func:`~loom_frames.connection.driver_error`)."""
    operation = "aggregate" if source.pipeline is not None else "find"
    return driver_errors(f"reading {source.namespace} ({operation})")


# ------------------------------------------------------------------------ reads
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
    ``collation``, ``max_time_ms``, ``comment``, ...) go to ``find``. ``progress``: a bar
    of bytes received when the result spans several server batches (see
    :mod:`loom_frames.progress`).

    >>> from loom_frames.schema import arrow_schema
    >>> table = find_table(  # doctest: +SKIP
    ...     User.collection(), arrow_schema(User), filter={"age": {"$gt": 25}}, limit=10
    ... )
    >>> table.schema.names  # doctest: +SKIP
    ['id', 'created_at', 'updated_time', 'name', 'email', 'age', 'is_active']
    """
    _check_on_invalid(on_invalid)
    check_progress(progress)
    source = _Source(collection, filter, sort, skip, limit, None, batch_size, options)
    (table,) = _read(source, _plan(schema), on_invalid, progress, per_batch=False)
    return table


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

    A final ``$project`` of the schema's leaf paths (and the report field) is appended.
    Output keys are the schema's storage keys (a plain Arrow schema: its field names).

    >>> import pyarrow as pa
    >>> schema = pa.schema({"_id": pa.bool_(), "avg_age": pa.float64()})
    >>> group = {"$group": {"_id": "$is_active", "avg_age": {"$avg": "$age"}}}
    >>> aggregate_table(User.collection(), [group], schema).to_pylist()  # doctest: +SKIP
    [{'_id': True, 'avg_age': 31.5}, {'_id': False, 'avg_age': 40.0}]
    """
    _check_on_invalid(on_invalid)
    check_progress(progress)
    stages = list(pipeline)
    if stages and ("$out" in stages[-1] or "$merge" in stages[-1]):
        raise PlanError(
            "an aggregation ending in $out/$merge writes instead of returning documents. "
            "Hint: run it with the collection's aggregate(), then load the target."
        )
    source = _Source(collection, None, None, 0, 0, stages, batch_size, options)
    (table,) = _read(source, _plan(schema), on_invalid, progress, per_batch=False)
    return table


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
    _check_on_invalid(on_invalid)
    check_progress(progress)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if pipeline is not None and (filter or sort or skip or limit):
        raise PlanError("iter_batches takes a filter/sort/skip/limit or a pipeline, not both")
    source = _Source(
        collection,
        filter,
        sort,
        skip,
        limit,
        list(pipeline) if pipeline is not None else None,
        batch_size,
        options,
    )
    for table in _read(source, _plan(schema), on_invalid, progress, per_batch=True):
        yield from table.to_batches(max_chunksize=batch_size)


def _check_on_invalid(on_invalid: str) -> None:
    if on_invalid not in ("raise", "null"):
        raise ValueError(
            f"on_invalid must be 'raise' or 'null', got {on_invalid!r}"
            + did_you_mean(str(on_invalid), ["raise", "null"])
        )


def _read(
    source: _Source, plan: _ReadPlan, on_invalid: OnInvalid, progress: Progress, *,
    per_batch: bool,
) -> Iterator[pa.Table]:
    from pymongoarrow.context import PyMongoArrowContext

    codec = source.collection.codec_options
    allow_invalid = on_invalid == "null"

    def context() -> Any:
        return PyMongoArrowContext(plan.storage, codec_options=codec, allow_invalid=allow_invalid)

    ctx = context()
    reporter = Reporter(progress, f"reading {source.namespace}", None, "B")
    with _server_errors(source), source.cursor(plan.projection_bson) as cursor, reporter:
        for raw in cursor:
            try:
                ctx.process_bson_stream(raw)
            except (TypeError, ValueError, OverflowError) as exc:
                raise _locate(source, plan, str(exc), keys=_suspects(plan, str(exc))) from exc
            reporter.update(len(raw))
            if per_batch:
                yield _finish(ctx.finish(), source, plan, on_invalid)
                ctx = context()
        if not per_batch:
            yield _finish(ctx.finish(), source, plan, on_invalid)


def _finish(raw: pa.Table, source: _Source, plan: _ReadPlan, on_invalid: OnInvalid) -> pa.Table:
    """pymongoarrow's table (storage keys and types) -> the frame table."""
    masks = _report_masks(raw) if plan.has_report else {}
    if on_invalid == "raise":
        flagged = {path.split(".", 1)[0] for path, tags in masks.items() if "i" in tags}
        if flagged:
            raise _locate(
                source, plan, "the server reported a value of the wrong type", keys=flagged
            )
    converter = _Converter(masks, on_invalid)
    try:
        arrays = [converter.top_level(_array(raw.column(c.key)), c) for c in plan.columns]
    except _ClientInvalid as exc:
        if _computed_source(plan, exc.key) is not None:  # nothing stored to look for
            raise _computed_error(source, plan, exc.key, f"holds {exc.reason}") from None
        raise _locate(source, plan, exc.reason, keys={exc.key}) from None
    return pa.Table.from_arrays(arrays, schema=plan.frame_schema)


def _array(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _report_masks(raw: pa.Table) -> dict[str, dict[str, np.ndarray]]:
    """``{storage path: {tag letter: row mask}}`` from the report column."""
    column = raw.column(REPORT_KEY)
    if column.null_count == raw.num_rows:  # the usual case: every document is clean
        return {}
    report = _array(column)
    flat = pc.list_flatten(report)
    parents = pc.list_parent_indices(report).to_numpy()
    masks: dict[str, dict[str, np.ndarray]] = {}
    for tag in pc.unique(flat).to_pylist():
        rows = parents[pc.equal(flat, tag).to_numpy(zero_copy_only=False)]
        mask = np.zeros(len(report), dtype=bool)
        mask[rows] = True
        letter, path = tag.split(":", 1)
        masks.setdefault(path, {})[letter] = mask
    return masks


# ------------------------------------------------------------------ conversion
class _ClientInvalid(Exception):
    """A value found invalid while converting (raise mode): locate it on the server."""

    def __init__(self, reason: str, key: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key = key  # storage key of the top-level column


_UUID_DASHES = [8, 12, 16, 20]
_DAY_MS = 86_400_000


class _Converter:
    """Converts pymongoarrow's storage arrays to frame arrays, column by column."""

    __slots__ = ("masks", "on_invalid", "top")

    def __init__(self, masks: dict[str, dict[str, np.ndarray]], on_invalid: OnInvalid) -> None:
        self.masks = masks
        self.on_invalid = on_invalid
        self.top = ""  # the top-level column being converted (for error reports)

    def top_level(self, arr: pa.Array, col: Column) -> pa.Array:
        """Convert one column of the table."""
        self.top = col.key
        return self.convert(arr, col, col.key)

    def convert(self, arr: pa.Array, col: Column, path: str | None) -> pa.Array:
        """``path`` is the storage path of a column outside arrays (None inside one)."""
        tags = self.masks.get(path, {}) if path is not None else {}
        kind = col.kind
        if kind is Kind.OBJECTID:
            out = _hex_strings(arr.storage, 12)
        elif kind is Kind.UUID:
            out = self._uuid(arr.storage, col)
        elif kind is Kind.DECIMAL:
            out = self._decimal(arr.storage, col)
        elif kind is Kind.DATE:
            out = self._date(arr, col)
        elif kind is Kind.LIST:
            out = self._list(arr, col)
        elif kind is Kind.STRUCT:
            out = self._struct(arr, col, path, tags.get("z"))
        elif col.binary:
            out = arr.storage.cast(pa.binary())
        elif arr.type != col.type and pa.types.is_integer(arr.type):
            out = self._integer(arr, col)
        else:
            out = arr
        if "n" in tags:
            restore = pa.array(tags["n"] & out.is_null().to_numpy(zero_copy_only=False))
            out = pc.if_else(restore, pa.scalar(math.nan, out.type), out)
        if "i" in tags:  # null mode (raise mode stopped earlier)
            out = pc.if_else(pa.array(tags["i"]), pa.scalar(None, out.type), out)
        return out

    def _check(self, bad: np.ndarray, col: Column, what: str) -> bool:
        """True when some rows are ``bad``; in raise mode that stops the load."""
        if not bad.any():
            return False
        if self.on_invalid == "raise":
            raise _ClientInvalid(f"{what} in column {col.name!r}", self.top)
        return True

    def _null_rows(self, arr: pa.Array, bad: np.ndarray, col: Column, what: str) -> pa.Array:
        if not self._check(bad, col, what):
            return arr
        return pc.if_else(pa.array(bad), pa.scalar(None, arr.type), arr)

    def _integer(self, arr: pa.Array, col: Column) -> pa.Array:
        """int64 as read -> the column's integer type (uint32 counts, int8 date parts)."""
        assert col.type is not None
        info = np.iinfo(col.type.to_pandas_dtype())
        values = pc.fill_null(arr, 0).to_numpy(zero_copy_only=False)
        bad = (values < info.min) | (values > info.max)
        arr = self._null_rows(arr, bad, col, f"a value out of the range of {col.type}")
        return arr.cast(col.type)

    def _uuid(self, storage: pa.Array, col: Column) -> pa.Array:
        lengths = pc.fill_null(pc.binary_length(storage), 16).to_numpy(zero_copy_only=False)
        bad = lengths != 16
        storage = self._null_rows(storage, bad, col, "a UUID that is not 16 bytes")
        fixed = storage.cast(pa.binary(16))
        return _hex_strings(fixed, 16, dashes=_UUID_DASHES)

    def _date(self, arr: pa.Array, col: Column) -> pa.Array:
        ms = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        bad = (ms % _DAY_MS) != 0
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        if self._check(bad, col, "a date with a time of day"):
            valid = valid & ~bad
        days = (ms // _DAY_MS).astype(np.int32)
        return pa.array(days, type=pa.int32(), mask=~valid).view(pa.date32())

    def _decimal(self, storage: pa.Array, col: Column) -> pa.Array:
        assert isinstance(col.type, pa.Decimal128Type)
        precision, scale = col.type.precision, col.type.scale
        n = len(storage)
        valid = storage.is_valid().to_numpy(zero_copy_only=False)
        data = bytearray(16 * n)
        bad = np.zeros(n, dtype=bool)
        if n:
            words = np.frombuffer(
                storage.buffers()[1], dtype="<u8", count=2 * n, offset=16 * storage.offset
            ).reshape(n, 2)
            limit = 10**precision
            for i in np.flatnonzero(valid).tolist():
                unscaled = _bid_unscaled(int(words[i, 0]), int(words[i, 1]), scale)
                if unscaled is None or abs(unscaled) >= limit:
                    bad[i] = True
                    continue
                data[16 * i : 16 * i + 16] = unscaled.to_bytes(16, "little", signed=True)
        if self._check(bad, col, f"a decimal that does not fit {col.type}"):
            valid = valid & ~bad
        validity = pa.array(valid, type=pa.bool_()).buffers()[1]
        return pa.Array.from_buffers(
            col.type, n, [validity, pa.py_buffer(bytes(data))], null_count=int(n - valid.sum())
        )

    def _list(self, arr: pa.Array, col: Column) -> pa.Array:
        assert col.item is not None and col.type is not None
        values = arr.values
        converted = self.convert(values, col.item, None)
        if converted is values and arr.type == col.type:
            return arr
        mask = arr.is_null() if arr.null_count else None
        return pa.ListArray.from_arrays(arr.offsets, converted, type=col.type, mask=mask)

    def _struct(
        self, arr: pa.Array, col: Column, path: str | None, null_rows: np.ndarray | None
    ) -> pa.Array:
        assert col.type is not None
        children = [
            self.convert(
                arr.field(child.key), child, f"{path}.{child.key}" if path is not None else None
            )
            for child in col.children
        ]
        if path is None and children:
            # Inside an array the report cannot mark null elements; pymongoarrow reads
            # them as structs of nulls: an element whose fields are all null is null.
            null_rows = np.logical_and.reduce(
                [c.is_null().to_numpy(zero_copy_only=False) for c in children]
            )
        mask = None
        if null_rows is not None or arr.null_count:
            rows = arr.is_null().to_numpy(zero_copy_only=False)
            if null_rows is not None:
                rows = rows | null_rows
            mask = pa.array(rows, type=pa.bool_())
        return pa.StructArray.from_arrays(children, fields=list(col.type), mask=mask)


_OFFSETS: dict[int, np.ndarray] = {}


def _offsets(n: int, width: int) -> np.ndarray:
    """``0, width, 2 * width, ...`` (n + 1 values): a slice of a cached array when it fits."""
    cached = _OFFSETS.get(width)
    if cached is None or len(cached) <= n:
        if n >= 1 << 16:  # large: computing it is cheap next to the rest
            return np.arange(0, (n + 1) * width, width, dtype=np.int32)
        cached = np.arange(0, (1 << 16) * width + 1, width, dtype=np.int32)
        _OFFSETS[width] = cached
    return cached[: n + 1]


def _hex_strings(fixed: pa.Array, width: int, dashes: Sequence[int] = ()) -> pa.Array:
    """A fixed-size binary array as lowercase hex strings (one C-level ``bytes.hex``).

    >>> _hex_strings(pa.array([b"\\x01\\xab", None], pa.binary(2)), 2).to_pylist()
    ['01ab', None]
    """
    n = len(fixed)
    if n == 0:
        return pa.array([], type=pa.string())
    start = fixed.offset * width
    text = memoryview(fixed.buffers()[1])[start : start + n * width].hex().encode("ascii")
    out_width = 2 * width
    if dashes:
        chars = np.insert(
            np.frombuffer(text, dtype=np.uint8).reshape(n, out_width), dashes, ord("-"), axis=1
        )
        out_width += len(dashes)
        text = chars.tobytes()
    if n * out_width >= 2**31:
        raise PlanError(f"{n} ids do not fit one Arrow string array. Hint: use iter_batches()")
    offsets = _offsets(n, out_width)
    validity = None
    if fixed.null_count:
        validity = pa.array(fixed.is_valid(), type=pa.bool_()).buffers()[1]
    return pa.Array.from_buffers(
        pa.string(),
        n,
        [validity, pa.py_buffer(offsets), pa.py_buffer(text)],
        null_count=fixed.null_count,
    )


_COEFF_MASK = (1 << 49) - 1
_BIAS = 6176


def _bid_unscaled(low: int, high: int, scale: int) -> int | None:
    """A BSON Decimal128 (BID encoding) as an integer at ``scale``; None if it cannot be.

    >>> from bson import Decimal128
    >>> low, high = Decimal128("-12.5").bid[:8], Decimal128("-12.5").bid[8:]
    >>> _bid_unscaled(int.from_bytes(low, "little"), int.from_bytes(high, "little"), 2)
    -1250
    """
    negative = high >> 63
    if (high >> 61) & 0b11 == 0b11:
        if (high >> 59) & 0b11 == 0b11:  # infinity or NaN
            return None
        exponent = (high >> 47) & 0x3FFF
        coefficient = 0  # non-canonical: out of range coefficients are zero
    else:
        exponent = (high >> 49) & 0x3FFF
        coefficient = ((high & _COEFF_MASK) << 64) | low
    shift = exponent - _BIAS + scale
    if shift >= 0:
        unscaled = coefficient * 10**shift
    else:
        unscaled, rest = divmod(coefficient, 10**-shift)
        if rest:
            return None  # more fractional digits than the scale: never round
    return int(-unscaled if negative else unscaled)


# ------------------------------------------------------------------ error path
def _locate(
    source: _Source, plan: _ReadPlan, cause: str, keys: set[str] | None = None
) -> DocumentValidationError:
    """Find the first document that does not fit, and describe it.

    ``keys`` narrows the search to the top-level columns known to be at fault.
    """
    from bson.binary import UuidRepresentation
    from bson.codec_options import DatetimeConversion

    columns = [c for c in plan.columns if keys is None or c.key in keys] or list(plan.columns)
    projection = {c.key: 1 for c in columns}
    projection["_id"] = 1
    candidate = [check_expr("$" + c.key, c, full=True) for c in columns]
    found = [e for e in candidate if e is not None]
    match = [{"$match": {"$expr": {"$or": found}}}] if found else []
    # Decode anything: out-of-range dates as DatetimeMS, subtype-4 binaries as Binary.
    codec = CODEC_OPTIONS.with_options(
        datetime_conversion=DatetimeConversion.DATETIME_AUTO,
        uuid_representation=UuidRepresentation.UNSPECIFIED,
    )
    coll = source.collection.with_options(codec_options=codec)
    scope = source.scope()
    options = {k: v for k, v in source.options.items() if k == "collation"}
    with _server_errors(source):
        try:
            cursor = coll.aggregate([*scope, *match, {"$project": projection}], **options)
            docs = list(_first_problems(cursor, columns))
        except OperationFailure:  # the server cannot run the check: scan in Python
            cursor = coll.aggregate([*scope, {"$project": projection}], **options)
            docs = list(_first_problems(cursor, columns))
    if docs:
        doc_id, (path, value, col) = docs[0]
        if _computed_source(plan, path) is not None:
            what = f"holds {describe_value(value)}, expected {expected(col)}"
            return _computed_error(source, plan, path, what, doc_id)
        return DocumentValidationError(
            f"document _id={doc_id!r} in {source.namespace} does not fit {plan.name}: "
            f"field {path!r} holds {describe_value(value)}, expected {expected(col)}. "
            "Hint: fix the stored value, or load with on_invalid='null' to read values "
            "that do not fit as null."
        )
    if keys is not None:  # the suspects were innocent: look at every column
        return _locate(source, plan, cause)
    return DocumentValidationError(
        f"a document in {source.namespace} does not fit {plan.name} ({cause}); it could not "
        "be found again (changed meanwhile?). Hint: retry, or load with on_invalid='null'."
    )


def _computed_source(plan: _ReadPlan, path: str) -> str | None:
    """The expression MongoDB computed the top-level column of ``path`` with, if any."""
    top = path.split(".", 1)[0]
    for index, col in enumerate(plan.columns):
        if col.key == top:
            meta = plan.frame_schema.field(index).metadata or {}
            text = meta.get(COMPUTED_METADATA)
            return text.decode() if text is not None else None
    return None


def _computed_error(
    source: _Source, plan: _ReadPlan, path: str, what: str, doc_id: Any = None
) -> DocumentValidationError:
    """A computed value that does not fit its column: name the column and expression."""
    row = f"document _id={doc_id!r}" if doc_id is not None else "a result row"
    return DocumentValidationError(
        f"computed column {path!r} = {_computed_source(plan, path)} {what} (for {row}; "
        f"a query on {plan.name} in {source.namespace}). Hint: MongoDB computed this value, "
        "the stored documents are not at fault (an integer result beyond int64 becomes a "
        "double there, for example): change the expression, or load with "
        "on_invalid='null' to read such values as null."
    )


_EXPECTED_TYPE = re.compile(r"instead of expected type `(\w+)`|instead of expected (sub)type")
_KINDS_OF_BUILDER: dict[str, tuple[Kind, ...]] = {
    "int64": (Kind.INT, Kind.ENUM),
    "int32": (Kind.INT, Kind.ENUM),
    "double": (Kind.FLOAT, Kind.ENUM),
    "string": (Kind.STR, Kind.ENUM),
    "datetime": (Kind.DATETIME, Kind.DATE),
    "objectId": (Kind.OBJECTID,),
    "boolean": (Kind.BOOL,),
    "decimal128": (Kind.DECIMAL,),
    "binary": (Kind.UUID, Kind.ANY),
    "sub": (Kind.UUID, Kind.ANY),
}


def _suspects(plan: _ReadPlan, message: str) -> set[str] | None:
    """Top-level columns that hold the builder type pymongoarrow complained about."""
    found = _EXPECTED_TYPE.search(message)
    kinds = _KINDS_OF_BUILDER.get((found.group(1) or found.group(2)) if found else "")
    if kinds is None:
        return None

    def holds(col: Column) -> bool:
        if col.kind in kinds:
            return True
        return any(holds(c) for c in (*col.children, *(() if col.item is None else (col.item,))))

    return {c.key for c in plan.columns if holds(c)} or None


def _first_problems(
    docs: Any, columns: Sequence[Column]
) -> Iterator[tuple[Any, tuple[str, Any, Column]]]:
    with docs:
        for doc in docs:
            for col in columns:
                found = problem(doc.get(col.key, MISSING), col, col.name)
                if found is not None:
                    yield doc.get("_id"), found
                    return


# ----------------------------------------------------------------------- frames
def to_frame(table: pa.Table, backend: Backend = "pandas") -> Any:
    """An Arrow table as a pandas / Polars DataFrame, or the table itself.

    Polars goes through narwhals (``pl.from_arrow``: every type maps one to one). pandas
    uses ``Table.to_pandas`` with a types mapper so dtypes follow the schema, not the
    data: int64 -> ``Int64`` and bool -> ``boolean`` (nullable: no silent cast to float
    or object when a value is missing), timestamps -> ``datetime64[ms, UTC]``, strings ->
    pandas' string dtype, date32 -> ``datetime.date`` objects, decimals -> ``Decimal``
    objects, lists and structs -> objects.

    >>> import pyarrow as pa
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
