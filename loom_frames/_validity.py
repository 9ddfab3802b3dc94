"""Which stored values fit a column: the server-side checks and the Python reference check.

pymongoarrow, given a schema, raises on most values of the wrong BSON type (a string in an
int64 column) but silently accepts a few (the "gaps"):

* a double with a fraction, or beyond int64, in an integer column is truncated / wraps;
* any string (int) is accepted in an Enum or Literal column, in or outside its values;
* a non-array value in a list column loads as an empty list;
* a non-document value in a struct column loads as a struct of nulls, and a null or
  missing subdocument cannot be told from one whose fields are all null;
* a NaN double loads as null everywhere, also in float columns.

The loader therefore asks the server for a small per-document *report* in the same query:
a computed projection field (:data:`REPORT_KEY`) that is absent for a clean document (no
bytes transferred) and otherwise lists tags ``"i:<path>"`` (invalid value), ``"n:<path>"``
(NaN in a float field) and ``"z:<path>"`` (null/missing subdocument), for every path that
is not inside an array. :func:`report_conditions` builds those conditions. Three checks
run on the client instead, vectorised while converting: a date with a time of day, a
decimal that does not fit its ``decimal128(p, s)``, a UUID that is not 16 bytes.

When something is invalid, the error path asks the server again for the culprit with the
full check (:func:`check_expr` with ``full=True``, a superset filter) and confirms it with
:func:`problem`, the Python reference that decides what is valid.

Validity follows what the model would accept: int columns take int32/int64/bool and
doubles without a fraction; float columns take any number; a NaN double is read as null
in every non-float column (pandas writes NaN for a missing value).
"""

import datetime as _dt
import decimal
import math
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from bson import Binary, DatetimeMS, ObjectId

from .expr.bind import Kind
from .schema import Column

__all__ = [
    "REPORT_KEY",
    "check_expr",
    "describe_value",
    "expected",
    "fits_decimal",
    "problem",
    "report_conditions",
    "report_expr",
]

REPORT_KEY = "__loom_report"
"""The computed projection field carrying a document's report tags (absent when clean)."""

_NAN = float("nan")
_INT64_LIMIT = 2.0**63
_DAY_MS = 86_400_000

_ABSENT_TYPES = ["missing", "null"]
_BSON_TYPES: dict[Kind, list[str]] = {
    Kind.STR: ["string"],
    Kind.INT: ["int", "long", "bool"],  # doubles: see _int_gap
    Kind.FLOAT: ["double", "int", "long", "bool"],
    Kind.BOOL: ["bool"],
    Kind.DATETIME: ["date"],
    Kind.DATE: ["date"],
    Kind.DECIMAL: ["decimal"],
    Kind.UUID: ["binData"],
    Kind.OBJECTID: ["objectId"],
}


# ------------------------------------------------------------ aggregation language
def _double_nan(e: str) -> dict[str, Any]:
    """A NaN double (a Decimal128 NaN compares equal to it, but is not read as null)."""
    return {"$and": [{"$eq": [{"$type": e}, "double"]}, {"$eq": [e, _NAN]}]}


def _absent(e: str) -> dict[str, Any]:
    """Missing, null, or a NaN double (read as null everywhere)."""
    return {"$or": [{"$in": [{"$type": e}, _ABSENT_TYPES]}, _double_nan(e)]}


def _present_and_not(e: str, types: list[str]) -> dict[str, Any]:
    return {
        "$and": [
            {"$not": [{"$in": [{"$type": e}, [*types, *_ABSENT_TYPES]]}]},
            {"$not": [_double_nan(e)]},
        ]
    }


def _int_gap(e: str) -> dict[str, Any]:
    """A double with a fraction, or beyond int64 (incl. +-inf): pymongoarrow truncates it."""
    return {
        "$and": [
            {"$eq": [{"$type": e}, "double"]},
            {"$or": [{"$ne": [e, {"$trunc": [e]}]}, {"$gte": [{"$abs": e}, _INT64_LIMIT]}]},
        ]
    }


