"""A schema inferred from a sample of documents, where no model (or schema) gives one.

Like Polars' readers (``infer_schema_length=``), the first documents decide: each key
becomes a column of the type its values have (int64, float64, string, bool,
``timestamp[ms, UTC]``, ObjectId and UUID as strings, decimals, binary), nested
documents become structs and arrays lists. Mixed types are widened where MongoDB's own
values compare alike (int32/int64 and double -> double; a null or missing value takes the
other's type), and otherwise reported: the column is free-form, Extended JSON text, and
the note says why. A model's schema is always the model's, never inferred.

>>> columns, notes = infer_columns([{"a": 1, "b": {"x": "s"}}, {"a": 2.5, "c": True}])
>>> [(c.name, str(c.frame_type)) for c in columns]
[('a', 'double'), ('b', 'struct<x: string>'), ('c', 'bool')]
>>> notes
['a: int64 and double widened to double']
"""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import pyarrow as pa
from bson import Binary, DatetimeMS, Decimal128, ObjectId

from ..columns import Column
from ..expr.bind import Kind
from ..expr.literals import key_problem

__all__ = ["describe", "infer_columns", "infer_schema"]

# An inferred type: ("null",), ("scalar", kind, arrow), ("struct", {key: type}),
# ("list", type), ("any", reason)
_Type = tuple[Any, ...]
_NULL: _Type = ("null",)
_MS_UTC = pa.timestamp("ms", tz="UTC")


def _scalar(kind: Kind, arrow: pa.DataType) -> _Type:
    return ("scalar", kind, arrow)


def _type_of(value: Any) -> _Type:
    if value is None:
        return _NULL
    kind = type(value)
    if kind is bool:
        return _scalar(Kind.BOOL, pa.bool_())
    if kind is int:
        return _scalar(Kind.INT, pa.int64())
    if kind is float:
        return _scalar(Kind.FLOAT, pa.float64())
    if kind is str:
        return _scalar(Kind.STR, pa.string())
    if kind in (_dt.datetime, DatetimeMS):
        return _scalar(Kind.DATETIME, _MS_UTC)
    if kind is ObjectId:
        return _scalar(Kind.OBJECTID, pa.string())
    if kind is uuid.UUID or kind is Binary and value.subtype == 4 and len(value) == 16:
        return _scalar(Kind.UUID, pa.string())
    if kind is bytes:
        return _scalar(Kind.ANY, pa.binary())
    if kind in (Decimal, Decimal128):
        number = value.to_decimal() if kind is Decimal128 else value
        if not number.is_finite():
            return _scalar(Kind.DECIMAL, pa.decimal128(38, 0))
        exponent = number.as_tuple().exponent
        scale = min(max(-exponent, 0), 37) if isinstance(exponent, int) else 0
        return _scalar(Kind.DECIMAL, pa.decimal128(38, scale))
    if isinstance(value, Mapping):
        return ("struct", {k: _type_of(v) for k, v in value.items() if isinstance(k, str)})
    if kind is list:
        item = _NULL
        for element in value:
            item = _merge(item, _type_of(element))
        return ("list", item)
    return ("any", f"holds {type(value).__name__} values")


def _name(t: _Type) -> str:
    if t[0] == "scalar":
        return "binary" if t[1] is Kind.ANY else str(t[2])
    return {"struct": "document", "list": "array", "null": "null", "any": "other"}[t[0]]


def _merge(a: _Type, b: _Type) -> _Type:
    """The type holding both ``a`` and ``b`` values (``("any", reason)`` if none does)."""
    if a == _NULL:
        return b
    if b == _NULL or a == b:
        return a
    if a[0] == "any":
        return a
    if b[0] == "any":
        return b
    if a[0] == b[0] == "scalar":
        kinds = {a[1], b[1]}
        if kinds == {Kind.INT, Kind.FLOAT}:
            return _scalar(Kind.FLOAT, pa.float64())
        if kinds == {Kind.DECIMAL}:
            return _scalar(Kind.DECIMAL, pa.decimal128(38, max(a[2].scale, b[2].scale)))
    if a[0] == b[0] == "struct":
        merged = dict(a[1])
        for key, t in b[1].items():
            merged[key] = _merge(merged.get(key, _NULL), t)
        return ("struct", merged)
    if a[0] == b[0] == "list":
        return ("list", _merge(a[1], b[1]))
    return ("any", f"mixed {_name(a)} and {_name(b)}")


