"""Arrow columns -> BSON bytes, vectorised: the encoder behind ``insert_dataframe``.

A BSON document is ``int32 length, elements..., 0x00`` and an element is ``type byte,
key, 0x00, value``. For the scalar types a frame holds (int, float, bool, datetime,
string, ObjectId) every element of a column has the same header and a value that
numpy/Arrow can lay out for all rows at once, so a batch of documents is built by
concatenating per-column element arrays row-wise (``binary_join_element_wise``), never
one Python dict per row. The bytes are exactly those ``bson.encode`` produces for the
same values (ints that fit int32 are stored as int32, as pymongo does).

>>> import bson
>>> name = string_elements("name", pa.array(["Bob"]))
>>> age = int_elements("age", pa.array([25]))
>>> docs = join_documents([name, age])
>>> bson.decode(docs[0].as_py())
{'name': 'Bob', 'age': 25}
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import bson
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "BSON_BOOL",
    "BSON_DATETIME",
    "BSON_DOUBLE",
    "BSON_OBJECTID",
    "bool_elements",
    "constant_element",
    "datetime_elements",
    "document_lengths",
    "double_elements",
    "element_header",
    "fill_null_elements",
    "hex_object_ids",
    "int_elements",
    "join_documents",
    "new_object_ids",
    "object_id_elements",
    "object_id_hex",
    "string_elements",
]

BSON_DOUBLE = 0x01
BSON_STRING = 0x02
BSON_OBJECTID = 0x07
BSON_BOOL = 0x08
BSON_DATETIME = 0x09
BSON_INT32 = 0x10
BSON_INT64 = 0x12

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
_BINARY = pa.large_binary()
_EMPTY = pa.scalar(b"", _BINARY)
_TERMINATOR = pa.scalar(b"\x00", _BINARY)


# --------------------------------------------------------------------- elements
def element_header(type_byte: int, key: str) -> bytes:
    """The bytes before an element's value: type, key, NUL.

    >>> element_header(BSON_INT32, "age")
    b'\\x10age\\x00'
    """
    return bytes([type_byte]) + key.encode("utf-8") + b"\x00"


def constant_element(key: str, value: Any, codec_options: Any = None) -> bytes:
    """One element encoded by ``bson.encode`` (for defaults, nulls and odd types).

    >>> constant_element("n", None)
    b'\\nn\\x00'
    """
    doc = bson.encode({key: value}, codec_options=codec_options or bson.DEFAULT_CODEC_OPTIONS)
    return doc[4:-1]


def fixed_elements(header: bytes, payload: np.ndarray) -> pa.Array:
    """Elements of one fixed width: ``header`` then each row of ``payload`` (n x w uint8).

    >>> fixed_elements(b"\\x08b\\x00", np.array([[1], [0]], np.uint8)).to_pylist()
    [b'\\x08b\\x00\\x01', b'\\x08b\\x00\\x00']
    """
    n, w = payload.shape
    width = len(header) + w
    block = np.empty((n, width), dtype=np.uint8)
    block[:, : len(header)] = np.frombuffer(header, dtype=np.uint8)
    block[:, len(header) :] = payload
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    return pa.Array.from_buffers(
        _BINARY, n, [None, pa.py_buffer(offsets), pa.py_buffer(block)]
    )


def _bytes_of(values: np.ndarray, dtype: str) -> np.ndarray:
    """Little-endian bytes of ``values`` as an (n, itemsize) uint8 array."""
    arr = np.ascontiguousarray(values, dtype=np.dtype(dtype))
    return arr.view(np.uint8).reshape(len(arr), arr.itemsize)


def _with_nulls(elements: pa.Array, source: pa.Array) -> pa.Array:
    """Null where ``source`` is null (the caller fills those rows)."""
    if source.null_count == 0:
        return elements
    return pc.if_else(source.is_valid(), elements, pa.scalar(None, _BINARY))


def int_elements(key: str, arr: pa.Array) -> pa.Array:
    """int64 values as int32 elements where they fit, int64 elsewhere (as pymongo does).

    >>> [bson.decode(b"\\x00" * 4 + e + b"\\x00")["i"] for e in int_elements("i", pa.array([1, 2**40])).to_pylist()]  # doctest: +SKIP
    [1, 1099511627776]
    """
    values = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    fits = (values >= _INT32_MIN) & (values <= _INT32_MAX)
    if fits.all():
        out = fixed_elements(element_header(BSON_INT32, key), _bytes_of(values, "<i4"))
    elif not fits.any():
        out = fixed_elements(element_header(BSON_INT64, key), _bytes_of(values, "<i8"))
    else:
        small = fixed_elements(
            element_header(BSON_INT32, key), _bytes_of(np.where(fits, values, 0), "<i4")
        )
        large = fixed_elements(element_header(BSON_INT64, key), _bytes_of(values, "<i8"))
        out = pc.if_else(pa.array(fits), small, large)
    return _with_nulls(out, arr)


def double_elements(key: str, arr: pa.Array) -> pa.Array:
    """float64 values (NaN stays NaN) as double elements."""
    values = pc.fill_null(arr.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
    return _with_nulls(fixed_elements(element_header(BSON_DOUBLE, key), _bytes_of(values, "<f8")), arr)


def bool_elements(key: str, arr: pa.Array) -> pa.Array:
    """bool values as boolean elements."""
    values = pc.fill_null(arr, False).to_numpy(zero_copy_only=False).astype(np.uint8)
    return _with_nulls(fixed_elements(element_header(BSON_BOOL, key), values.reshape(-1, 1)), arr)


def datetime_elements(key: str, arr: pa.Array) -> pa.Array:
    """``timestamp[ms]`` values (UTC milliseconds) as datetime elements."""
    values = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    return _with_nulls(
        fixed_elements(element_header(BSON_DATETIME, key), _bytes_of(values, "<i8")), arr
    )


def object_id_elements(key: str, arr: pa.Array) -> pa.Array:
    """``fixed_size_binary(12)`` values as ObjectId elements."""
    n = len(arr)
    if arr.null_count:
        filled = pc.fill_null(arr, pa.scalar(b"\x00" * 12, pa.binary(12)))
    else:
        filled = arr
    data = filled.buffers()[1]
    block = np.frombuffer(data, dtype=np.uint8, count=12 * n, offset=12 * filled.offset)
    return _with_nulls(
        fixed_elements(element_header(BSON_OBJECTID, key), block.reshape(n, 12)), arr
    )


def string_elements(key: str, arr: pa.Array) -> pa.Array:
    """UTF-8 strings as string elements (``int32 length incl. NUL, bytes, NUL``)."""
    text = arr.cast(pa.large_string()).cast(_BINARY)
    lengths = pc.fill_null(pc.binary_length(text), 0).to_numpy(zero_copy_only=False) + 1
    prefix = fixed_elements(element_header(BSON_STRING, key), _bytes_of(lengths, "<i4"))
    return pc.binary_join_element_wise(prefix, text, _TERMINATOR, _EMPTY)


def fill_null_elements(elements: pa.Array, fill: bytes) -> pa.Array:
    """Rows whose element is null get ``fill`` (a constant element, or ``b""`` to omit)."""
    if elements.null_count == 0:
        return elements
    return pc.fill_null(elements, pa.scalar(fill, _BINARY))


# -------------------------------------------------------------------- documents
def document_lengths(elements: Sequence[pa.Array]) -> np.ndarray:
    """The BSON size of each row's document (int64): 4 + elements + 1."""
    total = np.full(len(elements[0]) if elements else 0, 5, dtype=np.int64)
    for arr in elements:
        total += pc.binary_length(arr).to_numpy(zero_copy_only=False)
    return total