def _or(exprs: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    found = [e for e in exprs if e is not None]
    if not found:
        return None
    return found[0] if len(found) == 1 else {"$or": found}


def _base_kind(col: Column) -> Kind:
    """The kind whose BSON types a column takes (an Enum/Literal by its values' type)."""
    if col.kind is Kind.ENUM:
        if col.type is not None and str(col.type) == "int64":
            return Kind.INT
        if col.type is not None and str(col.type) == "double":
            return Kind.FLOAT
        return Kind.STR
    return col.kind


def check_expr(e: str, col: Column, *, full: bool, depth: int = 0) -> dict[str, Any] | None:
    """An aggregation expression, true when the value at ``e`` does not fit ``col``.

    ``full=False`` checks only the gaps pymongoarrow lets through (exact); ``full=True``
    checks everything the server can (a superset of :func:`problem`: decimals and UUIDs
    are all candidates). None when there is nothing to check.

    >>> from loom_frames.schema import columns_from_arrow
    >>> import pyarrow as pa
    >>> (age,) = columns_from_arrow(pa.schema({"age": pa.int64()}))
    >>> check_expr("$age", age, full=False)["$and"][0]
    {'$eq': [{'$type': '$age'}, 'double']}
    """
    kind = col.kind
    if kind is Kind.LIST:
        var = f"v{depth}"
        inner = (
            check_expr(f"$${var}", col.item, full=full, depth=depth + 1)
            if col.item is not None
            else None
        )
        not_array = _present_and_not(e, ["array"])
        if inner is None:
            return not_array
        each = {"$map": {"input": e, "as": var, "in": inner}}
        return {"$cond": [{"$isArray": e}, {"$anyElementTrue": [each]}, not_array]}
    if kind is Kind.STRUCT:
        inner = _or([check_expr(f"{e}.{c.key}", c, full=full, depth=depth) for c in col.children])
        not_doc = _present_and_not(e, ["object"])
        if inner is None:
            return not_doc
        return {"$cond": [{"$eq": [{"$type": e}, "object"]}, inner, not_doc]}
    base = _base_kind(col)
    gap = _int_gap(e) if base is Kind.INT else None
    if col.values is not None:  # an Enum / Literal value outside its values
        outside = {
            "$and": [
                {"$in": [{"$type": e}, _BSON_TYPES[base]]},
                {"$not": [{"$in": [e, list(col.values)]}]},
            ]
        }
        gap = _or([gap, outside])
    if not full:
        return gap
    if col.binary:
        return _present_and_not(e, ["binData"])
    types = _BSON_TYPES.get(base)
    if types is None:  # no column type: nothing to check
        return None
    checks: list[dict[str, Any] | None] = [_present_and_not(e, types), gap]
    if kind is Kind.DATE:
        checks.append(
            {
                "$and": [
                    {"$eq": [{"$type": e}, "date"]},
                    {"$ne": [{"$mod": [{"$toLong": e}, _DAY_MS]}, 0]},
                ]
            }
        )
    if kind in (Kind.DECIMAL, Kind.UUID):  # fit / subtype: only Python can tell
        checks.append({"$not": [_absent(e)]})
    return _or(checks)


Condition = tuple[str, dict[str, Any], dict[str, Any]]
"""``(tag, exact condition, cheap gate)``: the gate holds whenever the condition does."""


def report_conditions(columns: Sequence[Column], prefix: str = "") -> list[Condition]:
    """The tagged conditions of the per-document report (paths outside arrays).

    Each comes with a *gate*, a cheaper superset evaluated first for every document
    (e.g. "is a double" before "is a double with a fraction"); the exact conditions run
    only for documents some gate lets through.

    >>> import pyarrow as pa
    >>> from loom_frames.schema import columns_from_arrow
    >>> cols = columns_from_arrow(pa.schema({"x": pa.float64(), "s": pa.string()}))
    >>> [(tag, gate) for tag, _, gate in report_conditions(cols)]
    [('n:x', {'$eq': ['$x', nan]})]
    """
    out: list[Condition] = []
    for col in columns:
        path = prefix + col.key
        e = "$" + path
        if col.kind is Kind.FLOAT:
            out.append(("n:" + path, _double_nan(e), {"$eq": [e, _NAN]}))
        if col.kind is Kind.STRUCT:
            not_doc = {"$ne": [{"$type": e}, "object"]}
            out.append(("z:" + path, _absent(e), not_doc))
            out.append(("i:" + path, _present_and_not(e, ["object"]), not_doc))
            out.extend(report_conditions(col.children, path + "."))
            continue
        gap = check_expr(e, col, full=False)
        if gap is not None:
            out.append(("i:" + path, gap, _gate(e, col, gap)))
    return out


def _gate(e: str, col: Column, exact: dict[str, Any]) -> dict[str, Any]:
    """A cheap superset of a scalar column's gap condition (the exact one otherwise)."""
    if col.kind in (Kind.LIST, Kind.STRUCT):
        return exact
    gates = []
    if _base_kind(col) is Kind.INT:
        gates.append({"$eq": [{"$type": e}, "double"]})
    if col.values is not None:
        gates.append({"$not": [{"$in": [e, list(col.values)]}]})
    return gates[0] if len(gates) == 1 else {"$or": gates}


def report_expr(conditions: Sequence[Condition]) -> dict[str, Any] | None:
    """The computed projection: the list of tags whose condition holds, or ``$$REMOVE``."""
    if not conditions:
        return None
    gates: list[dict[str, Any]] = []
    for _, _, gate in conditions:
        if gate not in gates:
            gates.append(gate)
    gate = gates[0] if len(gates) == 1 else {"$or": gates}
    tags = [{"$cond": [cond, [tag], []]} for tag, cond, _ in conditions]
    found = tags[0] if len(tags) == 1 else {"$concatArrays": tags}
    return {
        "$cond": [
            gate,
            {
                "$let": {
                    "vars": {"t": found},
                    "in": {"$cond": [{"$eq": ["$$t", []]}, "$$REMOVE", "$$t"]},
                }
            },
            "$$REMOVE",
        ]
    }


# --------------------------------------------------------------- Python reference
class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


def problem(value: Any, col: Column, path: str) -> tuple[str, Any, Column] | None:
    """``(path, value, column)`` of the first value under ``value`` that does not fit.

    ``value`` is as pymongo decodes it with ``CODEC_OPTIONS`` (aware datetimes,
    ``Decimal``, ``uuid.UUID``). Missing, None and NaN always fit (they load as null).

    >>> import pyarrow as pa
    >>> from loom_frames.schema import columns_from_arrow
    >>> (age,) = columns_from_arrow(pa.schema({"age": pa.int64()}))
    >>> problem(2.0, age, "age") is None, problem(2.5, age, "age")[:2]
    (True, ('age', 2.5))
    """
    if value is MISSING or value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    kind = col.kind
    if kind is Kind.LIST:
        if not isinstance(value, list):
            return path, value, col
        if col.item is not None:
            for i, item in enumerate(value):
                found = problem(item, col.item, f"{path}[{i}]")
                if found is not None:
                    return found
        return None
    if kind is Kind.STRUCT:
        if not isinstance(value, Mapping):
            return path, value, col
        for child in col.children:
            found = problem(value.get(child.key, MISSING), child, f"{path}.{child.name}")
            if found is not None:
                return found
        return None
    return None if _fits(value, col) else (path, value, col)


def _fits(value: Any, col: Column) -> bool:
    base = _base_kind(col)
    if col.binary:
        return isinstance(value, bytes)
    if base is Kind.STR:
        ok = isinstance(value, str)
    elif base is Kind.INT:
        ok = isinstance(value, int) or (
            isinstance(value, float) and value.is_integer() and abs(value) < _INT64_LIMIT
        )
    elif base is Kind.FLOAT:
        ok = isinstance(value, (int, float))
    elif base is Kind.BOOL:
        ok = isinstance(value, bool)
    elif base is Kind.DATETIME:
        ok = isinstance(value, (_dt.datetime, DatetimeMS))
    elif base is Kind.DATE:
        ok = _is_midnight(value)
    elif base is Kind.DECIMAL:
        ok = (
            isinstance(value, Decimal)
            and col.type is not None
            and fits_decimal(value, col.type.precision, col.type.scale)
        )
    elif base is Kind.UUID:
        ok = isinstance(value, uuid.UUID) or (
            isinstance(value, Binary) and value.subtype == 4 and len(value) == 16
        )
    elif base is Kind.OBJECTID:
        ok = isinstance(value, ObjectId)
    else:
        return True  # no column type: nothing to check
    if ok and col.values is not None:  # by value, a bool is no member of an int enum
        return value in col.values and (base is Kind.BOOL or not isinstance(value, bool))
    return ok


def _is_midnight(value: Any) -> bool:
    if isinstance(value, DatetimeMS):
        return int(value) % _DAY_MS == 0
    if not isinstance(value, _dt.datetime):
        return False
    if value.tzinfo is not None:
        value = value.astimezone(_dt.UTC)
    return (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0)


def fits_decimal(value: Decimal, precision: int, scale: int) -> bool:
    """True when ``value`` is exactly representable as ``decimal128(precision, scale)``.

    >>> fits_decimal(Decimal("1.25"), 10, 2), fits_decimal(Decimal("1.255"), 10, 2)
    (True, False)
    """
    if not value.is_finite():
        return False
    exact = decimal.Context(prec=100)  # Decimal128 holds 34 digits; never round here
    unscaled = value.scaleb(scale, context=exact)
    if unscaled != unscaled.to_integral_value(context=exact):
        return False
    return bool(abs(int(unscaled)) < 10**precision)


# ------------------------------------------------------------------ descriptions
def expected(col: Column) -> str:
    """What a column accepts, for error messages."""
    if col.values is not None:
        shown = ", ".join(repr(v) for v in col.values[:8])
        more = ", ..." if len(col.values) > 8 else ""
        return f"one of {shown}{more}"
    if col.binary:
        return "binary data"
    kind = _base_kind(col)
    return {
        Kind.STR: "a string",
        Kind.INT: "an integer (int32/int64, or a double without a fraction)",
        Kind.FLOAT: "a number",
        Kind.BOOL: "a boolean",
        Kind.DATETIME: "a date",
        Kind.DATE: "a date at midnight UTC",
        Kind.DECIMAL: f"a decimal128 that fits {col.type}",
        Kind.UUID: "a UUID (binary subtype 4)",
        Kind.OBJECTID: "an ObjectId",
        Kind.LIST: "an array",
        Kind.STRUCT: "an embedded document",
    }.get(kind, "a value of its type")


_BSON_NAMES: list[tuple[type, str]] = [
    (bool, "bool"),
    (int, "int"),
    (float, "double"),
    (str, "string"),
    (_dt.datetime, "date"),
    (Decimal, "decimal128"),
    (ObjectId, "objectId"),
    (uuid.UUID, "binary subtype 4"),
    (Binary, "binary"),
    (bytes, "binary"),
    (list, "array"),
    (Mapping, "document"),
]


def describe_value(value: Any, limit: int = 80) -> str:
    """``repr`` (shortened) and BSON type of a stored value, for error messages.

    >>> describe_value("abc")
    "'abc' (string)"
    """
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    name = next((n for t, n in _BSON_NAMES if isinstance(value, t)), type(value).__name__)
    if isinstance(value, Binary):
        name = f"binary subtype {value.subtype}"
    return f"{text} ({name})"