def _widened(a: _Type, b: _Type) -> str | None:
    """A note when merging ``a`` and ``b`` widened a number type."""
    if a[0] == b[0] == "scalar" and {a[1], b[1]} == {Kind.INT, Kind.FLOAT}:
        return "int64 and double widened to double"
    return None


def _column(name: str, key: str, t: _Type, notes: list[str], path: str) -> Column:
    if t[0] == "scalar":
        return Column(name, key, t[1], t[2])
    if t[0] == "struct":
        children = tuple(
            _column(k, k, sub, notes, f"{path}.{k}") for k, sub in t[1].items()
            if key_problem(k) is None
        )
        arrow = (pa.struct([c.arrow_field() for c in children])
                 if children and all(c.type is not None for c in children) else None)
        if not children:
            notes.append(f"{path}: only empty documents in the sample: JSON text")
        return Column(name, key, Kind.STRUCT if arrow is not None else Kind.ANY, arrow,
                      children=children if arrow is not None else ())
    if t[0] == "list":
        if t[1] == _NULL:
            notes.append(f"{path}: no array element in the sample: JSON text")
            return Column(name, key, Kind.ANY, None)
        item = _column("item", "item", t[1], notes, f"{path}[]")
        if item.type is None:
            return Column(name, key, Kind.ANY, None)
        return Column(name, key, Kind.LIST, pa.list_(item.arrow_field()), item=item)
    if t[0] == "null":
        notes.append(f"{path}: null in every sampled document: JSON text")
    else:
        notes.append(f"{path}: {t[1]}: JSON text")
    return Column(name, key, Kind.ANY, None)


def infer_columns(docs: Iterable[Mapping[str, Any]]) -> tuple[tuple[Column, ...], list[str]]:
    """The columns of a sample of documents (keys in order of first appearance), and
    notes saying what was widened or could not be typed."""
    types: dict[str, _Type] = {}
    notes: list[str] = []
    for doc in docs:
        for key, value in doc.items():
            if not isinstance(key, str):
                continue
            t = _type_of(value)
            before = types.get(key, _NULL)
            widened = _widened(before, t)
            if widened is not None and not any(n.startswith(f"{key}: ") for n in notes):
                notes.append(f"{key}: {widened}")
            types[key] = _merge(before, t)
    columns = []
    for key, t in types.items():
        problem = key_problem(key)
        if problem is not None:
            notes.append(f"{key!r}: left out ({problem})")
            continue
        columns.append(_column(key, key, t, notes, key))
    return tuple(columns), notes


def infer_schema(docs: Iterable[Mapping[str, Any]]) -> tuple[pa.Schema, list[str]]:
    """:func:`infer_columns` as an Arrow schema (its metadata ``loom.inferred`` holds the
    notes).

    >>> schema, _ = infer_schema([{"n": 1, "tags": ["a"]}])
    >>> schema.names, str(schema.field("tags").type)
    (['n', 'tags'], 'list<item: string>')
    """
    columns, notes = infer_columns(docs)
    meta = {b"loom.inferred": "; ".join(notes).encode()}
    return pa.schema([c.arrow_field() for c in columns], metadata=meta), notes


def describe(count: int, notes: list[str]) -> str:
    """What an inference did, in one line.

    >>> describe(100, ["a: int64 and double widened to double"])
    'schema inferred from the first 100 documents (a: int64 and double widened to double)'
    """
    text = f"schema inferred from the first {count} documents"
    return f"{text} ({'; '.join(notes)})" if notes else text