def join_documents(elements: Sequence[pa.Array], lengths: np.ndarray | None = None) -> pa.Array:
    """One BSON document per row: the length prefix, the row's elements, NUL.

    No element may be null (fill them first). Returns a ``large_binary`` array.
    """
    if lengths is None:
        lengths = document_lengths(elements)
    prefix = fixed_elements(b"", _bytes_of(lengths, "<i4"))
    return pc.binary_join_element_wise(prefix, *elements, _TERMINATOR, _EMPTY)


# -------------------------------------------------------------------- ObjectIds
_oid_lock = threading.Lock()
_oid_state: dict[str, Any] = {"pid": None, "random": b"", "counter": 0}


def new_object_ids(n: int) -> np.ndarray:
    """``n`` new ObjectIds as an (n, 12) uint8 array, increasing in order.

    Built as the ObjectId spec says: 4-byte seconds, a 5-byte random value of this
    process (regenerated after a fork), a 3-byte counter. Distinct from pymongo's own ids
    (another random value), unique across calls; more than 2**24 ids in one call use a
    fresh random value per 2**24.

    >>> from bson import ObjectId
    >>> a, b = new_object_ids(2)
    >>> ObjectId(bytes(a)) < ObjectId(bytes(b))
    True
    """
    out = np.empty((n, 12), dtype=np.uint8)
    start = 0
    while start < n:
        count = min(n - start, 2**24)
        with _oid_lock:
            state = _oid_state
            if state["pid"] != os.getpid() or state["counter"] + count > 2**24:
                state["pid"] = os.getpid()
                state["random"] = os.urandom(5)
                state["counter"] = int.from_bytes(os.urandom(2), "big")  # < 2**16
                if state["counter"] + count > 2**24:
                    state["counter"] = 0
            first = state["counter"]
            state["counter"] = first + count
            rand = state["random"]
        block = out[start : start + count]
        block[:, 0:4] = np.frombuffer(int(time.time()).to_bytes(4, "big"), dtype=np.uint8)
        block[:, 4:9] = np.frombuffer(rand, dtype=np.uint8)
        counters = np.arange(first, first + count, dtype=">u4")
        block[:, 9:12] = counters.view(np.uint8).reshape(count, 4)[:, 1:]
        start += count
    return out


