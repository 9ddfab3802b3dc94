"""Values that do not fit, found on the client in the raw BSON it already holds.

pymongoarrow decodes with ``allow_invalid=True``: a value of the wrong type comes back
null. A few it converts instead of refusing: a double with a fraction in an integer
column is truncated, a non-array in a list column becomes an empty list, a non-document in
a struct column a struct of nulls, a value outside an enum's values loads as it is; and a
NaN double is null everywhere, also in float columns. So the rows that need a second look
are few, and known without looking at the others:

* a cell that came back **null** (or an empty list, or a struct whose fields are all null);
* a cell whose conversion failed (a decimal beyond its scale, a date with a time of day);
* an integer column whose key appears in the batch holding a **double** with a fraction
  or beyond int64 (found by searching the raw bytes for the element header
  ``\\x01<key>\\x00`` and reading those doubles, vectorised);
* an enum cell outside its values.

A byte-level look settles the common cases at once (the key is absent from the document,
or held once as null or as an empty array). The rest is decoded (that document only) and
held to the one rule, :func:`loom_frames.codec.fits`: a value that fits is written into
the frame as it is (a NaN restored, an empty sub-document kept), one that does not raises
:class:`~loom_frames.errors.DocumentValidationError` naming the model, the field, the
document's ``_id`` and the value, or with ``on_invalid="null"`` is null (the smallest value
that does not fit: an element of a list, a field of a sub-document).

>>> import pyarrow as pa
>>> from loom_frames.schema import columns_from_arrow
>>> (n,) = columns_from_arrow(pa.schema({"n": pa.int64()}))
>>> problems = []
>>> frame_value(2.0, n, "n", problems), frame_value(2.5, n, "n", problems), problems[0][:2]
(2, None, ('n', 2.5))
"""

from __future__ import annotations

import datetime as _dt
import functools
import re
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import bson
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from bson import Binary, DatetimeMS
from bson.binary import UuidRepresentation

from ..codec import (
    ABSENT,
    base_kind,
    describe_value,
    expected,
    fits,
    is_nan,
    json_text,
    misfit_message,
)
from ..columns import Column
from ..errors import DocumentValidationError
from ..expr.bind import Kind
from .cursor import PERMISSIVE, uuids
from .decode import ReadPlan, parent_rows

__all__ = [
    "Misfit",
    "OnInvalid",
    "RawBatch",
    "check_on_invalid",
    "frame_value",
    "misfit_error",
    "settle",
]

OnInvalid = Literal["raise", "null"]


_INT64_LIMIT = 2.0**63
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_DAY_MS = 86_400_000
_DOUBLE_ELEMENT = re.compile(rb"\x01[0-9]+\x00")  # a double in an array (keys are digits)


def check_on_invalid(on_invalid: str) -> None:
    """Reject anything but ``"raise"`` and ``"null"`` (before any work starts)."""
    from ..errors import did_you_mean

    if on_invalid not in ("raise", "null"):
        raise ValueError(
            f"on_invalid must be 'raise' or 'null', got {on_invalid!r}"
            + did_you_mean(str(on_invalid), ["raise", "null"])
        )


