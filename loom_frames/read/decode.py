"""Raw BSON -> Arrow: pymongoarrow decodes, then columns become the frame types.

A :class:`ReadPlan` is derived once from a command's columns (no Arrow schema round
trip): the pymongoarrow schema of storage types (ObjectId, Decimal128, binary UUID, ...),
and the frame schema. :func:`decode` turns one raw batch into storage arrays, always with
``allow_invalid=True``: pymongoarrow never raises, a value of the wrong type comes back
null, and :mod:`.validity` decides, from the same raw batch, what each such row held.
:func:`convert` then turns a storage array into its frame type (ObjectId -> 24-char hex
string, UUID -> 36-char string, Decimal128 -> ``decimal128(p, s)``, date -> ``date32``,
int64 -> the column's integer width) and nominates the rows whose stored value it could
not represent (a decimal beyond its scale, a date with a time of day, ...).

>>> import pyarrow as pa
>>> _hex_strings(pa.array([b"\\x01\\xab", None], pa.binary(2)), 2).to_pylist()
['01ab', None]
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..columns import Column
from ..errors import PlanError
from ..expr.bind import Kind
from ..expr.dtypes import COMPUTED_METADATA

__all__ = ["ReadPlan", "convert", "decode", "read_plan", "storage_type"]

_UUID_DASHES = [8, 12, 16, 20]
_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True, eq=False)
class ReadPlan:
    """What reading a command's result needs, derived once from its columns."""

    columns: tuple[Column, ...]
    frame_schema: pa.Schema
    storage: Any  # pymongoarrow.schema.Schema of the typed columns' storage keys
    name: str  # the model's name, or "db.collection", for messages
    computed: dict[str, str]  # column name -> the expression MongoDB computed it with

    @property
    def free_form(self) -> bool:
        """True when some column is free-form (filled from the decoded documents)."""
        return any(col.free_form for col in self.columns)


@functools.lru_cache(maxsize=256)
def read_plan(
    columns: tuple[Column, ...], name: str, computed: tuple[tuple[str, str], ...] = ()
) -> ReadPlan:
    """The (cached) read plan of a result's columns. A model's columns are one cached
    tuple, so every load of a model finds its plan at once (by identity).

    >>> from loom_frames.schema import columns_from_arrow
    >>> plan = read_plan(columns_from_arrow(pa.schema({"a": pa.int64()})), "T")
    >>> plan.frame_schema.names, plan.storage.typemap
    (['a'], {'a': DataType(int64)})
    """
    from pymongoarrow.schema import Schema

    keys = [c.key for c in columns]
    if len(set(keys)) != len(keys):
        raise PlanError(f"{name}: columns must have distinct storage keys, got {keys}")
    sources = dict(computed)
    fields = []
    for col in columns:
        field = col.arrow_field()
        if col.name in sources:
            field = field.with_metadata(
                {**(field.metadata or {}), COMPUTED_METADATA: sources[col.name].encode()}
            )
        fields.append(field)
    frame_schema = pa.schema(fields, metadata={b"loom.model": name.encode()})
    typemap = {c.key: storage_type(c) for c in columns if not c.free_form}
    return ReadPlan(columns, frame_schema, Schema(typemap), name, sources)


def storage_type(col: Column) -> pa.DataType:
    """The type pymongoarrow reads a column's stored values into.

    >>> from loom_frames.columns import Column
    >>> storage_type(Column("n", "n", Kind.INT, pa.uint32()))
    DataType(int64)
    """
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
        return pa.list_(storage_type(col.item))
    if kind is Kind.STRUCT:
        return pa.struct([(c.key, storage_type(c)) for c in col.children])
    assert col.type is not None
    if pa.types.is_timestamp(col.type):
        return pa.timestamp("ms", tz=col.type.tz)
    if pa.types.is_integer(col.type):  # uint32 counts, int8 date parts: cast after reading
        return pa.int64()
    return col.type


def decode(raw: bytes, plan: ReadPlan) -> pa.Table:
    """One raw BSON batch as a table of storage arrays (one chunk per column). A value
    of the wrong type is null (``allow_invalid``): :mod:`.validity` looks at those rows."""
    from pymongoarrow.context import PyMongoArrowContext

    context = PyMongoArrowContext(plan.storage, allow_invalid=True)
    context.process_bson_stream(raw)
    return context.finish()


