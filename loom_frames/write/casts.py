"""Casting a frame's columns to the model's storage types, safely or not at all.

Any integer -> int (uint64 overflow rejected), float -> int only for whole numbers,
int -> float only below 2**53 in magnitude (exact), dictionary/large/view strings ->
str (with StrLower/StrUpper applied, Python's own case rules), timestamps of any unit
-> UTC milliseconds (naive means UTC; floored to the millisecond), dates -> datetime at
midnight UTC, 24-hex strings / 12-byte binaries -> ObjectId bytes. Anything else is a
:class:`~loom_frames.errors.FrameValidationError` naming the column, the first bad row
and its value.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..columns import Column
from ..errors import FrameValidationError
from ..expr.bind import Kind
from ..fields import case_rule
from ..model import Persistable
from . import arrow_bson as ab

__all__ = ["Context", "datetimes", "first", "normalise", "object_ids", "storage_type"]

_DAY_MS = 86_400_000
_MAX_EXACT_FLOAT_INT = 2**53
_UNIT_MS = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 1_000_000)}


@dataclass(eq=False)
class Context:
    """The frame being checked against its model, and how to say what is wrong."""

    model: type[Persistable]
    table: pa.Table
    now: _dt.datetime

    @property
    def now_ms(self) -> int:
        return int(self.now.timestamp() * 1000)

    def fail(self, col: Column, source: str, row: int, why: str, hint: str = "") -> None:
        value = self.table.column(source)[row].as_py()
        raise FrameValidationError(
            f"{self.model.__name__}.{col.name}: column {source!r} row {row} holds "
            f"{value!r}: {why}." + (f" Hint: {hint}" if hint else "")
        )

    def fail_type(self, col: Column, source: str, got: pa.DataType, accepted: str) -> None:
        raise FrameValidationError(
            f"{self.model.__name__}.{col.name}: column {source!r} is {got}, expected "
            f"{_expected(col)} ({accepted}). Hint: cast the column to the model's type."
        )


def normalise(ctx: Context, col: Column, source: str, arr: pa.Array) -> pa.Array:
    t = col.type
    assert t is not None
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), storage_type(col))
    if col.kind is Kind.OBJECTID:
        ids, valid = object_ids(ctx, col, source, arr)
        return pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(12), len(arr),
            [pa.array(valid).buffers()[1] if not valid.all() else None, pa.py_buffer(ids)],
        )
    if col.kind in (Kind.DATETIME, Kind.DATE):
        return datetimes(ctx, col, source, arr)
    if pa.types.is_string(t):
        out = _strings(ctx, col, source, arr)
    elif pa.types.is_int64(t):
        out = _ints(ctx, col, source, arr)
    elif pa.types.is_float64(t):
        out = _floats(ctx, col, source, arr)
    else:
        if not pa.types.is_boolean(arr.type):
            ctx.fail_type(col, source, arr.type, "bool")
        out = arr
    if col.values is not None:
        allowed = pa.array(list(col.values), type=out.type)
        bad = pc.invert(pc.fill_null(pc.is_in(out, value_set=allowed), True))
        if pc.any(bad).as_py():
            ctx.fail(col, source, first(bad), f"not one of {', '.join(map(repr, col.values))}")
    return out


def storage_type(col: Column) -> pa.DataType:
    if col.kind is Kind.OBJECTID:
        return pa.binary(12)
    if col.kind in (Kind.DATETIME, Kind.DATE):
        return pa.timestamp("ms", tz="UTC")
    assert col.type is not None
    return pa.large_string() if pa.types.is_string(col.type) else col.type


def _strings(ctx: Context, col: Column, source: str, arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)):
        ctx.fail_type(col, source, arr.type, "string, large_string, string_view or a "
                      "dictionary of strings")
    out = arr.cast(pa.large_string())
    rule = case_rule(col.role)
    if rule is not None:
        out = _case(out, pc.utf8_lower if rule("A") == "a" else pc.utf8_upper, rule)
    return out


def _case(arr: pa.Array, vectorised: Callable[..., Any], python: Callable[[str], str]) -> pa.Array:
    """Arrow's case mapping where the text is ASCII, Python's (the model's) elsewhere."""
    out = vectorised(arr)
    ascii_ = pc.fill_null(pc.string_is_ascii(arr), True)
    if pc.all(ascii_).as_py():
        return out
    mask = pc.invert(ascii_)
    fixed = [python(s) for s in arr.filter(mask).to_pylist()]
    return pc.replace_with_mask(out, mask, pa.array(fixed, type=pa.large_string()))


def _ints(ctx: Context, col: Column, source: str, arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_integer(t):
        if pa.types.is_uint64(t):
            too_big = pc.fill_null(pc.greater(arr, pa.scalar(2**63 - 1, t)), False)
            if pc.any(too_big).as_py():
                ctx.fail(col, source, first(too_big), "larger than int64 holds")
        return arr.cast(pa.int64())
    if pa.types.is_floating(t):
        values = arr.cast(pa.float64())
        whole = pc.and_(pc.is_finite(values), pc.equal(pc.floor(values), values))
        limit = pc.less(pc.abs(values), float(2**63))
        bad = pc.invert(pc.fill_null(pc.and_(whole, limit), True))
        if pc.any(bad).as_py():
            ctx.fail(col, source, first(bad), "not a whole number that int64 holds",
                     "round the column, or declare the field float")
        return values.cast(pa.int64(), safe=False)
    ctx.fail_type(col, source, t, "any integer type, or floats holding whole numbers")
    raise AssertionError  # unreachable


def _floats(ctx: Context, col: Column, source: str, arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_floating(t):
        return arr.cast(pa.float64())
    if pa.types.is_integer(t):
        approx = pc.abs(arr.cast(pa.float64(), safe=False))
        inexact = pc.fill_null(pc.greater_equal(approx, float(_MAX_EXACT_FLOAT_INT)), False)
        if pc.any(inexact).as_py():
            ctx.fail(col, source, first(inexact), "an integer beyond +-2**53, where float64 "
                     "stops holding every integer exactly", "cast the column to float first")
        return arr.cast(pa.float64())
    ctx.fail_type(col, source, t, "float or integer types")
    raise AssertionError


def datetimes(ctx: Context, col: Column, source: str, arr: pa.Array) -> pa.Array:
    """Any timestamp (naive = UTC) or date -> timestamp[ms, UTC], floored to the ms."""
    t = arr.type
    out_type = pa.timestamp("ms", tz="UTC")
    if pa.types.is_null(t):
        return pa.nulls(len(arr), out_type)
    valid = arr.is_valid()
    if pa.types.is_timestamp(t):
        ints = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        multiply, divide = _UNIT_MS[t.unit]
        ms = ints * multiply if multiply != 1 else np.floor_divide(ints, divide)
    elif pa.types.is_date32(t):
        ms = pc.fill_null(arr.cast(pa.int32()), 0).to_numpy(zero_copy_only=False).astype(np.int64) * _DAY_MS
    elif pa.types.is_date64(t):
        ms = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    else:
        ctx.fail_type(col, source, t, "timestamp of any unit/zone, or date")
        raise AssertionError
    if col.kind is Kind.DATE:
        if not pa.types.is_date(t):
            ctx.fail_type(col, source, t, "date32 or date64")
        off_midnight = pa.array((ms % _DAY_MS) != 0) if len(ms) else pa.array([], pa.bool_())
        bad = pc.and_(valid, off_midnight)
        if pc.any(bad).as_py():
            ctx.fail(col, source, first(bad), "a date with a time of day")
    mask = None if arr.null_count == 0 else ~valid.to_numpy(zero_copy_only=False)
    return pa.array(ms, type=pa.int64(), mask=mask).cast(out_type)


def object_ids(ctx: Context, col: Column, source: str, arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(n, 12) id bytes and the valid mask from hex strings or 12-byte binaries."""
    t = arr.type
    if pa.types.is_null(t):
        return np.zeros((len(arr), 12), np.uint8), np.zeros(len(arr), bool)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_dictionary(t):
        arr, t = arr.cast(t.value_type), t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        ids, bad = ab.hex_object_ids(arr)
        if bad.any():
            ctx.fail(col, source, int(np.flatnonzero(bad)[0]),
                     "not an ObjectId (24 hexadecimal characters)")
        return ids, valid
    if (pa.types.is_fixed_size_binary(t) and t.byte_width == 12) or pa.types.is_binary(t):
        lengths = pc.fill_null(pc.binary_length(arr), 12).to_numpy(zero_copy_only=False)
        if (lengths != 12).any():
            ctx.fail(col, source, int(np.flatnonzero(lengths != 12)[0]), "not 12 bytes")
        filled = pc.fill_null(arr.cast(pa.binary(12)), pa.scalar(b"\x00" * 12, pa.binary(12)))
        data = np.frombuffer(filled.buffers()[1], np.uint8, count=12 * len(arr),
                             offset=12 * filled.offset)
        return data.reshape(len(arr), 12).copy(), valid
    ctx.fail_type(col, source, t, "24-hex strings, 12-byte binaries or ObjectIds")
    raise AssertionError


def first(mask: Any) -> int:
    values = mask.to_numpy(zero_copy_only=False) if not isinstance(mask, np.ndarray) else mask
    return int(np.flatnonzero(values)[0])


def _expected(col: Column) -> str:
    return {Kind.OBJECTID: "ObjectId"}.get(col.kind, col.kind.value) + (
        f" ({col.type})" if col.type is not None else ""
    )