# ---------------------------------------------------------------------- raw batches
class RawBatch:
    """One server reply: row -> document bytes (walked once, when first needed), and
    documents decoded one at a time (or all, for free-form columns)."""

    __slots__ = ("_docs", "_starts", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._starts: np.ndarray | None = None
        self._docs: dict[int, dict[str, Any]] = {}

    def starts(self) -> np.ndarray:
        """The byte offset of each document, and the end of the batch."""
        if self._starts is None:
            raw, out, pos, end = self.raw, [], 0, len(self.raw)
            unpack = struct.Struct("<i").unpack_from
            while pos < end:
                out.append(pos)
                pos += unpack(raw, pos)[0]
            out.append(end)
            self._starts = np.array(out, dtype=np.int64)
        return self._starts

    def bytes_of(self, row: int) -> bytes:
        starts = self.starts()
        return self.raw[int(starts[row]) : int(starts[row + 1])]

    def doc(self, row: int) -> dict[str, Any]:
        found = self._docs.get(row)
        if found is None:
            found = bson.decode(self.bytes_of(row), codec_options=PERMISSIVE)
            self._docs[row] = found
        return found

    def docs(self) -> list[dict[str, Any]]:
        return [uuids(doc) for doc in bson.decode_all(self.raw, codec_options=PERMISSIVE)]

    def rows_at(self, positions: np.ndarray) -> np.ndarray:
        """The rows whose documents hold the byte ``positions``."""
        return np.searchsorted(self.starts(), positions, side="right") - 1


# ---------------------------------------------------------------------- suspects
# How a suspect cell is settled: _ABSENT / _EMPTY by a look at its document's bytes
# (see _quick), _FULL by decoding it; _NULL is settled already (the cell becomes null).
_ABSENT, _EMPTY, _FULL, _NULL = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class _Check:
    mask: np.ndarray  # rows to look at
    test: int  # _ABSENT / _EMPTY: a byte-level look may settle it; _FULL: decode
    key: bytes  # the key's bytes and NUL (b"age\x00")
    nulls_cell: bool = False  # settled as absent, the cell must become null (a struct)


def _checks(arr: pa.Array, col: Column, raw: bytes | None, *, top: bool) -> list[_Check]:
    """The suspect rows of one storage array (a column, or a struct field outside
    lists; ``raw`` None inside lists), with how each kind can be settled."""
    key = col.key.encode() + b"\x00"
    out: list[_Check] = []
    n = len(arr)
    if col.kind is Kind.STRUCT:
        children = [arr.field(c.key) for c in col.children]
        hollow = np.logical_and.reduce(
            [c.is_null().to_numpy(zero_copy_only=False) for c in children]
        ) if children else np.ones(n, dtype=bool)
        if hollow.any():
            if top and raw is not None and _all_absent(raw, key, n, int(hollow.sum())):
                out.append(_Check(hollow, _NULL, key))  # sparse: missing sub-documents
            else:
                out.append(_Check(hollow, _ABSENT if top else _FULL, key, nulls_cell=True))
        for child_arr, child in zip(children, col.children, strict=True):
            out.extend(_checks(child_arr, child, raw, top=False))
        return out
    if arr.null_count and not (raw is not None and _all_absent(raw, key, n, arr.null_count)):
        out.append(_Check(arr.is_null().to_numpy(zero_copy_only=False), _ABSENT, key))
    if col.kind is Kind.LIST:
        assert col.item is not None
        lengths = pc.fill_null(pc.list_value_length(arr), -1)
        empty = lengths.to_numpy(zero_copy_only=False) == 0
        if empty.any():
            out.append(_Check(empty, _EMPTY, key))
        inner = _element_suspects(arr.values, col.item)
        if inner is not None:
            out.append(_Check(parent_rows(arr, np.flatnonzero(inner)), _FULL, key))
        return out
    outside = _outside_values(arr, col)
    if outside is not None:
        out.append(_Check(outside, _FULL, key))
    return out


def _all_absent(raw: bytes, key: bytes, rows: int, nulls: int) -> bool:
    """True when each of the ``nulls`` null cells (of ``rows``) is missing or null in the
    batch ``raw``, decided from two counts over the batch instead of a look per row
    (when there are many: a sparse field). Each other cell holds its key once; if the
    key occurs no more often than that, apart from null elements, no null cell holds a
    value.
    """
    if nulls * 750 <= len(raw):  # few: the rows' own looks are cheaper
        return False
    others = raw.count(key) - raw.count(b"\x0a" + key)
    return others == rows - nulls


def _element_suspects(values: pa.Array, col: Column) -> np.ndarray | None:
    """Elements of a list needing a look (any kind: only decoding can settle them)."""
    found = [c.mask for c in _checks(values, col, None, top=False)]
    if not found:
        return None
    return np.logical_or.reduce(found)


def _outside_values(arr: pa.Array, col: Column) -> np.ndarray | None:
    """Cells of an Enum / Literal column outside its values (stored as they are)."""
    if col.values is None or len(arr) == 0:
        return None
    base = base_kind(col)
    allowed = [v for v in col.values if not isinstance(v, bool) or base is Kind.BOOL]
    try:
        inside = pc.is_in(arr, value_set=pa.array(allowed, type=arr.type))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    bad = ~pc.fill_null(inside, True).to_numpy(zero_copy_only=False)
    return bad if bad.any() else None


@functools.lru_cache(maxsize=256)
def _int_keys(plan: ReadPlan) -> tuple[dict[bytes, list[int]], list[int]]:
    """Per double-element header (``\\x01<key>\\x00``), the columns holding integers under
    that key (outside or inside lists of sub-documents); and the columns holding lists
    of integers (their elements' keys are digits)."""
    keys: dict[bytes, list[int]] = {}
    items: list[int] = []

    def walk(col: Column, index: int) -> None:
        if col.free_form:
            return
        if col.kind is Kind.STRUCT:
            for child in col.children:
                walk(child, index)
        elif col.kind is Kind.LIST:
            assert col.item is not None
            if col.item.kind in (Kind.STRUCT, Kind.LIST):
                walk(col.item, index)
            elif base_kind(col.item) is Kind.INT:
                items.append(index)
        elif base_kind(col) is Kind.INT:
            keys.setdefault(b"\x01" + col.key.encode() + b"\x00", []).append(index)

    for index, col in enumerate(plan.columns):
        walk(col, index)
    return keys, sorted(set(items))


def _double_rows(batch: RawBatch, plan: ReadPlan) -> dict[int, np.ndarray]:
    """Per column index, the rows holding a double that an integer column would
    truncate (a fraction, infinity, beyond int64). Only the batch's bytes are searched;
    rows are found for the few such doubles."""
    keys, items = _int_keys(plan)
    if not keys and not items:
        return {}
    raw = batch.raw
    found: dict[int, np.ndarray] = {}

    def flag(ends: list[int], columns: Sequence[int]) -> None:
        if not ends:
            return
        view = np.frombuffer(raw, dtype=np.uint8)
        at = np.asarray(ends, dtype=np.int64)[:, None] + np.arange(8)
        values = view[at].copy().view("<f8").ravel()
        with np.errstate(invalid="ignore"):
            bad = ~np.isnan(values) & ~(
                (values == np.trunc(values)) & (np.abs(values) < _INT64_LIMIT)
            )
        if not bad.any():
            return
        rows = np.zeros(len(batch.starts()) - 1, dtype=bool)
        rows[batch.rows_at(np.asarray(ends, dtype=np.int64)[bad])] = True
        for index in columns:
            found[index] = found[index] | rows if index in found else rows

    for header, columns in keys.items():
        if raw.find(header) < 0:  # the usual case: no double under this key at all
            continue
        flag([m.end() for m in re.finditer(re.escape(header), raw)], columns)
    if items:
        flag([m.end() for m in _DOUBLE_ELEMENT.finditer(raw)], items)
    return found


def _quick(doc: bytes, check: _Check) -> bool:
    """True when a byte-level look settles a suspect cell: its key is absent from the
    document or held once as null (_ABSENT), or held once as an empty array (_EMPTY).
    Anything else (a second occurrence of the key anywhere, another type) is decoded."""
    key = check.key
    if check.test == _ABSENT:
        at = doc.find(key)
        return at < 0 or (doc[at - 1] == 0x0A and doc.count(key) == 1)
    if check.test == _EMPTY:
        return doc.count(key) == 1 and (b"\x04" + key + b"\x05\x00\x00\x00\x00") in doc
    return False


# ---------------------------------------------------------------------- settling
@dataclass(frozen=True, slots=True)
class Misfit:
    """The first value of a batch that does not fit (raise mode)."""

    row: int
    doc: Mapping[str, Any]
    column: Column  # the top-level column
    path: str
    value: Any
    col: Column  # the (sub-)column the value belongs to


def settle(
    batch: RawBatch,
    plan: ReadPlan,
    storage: Sequence[pa.Array],
    arrays: list[pa.Array],
    nominated: Sequence[np.ndarray | None],
    on_invalid: OnInvalid,
) -> list[pa.Array] | Misfit:
    """The frame arrays of one batch with every suspect cell settled, or (raise mode)
    the first value that does not fit.

    ``storage`` are pymongoarrow's arrays, ``arrays`` the converted ones and
    ``nominated`` the rows their conversion could not represent (column by column, in
    ``plan.columns`` order).
    """
    doubles = _double_rows(batch, plan)
    checks: list[list[_Check]] = []
    for index, (arr, col) in enumerate(zip(storage, plan.columns, strict=True)):
        if col.free_form:
            checks.append([])
            continue
        found = _checks(arr, col, batch.raw, top=True)
        key = col.key.encode() + b"\x00"
        for extra in (nominated[index], doubles.get(index)):
            if extra is not None:
                found.append(_Check(extra, _FULL, key))
        checks.append(found)
    for index, found in enumerate(checks):  # vectorised: cells known to be null
        for check in [c for c in found if c.test == _NULL]:
            arrays[index] = _nulled(arrays[index], check.mask)
            found.remove(check)
    if not any(checks):
        return arrays
    suspect = np.logical_or.reduce([c.mask for found in checks for c in found])
    patches: list[tuple[list[int], list[Any]]] = [([], []) for _ in plan.columns]
    for row in np.flatnonzero(suspect).tolist():
        doc_bytes: bytes | None = None
        for index, found in enumerate(checks):
            flagged = [c for c in found if c.mask[row]]
            if not flagged:
                continue
            if doc_bytes is None:
                doc_bytes = batch.bytes_of(row)
            if all(c.test != _FULL and _quick(doc_bytes, c) for c in flagged):
                if any(c.nulls_cell for c in flagged):
                    patches[index][0].append(row)
                    patches[index][1].append(None)
                continue
            col = plan.columns[index]
            doc = batch.doc(row)
            value = doc.get(col.key, ABSENT)
            problems: list[tuple[str, Any, Column]] = []
            cell = frame_value(value, col, col.name, problems)
            if problems and on_invalid == "raise":
                path, bad, sub = problems[0]
                return Misfit(row, doc, col, path, bad, sub)
            patches[index][0].append(row)
            patches[index][1].append(cell)
    return [
        _patched(arr, rows, values) if rows else arr
        for arr, (rows, values) in zip(arrays, patches, strict=True)
    ]


def _nulled(arr: pa.Array, rows: np.ndarray) -> pa.Array:
    """``arr`` (a struct array) with the cells at ``rows`` null."""
    mask = rows if arr.null_count == 0 else rows | arr.is_null().to_numpy(zero_copy_only=False)
    fields = [arr.field(i) for i in range(arr.type.num_fields)]
    return pa.StructArray.from_arrays(fields, fields=list(arr.type), mask=pa.array(mask))


def _patched(arr: pa.Array, rows: list[int], values: list[Any]) -> pa.Array:
    """``arr`` with the cells at ``rows`` replaced by ``values`` (Python values)."""
    patch = pa.array(values, type=arr.type)
    combined = pa.concat_arrays([arr, patch])
    index = np.arange(len(arr), dtype=np.int64)
    index[np.asarray(rows, dtype=np.int64)] = len(arr) + np.arange(len(rows), dtype=np.int64)
    return combined.take(pa.array(index))


# ---------------------------------------------------------------------- frame values
def frame_value(value: Any, col: Column, path: str, problems: list[tuple[str, Any, Column]]) -> Any:
    """What a frame cell holds for a stored ``value`` (Python values as ``pa.array``
    takes them for the column's frame type); a value that does not fit is recorded in
    ``problems`` as ``(path, value, column)`` and held as null.

    Null, missing and a NaN outside float columns are null; a NaN in a float column
    (also in a list, or a sub-document) is NaN.
    """
    if value is ABSENT or value is None:
        return None
    if is_nan(value):
        return value if col.kind is Kind.FLOAT else None
    if col.free_form:
        return json_text(value)
    kind = col.kind
    if kind is Kind.LIST:
        assert col.item is not None
        if type(value) is not list:
            problems.append((path, value, col))
            return None
        item = col.item
        return [frame_value(v, item, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if kind is Kind.STRUCT:
        if not isinstance(value, Mapping):
            problems.append((path, value, col))
            return None
        return {
            c.name: frame_value(value.get(c.key, ABSENT), c, f"{path}.{c.name}", problems)
            for c in col.children
        }
    if not fits(value, col) or not _in_width(value, col):
        problems.append((path, value, col))
        return None
    base = base_kind(col)
    if base is Kind.INT:
        return int(value)
    if base is Kind.FLOAT:
        return float(value)
    if kind is Kind.DATETIME:
        return _millis(value)
    if kind is Kind.DATE:
        return _millis(value) // _DAY_MS
    if kind is Kind.DECIMAL:
        return value.to_decimal() if not isinstance(value, Decimal) else value
    if kind is Kind.UUID:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(bytes=bytes(value)))
    if kind is Kind.OBJECTID:
        return str(value)
    if isinstance(value, Binary):
        return bytes(value)
    return value


def _in_width(value: Any, col: Column) -> bool:
    """An integer within a narrower column's type (uint32 counts, int8 date parts)."""
    if col.type is None or not pa.types.is_integer(col.type) or col.type == pa.int64():
        return True
    info = np.iinfo(col.type.to_pandas_dtype())
    return bool(info.min <= int(value) <= info.max)


def _millis(value: Any) -> int:
    if isinstance(value, DatetimeMS):
        return int(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


# ---------------------------------------------------------------------- messages
def misfit_error(misfit: Misfit, plan: ReadPlan, namespace: str) -> DocumentValidationError:
    """The error of a value that does not fit: a stored one names the model, field,
    ``_id`` and value; a computed one names its column and expression."""
    doc_id = misfit.doc.get("_id", ABSENT)
    row = f"document _id={doc_id!r}" if doc_id is not ABSENT else f"result row {misfit.row}"
    source = plan.computed.get(misfit.column.name)
    if source is not None:
        return DocumentValidationError(
            f"computed column {misfit.path!r} = {source} holds "
            f"{describe_value(misfit.value)}, expected {expected(misfit.col)} (for "
            f"{row if doc_id is not ABSENT else 'a result row'}; a query on {plan.name} in "
            f"{namespace}). Hint: MongoDB computed this value, the stored documents are not "
            "at fault (an integer result beyond int64 becomes a double there, for example): "
            "change the expression, or load with on_invalid='null' to read such values as "
            "null."
        )
    where = f"{row} in {namespace}"
    return DocumentValidationError(
        misfit_message(where, plan.name, misfit.path, misfit.value, misfit.col)
        + " Hint: fix the stored value, or load with on_invalid='null' to read values "
        "that do not fit as null."
    )