_HEX_VALUE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX_VALUE[_c] = 10 + _i


def hex_object_ids(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """24-hex strings -> ((n, 12) uint8 ids, bool mask of rows that are not valid hex).

    Null rows are neither: their id bytes are zero and they are not flagged.

    >>> ids, bad = hex_object_ids(pa.array(["64f8a0000000000000000001", "xyz", None]))
    >>> bytes(ids[0]).hex(), bad.tolist()
    ('64f8a0000000000000000001', [False, True, False])
    """
    n = len(strings)
    text = strings.cast(pa.large_string()).cast(_BINARY)
    lengths = pc.binary_length(text).to_numpy(zero_copy_only=False)
    valid = text.is_valid().to_numpy(zero_copy_only=False)
    bad = valid & (np.nan_to_num(lengths, nan=24) != 24)
    good = pc.if_else(pa.array(valid & ~bad), text, pa.scalar(b"0" * 24, _BINARY))
    good = good.combine_chunks() if isinstance(good, pa.ChunkedArray) else good
    offsets = np.frombuffer(good.buffers()[1], dtype=np.int64, count=n + 1, offset=8 * good.offset)
    data = np.frombuffer(good.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[0] + 24 * n]
    nibbles = _HEX_VALUE[data.reshape(n, 24)]
    bad |= (nibbles == 255).any(axis=1)
    nibbles = np.where(nibbles == 255, 0, nibbles)
    ids = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    ids[~valid | bad] = 0
    return ids.astype(np.uint8), bad


def object_id_hex(ids: np.ndarray) -> pa.Array:
    """(n, 12) uint8 ids as a ``string`` array of 24-char lowercase hex.

    >>> object_id_hex(np.zeros((1, 12), np.uint8)).to_pylist()
    ['000000000000000000000000']
    """
    n = len(ids)
    text = np.ascontiguousarray(ids).tobytes().hex().encode("ascii")
    offsets = np.arange(0, (n + 1) * 24, 24, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text)]
    )