def array(column: pa.ChunkedArray) -> pa.Array:
    """A column's one chunk (or its chunks combined)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


# ------------------------------------------------------------------------ conversion
Nominated = np.ndarray | None
"""Rows whose stored value a conversion could not represent (None: no such row)."""


def convert(arr: pa.Array, col: Column) -> tuple[pa.Array, Nominated]:
    """A storage array as the column's frame type, and the rows it could not represent
    (their cells are null; :mod:`.validity` decides what they held).

    >>> from loom_frames.columns import Column
    >>> out, bad = convert(pa.array([1, 300]), Column("n", "n", Kind.INT, pa.int8()))
    >>> out.to_pylist(), bad.tolist()
    ([1, None], [False, True])
    """
    kind = col.kind
    if kind is Kind.OBJECTID:
        return _hex_strings(arr.storage, 12), None
    if kind is Kind.UUID:
        return _uuid(arr.storage)
    if kind is Kind.DECIMAL:
        return _decimal(arr.storage, col)
    if kind is Kind.DATE:
        return _date(arr)
    if kind is Kind.LIST:
        return _list(arr, col)
    if kind is Kind.STRUCT:
        return _struct(arr, col)
    if col.binary:
        return arr.storage.cast(pa.binary()), None
    if col.type is not None and arr.type != col.type and pa.types.is_integer(arr.type):
        return _integer(arr, col)
    return arr, None


def _null_where(arr: pa.Array, bad: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(bad), pa.scalar(None, arr.type), arr) if bad.any() else arr


def _integer(arr: pa.Array, col: Column) -> tuple[pa.Array, Nominated]:
    """int64 as read -> the column's integer type (uint32 counts, int8 date parts)."""
    assert col.type is not None
    info = np.iinfo(col.type.to_pandas_dtype())
    values = pc.fill_null(arr, 0).to_numpy(zero_copy_only=False)
    bad = (values < info.min) | (values > info.max)
    return _null_where(arr, bad).cast(col.type), bad if bad.any() else None


def _uuid(storage: pa.Array) -> tuple[pa.Array, Nominated]:
    lengths = pc.fill_null(pc.binary_length(storage), 16).to_numpy(zero_copy_only=False)
    bad = lengths != 16
    fixed = _null_where(storage, bad).cast(pa.binary(16))
    return _hex_strings(fixed, 16, dashes=_UUID_DASHES), bad if bad.any() else None


def _date(arr: pa.Array) -> tuple[pa.Array, Nominated]:
    ms = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    bad = (ms % _DAY_MS) != 0
    valid = arr.is_valid().to_numpy(zero_copy_only=False) & ~bad
    days = (ms // _DAY_MS).astype(np.int32)
    out = pa.array(days, type=pa.int32(), mask=~valid).view(pa.date32())
    return out, bad if bad.any() else None


def _decimal(storage: pa.Array, col: Column) -> tuple[pa.Array, Nominated]:
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
    valid &= ~bad
    validity = pa.array(valid, type=pa.bool_()).buffers()[1]
    out = pa.Array.from_buffers(
        col.type, n, [validity, pa.py_buffer(bytes(data))], null_count=int(n - valid.sum())
    )
    return out, bad if bad.any() else None


def _list(arr: pa.Array, col: Column) -> tuple[pa.Array, Nominated]:
    assert col.item is not None and col.type is not None
    values = arr.values
    converted, bad = convert(values, col.item)
    rows = _parents(arr, bad)
    if converted is values and arr.type == col.type:
        return arr, rows
    mask = arr.is_null() if arr.null_count else None
    out = pa.ListArray.from_arrays(arr.offsets, converted, type=col.type, mask=mask)
    return out, rows


def _parents(arr: pa.ListArray, elements: Nominated) -> Nominated:
    """The rows of a list array holding any of the ``elements`` (a mask of its values)."""
    if elements is None:
        return None
    return parent_rows(arr, np.flatnonzero(elements))


def parent_rows(arr: pa.ListArray, elements: np.ndarray) -> np.ndarray:
    """A row mask of the list array ``arr`` (not sliced): the rows holding the
    ``elements`` (positions in ``arr.values``)."""
    offsets = arr.offsets.to_numpy(zero_copy_only=False)
    rows = np.zeros(len(arr), dtype=bool)
    # pymongoarrow may leave values past the last offset (a null for no element at all)
    elements = elements[(elements >= offsets[0]) & (elements < offsets[-1])]
    rows[np.searchsorted(offsets, elements, side="right") - 1] = True
    return rows


def _struct(arr: pa.Array, col: Column) -> tuple[pa.Array, Nominated]:
    assert col.type is not None
    children = []
    nominated: Nominated = None
    for child in col.children:
        converted, bad = convert(arr.field(child.key), child)
        children.append(converted)
        if bad is not None:
            nominated = bad if nominated is None else nominated | bad
    mask = arr.is_null() if arr.null_count else None
    out = pa.StructArray.from_arrays(children, fields=list(col.type), mask=mask)
    return out, nominated


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
    """A fixed-size binary array as lowercase hex strings (one C-level ``bytes.hex``)."""
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
