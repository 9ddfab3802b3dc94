"""The client-side validity check against the rule, document by document (hypothesis).

Random documents (values that fit, wrong types, nulls, missing fields, NaN, nested values,
unicode, extreme datetimes, sub-documents reusing the model's keys, strings holding BSON
element headers) are stored, then loaded as frames and as objects. Each document is
classified with the reference rule (:func:`loom_frames.codec.problem`) and:

* a frame load raises iff some document does not fit, naming the FIRST such document
  (result order), its field and value; ``on_invalid="null"`` never raises and every cell
  is the reference's value (a value that does not fit is null, NaN is kept in floats);
* ``iter_batches`` in batches of two equals the whole load;
* ``load_many`` raises iff some document does not fit an object (the same rule; a date
  beyond year 9999 fits a frame column but no Python object).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import os
import uuid
from decimal import Decimal
from typing import Any, Literal

import pyarrow as pa
import pytest
from bson import Binary, DatetimeMS, Decimal128, Int64, ObjectId
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from test_load import Color, Level

import loom_frames as lm
from loom_frames import ObjectIdField, Persistable, declare_persist_db
from loom_frames.codec import ABSENT, problem
from loom_frames.columns import model_columns
from loom_frames.expr import Kind
from loom_frames.read.cursor import PERMISSIVE
from loom_frames.read.frames import find_table, iter_batches
from loom_frames.schema import arrow_schema


class Address(BaseModel):
    city: str | None = None
    zip: int | None = None


KEYS = ["i", "f", "s", "b", "t", "d", "dec", "u", "e", "lvl", "lit", "o", "raw", "ints",
        "floats", "a", "many"]
_counter = itertools.count()
EXAMPLES = max(120, int(os.environ.get("LOOM_HYPOTHESIS_EXAMPLES", "0")))
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_BEYOND = DatetimeMS(253_402_300_800_000 + 86_400_000 * 3)  # 10000-01-04, midnight UTC


@pytest.fixture
def Doc(db_name: str) -> type[Persistable]:
    @declare_persist_db(db_name=db_name, collection_name=f"docs{next(_counter)}")
    class Doc(Persistable):
        i: int | None = None
        f: float | None = None
        s: str | None = None
        b: bool | None = None
        t: dt.datetime | None = None
        d: dt.date | None = None
        dec: Decimal | None = None
        u: uuid.UUID | None = None
        e: Color | None = None
        lvl: Level | None = None
        lit: Literal["x", "y"] | None = None
        o: ObjectIdField | None = None
        raw: bytes | None = None
        ints: list[int] = []
        floats: list[float | None] = []
        a: Address | None = None
        many: list[Address | None] = []

    return Doc


# ------------------------------------------------------------------ strategies
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)
_HEADERS = st.sampled_from([f"\x01{k}\x00" + "\x00" * 3 + "\xe0?" for k in KEYS]
                           + ["\x04ints\x00\x05\x00\x00\x00\x00", "\x0ai\x00"])
_FLOATS = st.sampled_from([0.0, -0.0, 3.0, 2.5, -1e30, 1e15, float("nan"), float("inf"),
                           float("-inf"), 2.0**63, -(2.0**63)]) | st.floats()
# Dates beyond Python's years 1-9999 (``DatetimeMS``) are tested without a server below:
# SecantusDB, a Python server, refuses them ("invalid BSON in body"); mongod stores them.
_DATES = st.sampled_from([
    dt.datetime(1, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 12, 31, 23, 59, 59, 999000,
                                                     tzinfo=dt.UTC),
    dt.datetime(2024, 3, 1, tzinfo=dt.UTC), dt.datetime(2024, 3, 1, 5, tzinfo=dt.UTC),
    dt.datetime(1969, 12, 31, tzinfo=dt.UTC),
])
SCALARS = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-5, 5).map(Int64),
    _FLOATS,
    _TEXT,
    _HEADERS,
    st.sampled_from(["red", "blue", "green", "x", "y", "true"]),
    st.booleans(),
    _DATES,
    st.sampled_from([Decimal128("1.5"), Decimal128("NaN"), Decimal128("1E+30"),
                     Decimal128("-0.001"), Decimal128("5"), Decimal128("1E-19")]),
    st.sampled_from([ObjectId("64f8a0000000000000000001"), uuid.UUID(int=7),
                     Binary(b"0123456789abcdef", 3), Binary(b"abc", 4), b"raw", Binary(b"x", 5)]),
)
ANY = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["city", "zip", *KEYS]), inner, max_size=3),
    max_leaves=6,
)
_ADDRESS = st.fixed_dictionaries(
    {}, optional={"city": _TEXT | st.none(), "zip": st.integers(-5, 5) | st.none()
                  | st.just(2.0), "i": ANY, "ints": ANY}  # extra keys reuse the model's
)
FITTING: dict[str, st.SearchStrategy[Any]] = {
    "i": st.integers(-(2**63), 2**63 - 1) | st.sampled_from([3.0, -0.0, True, 1e15]),
    "f": st.floats() | st.integers(-(2**53), 2**53) | st.booleans(),
    "s": _TEXT | _HEADERS,
    "b": st.booleans(),
    "t": st.datetimes(min_value=dt.datetime(1, 1, 1), timezones=st.just(dt.UTC)) | _DATES,
    "d": st.dates().map(lambda d: dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)),
    "dec": st.sampled_from([Decimal128("1.5"), Decimal128("-12345678901234567890.123"),
                            Decimal128("0E-20")]),
    "u": st.uuids(),
    "e": st.sampled_from(["red", "blue"]),
    "lvl": st.sampled_from([1, 2, 2.0]),
    "lit": st.sampled_from(["x", "y"]),
    "o": st.binary(min_size=12, max_size=12).map(ObjectId),
    "raw": st.binary(max_size=5),
    "ints": st.lists(st.integers(-3, 3) | st.sampled_from([2.0, None]), max_size=3),
    "floats": st.lists(_FLOATS | st.none(), max_size=3),
    "a": _ADDRESS | st.none(),
    "many": st.lists(_ADDRESS | st.none(), max_size=3),
}
NAN = st.just(float("nan"))


def documents() -> st.SearchStrategy[list[dict[str, Any]]]:
    fields = {k: st.one_of(FITTING[k], FITTING[k], ANY, NAN) for k in KEYS}
    return st.lists(st.fixed_dictionaries({}, optional=fields), min_size=1, max_size=5)


# ------------------------------------------------------------------ the reference
def expected(value: Any, col: Any) -> Any:
    """The frame cell of a stored value under the rule (values that do not fit: null)."""
    if value is ABSENT or value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return value if col.kind is Kind.FLOAT else None
    if problem(value, col, col.name) is not None and col.kind not in (Kind.LIST, Kind.STRUCT):
        return None
    if col.kind is Kind.LIST:
        return None if not isinstance(value, list) else [expected(v, col.item) for v in value]
    if col.kind is Kind.STRUCT:
        if not isinstance(value, dict):
            return None
        return {c.name: expected(value.get(c.key, ABSENT), c) for c in col.children}
    if col.kind in (Kind.INT,) or col.name == "lvl":
        return int(value)
    if col.kind is Kind.FLOAT:
        return float(value)
    if col.kind is Kind.DATETIME:
        return int(value) if isinstance(value, DatetimeMS) else _ms(value)
    if col.kind is Kind.DATE:
        return (int(value) if isinstance(value, DatetimeMS) else _ms(value)) // 86_400_000
    if col.kind is Kind.DECIMAL:
        return value.to_decimal() if isinstance(value, Decimal128) else value
    if col.kind is Kind.UUID:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(bytes=bytes(value)))
    if col.kind is Kind.OBJECTID:
        return str(value)
    if isinstance(value, Binary):
        return bytes(value)
    return value


def _ms(value: dt.datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _pylist(table: pa.Table) -> list[dict[str, Any]]:
    """Rows, with timestamp/date columns as integers (dates beyond Python's range)."""
    columns = {}
    for field in table.schema:
        column = table.column(field.name)
        if pa.types.is_timestamp(field.type):
            column = column.cast(pa.int64())
        elif pa.types.is_date32(field.type):
            column = column.cast(pa.int32())
        columns[field.name] = column
    return pa.table(columns).to_pylist()


def identical(a: Any, b: Any) -> bool:
    """Equal values of the same types (NaN equals NaN): stricter than test_load.same,
    which lets numbers of different types match."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def object_misfit(value: Any, col: Any) -> bool:
    """What an object cannot hold: the rule (without a frame's decimal scale), a date
    beyond Python's years, or null (also NaN outside floats) where None is not allowed."""
    if problem(value, col, col.name, frame=False) is not None:
        return True
    nan = isinstance(value, float) and math.isnan(value) and col.kind is not Kind.FLOAT
    if (value is None or nan) and not col.optional:
        return True
    if col.kind in (Kind.DATETIME, Kind.DATE) and isinstance(value, DatetimeMS):
        return True
    if col.kind is Kind.STRUCT and isinstance(value, dict):
        return any(object_misfit(value.get(c.key, ABSENT), c) for c in col.children)
    if col.kind is Kind.LIST and isinstance(value, list):
        return any(object_misfit(v, col.item) for v in value)
    return False


# ------------------------------------------------------------------ the property
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(docs=documents())
def test_frames_and_objects_follow_the_rule_document_by_document(
    Doc: Any, docs: list[dict[str, Any]]
) -> None:
    coll = Doc.collection()
    coll.delete_many({})
    for doc in docs:
        doc["_id"] = ObjectId()
    coll.insert_many(docs)
    stored = list(coll.with_options(codec_options=PERMISSIVE).find({}, sort=[("_id", 1)]))
    columns = [c for c in model_columns(Doc)]
    bad = [
        d["_id"] for d in stored
        if any(problem(d.get(c.key, ABSENT), c, c.name) is not None for c in columns)
    ]
    event(f"{len(bad)} of {len(stored)} documents do not fit")
    schema = arrow_schema(Doc)

    if bad:
        with pytest.raises(lm.DocumentValidationError) as info:
            find_table(coll, schema, sort=[("_id", 1)])
        message = str(info.value)
        note(message)
        assert f"_id={bad[0]!r}" in message  # the first, in result order
        first = next(d for d in stored if d["_id"] == bad[0])
        path, _, _ = next(found for c in columns
                              if (found := problem(first.get(c.key, ABSENT), c, c.name)))
        assert f"field {path!r}" in message
    else:
        find_table(coll, schema)

    table = find_table(coll, schema, on_invalid="null", sort=[("_id", 1)])
    rows = _pylist(table)
    assert len(rows) == len(stored)
    for row, doc in zip(rows, stored, strict=True):
        for col in columns:
            want = expected(doc.get(col.key, ABSENT), col)
            assert identical(row[col.name], want), (col.name, row[col.name], want, doc)
    batches = list(iter_batches(coll, schema, sort=[("_id", 1)], batch_size=2,
                                on_invalid="null"))
    assert identical(_pylist(pa.Table.from_batches(batches, schema=schema)), rows)

    misfits = [d["_id"] for d in stored if any(object_misfit(d.get(c.key, ABSENT), c)
                                               for c in columns)]
    if misfits:
        with pytest.raises(lm.DocumentValidationError) as caught:
            Doc.filter().sort("id").load_many()
        assert f"_id={misfits[0]!r}" in str(caught.value), str(caught.value)
    else:
        objects = Doc.filter().sort("id").load_many()
        assert [o.id for o in objects] == [d["_id"] for d in stored]
