"""Loading frames against the real wire server: round trips, wrong types, NaN, batches."""

import datetime as dt
import enum
import itertools
import math
import re
import uuid
from decimal import Decimal
from typing import Any, Literal, Optional

import bson
import pandas as pd
import pyarrow as pa
import pytest
from bson import Binary, Decimal128, Int64, ObjectId
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, create_model

from loom_frames import (
    DocumentValidationError,
    ObjectIdField,
    Persistable,
    PlanError,
    StrLower,
)
from loom_frames.codec import to_bson
from loom_frames.fields import normalize_datetime
from loom_frames.read.frames import aggregate_table, find_table, iter_batches, to_frame
from loom_frames.schema import arrow_schema, polars_schema


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


def _insert(coll: Any, docs: list[dict[str, Any]]) -> list[ObjectId]:
    ids = []
    for doc in docs:
        if doc.get("_id") is None:
            doc["_id"] = ObjectId()
        ids.append(doc["_id"])
    if docs:
        coll.insert_many(docs)
    return ids


# ============================================================ round-trip property
_counter = itertools.count()
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_DT_MIN = dt.datetime(1, 1, 1)
_DT_MAX = dt.datetime(9999, 12, 31, 23, 59, 59, 999999)


def _decimals() -> st.SearchStrategy[Decimal]:
    """Values decimal128(38, 18) holds exactly and BSON Decimal128 stores (<= 34 digits)."""

    def make(places: int, digits: int) -> st.SearchStrategy[Decimal]:
        bound = 10 ** min(34, 20 + places) - 1
        return st.integers(-bound, bound).map(lambda i: Decimal(f"{i}E-{places}"))  # exact

    return st.integers(0, 18).flatmap(lambda p: make(p, 0))


LEAVES: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (str, _TEXT),
    (StrLower, _TEXT),
    (int, st.integers(-(2**63), 2**63 - 1)),
    (float, st.floats(allow_nan=True, allow_infinity=True)),
    (bool, st.booleans()),
    (
        dt.datetime,
        st.one_of(
            st.sampled_from([_DT_MIN, _DT_MAX, dt.datetime(1970, 1, 1)]),
            st.datetimes(
                min_value=_DT_MIN, max_value=_DT_MAX, timezones=st.sampled_from([None, dt.UTC])
            ),
        ),
    ),
    (dt.date, st.one_of(st.sampled_from([dt.date(1, 1, 1), dt.date(9999, 12, 31)]), st.dates())),
    (Decimal, _decimals()),
    (uuid.UUID, st.uuids()),
    (Color, st.sampled_from(Color)),
    (Level, st.sampled_from(Level)),
    (ObjectIdField, st.binary(min_size=12, max_size=12).map(ObjectId)),
    (Literal["x", "y"], st.sampled_from(["x", "y"])),
]


@st.composite
def _nested(draw: Any, inner: st.SearchStrategy[tuple[Any, Any]]) -> tuple[Any, Any]:
    fields = draw(st.lists(inner, min_size=1, max_size=3))
    model = create_model(  # type: ignore[call-overload]
        f"Nested{next(_counter)}", **{f"c{i}": (ann, ...) for i, (ann, _) in enumerate(fields)}
    )
    values = st.fixed_dictionaries({f"c{i}": vals for i, (_, vals) in enumerate(fields)})
    return model, values


def _extend(inner: st.SearchStrategy[tuple[Any, Any]]) -> st.SearchStrategy[tuple[Any, Any]]:
    return st.one_of(
        inner.map(lambda s: (Optional[s[0]], st.none() | s[1])),
        inner.map(lambda s: (list[s[0]], st.lists(s[1], max_size=3))),  # type: ignore[valid-type]
        _nested(inner),
    )


SPECS = st.recursive(st.sampled_from(LEAVES), _extend, max_leaves=6)


def expected(value: Any) -> Any:
    """What a frame holds for a model value (NaN is NaN, inside arrays too)."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (ObjectId, uuid.UUID)):
        return str(value)
    if isinstance(value, dt.datetime):  # as stored (a nested model keeps it naive)
        return normalize_datetime(value)
    if isinstance(value, BaseModel):
        return {name: expected(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, list):
        return [expected(v) for v in value]
    return value


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return (
        type(a) is type(b)
        and a == b
        or (
            isinstance(a, (int, float, Decimal))
            and isinstance(b, (int, float, Decimal))
            and not isinstance(a, bool)
            and not isinstance(b, bool)
            and a == b
        )
        or (isinstance(a, dt.datetime) and isinstance(b, dt.datetime) and a == b)
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_round_trip_of_random_models_and_values(db: Any, data: st.DataObject) -> None:
    specs = data.draw(st.lists(SPECS, min_size=1, max_size=4), label="fields")
    aliases = data.draw(st.lists(st.booleans(), min_size=len(specs), max_size=len(specs)))
    fields: dict[str, Any] = {}
    for i, ((ann, _), alias) in enumerate(zip(specs, aliases, strict=True)):
        fields[f"f{i}"] = (ann, Field(alias=f"k{i}") if alias else ...)
    model = create_model(f"Random{next(_counter)}", __base__=Persistable, **fields)  # type: ignore[call-overload]
    values = st.fixed_dictionaries({f"f{i}": vals for i, (_, vals) in enumerate(specs)})
    rows = data.draw(
        st.lists(st.tuples(values, st.sets(st.sampled_from(list(fields)))), max_size=4),
        label="rows",
    )
    objects = [model(**row) for row, _ in rows]
    docs, wanted = [], []
    for obj, (_, dropped) in zip(objects, rows, strict=True):
        obj.id = ObjectId()
        doc = to_bson(obj.model_dump(by_alias=True, round_trip=True))
        row = {name: expected(getattr(obj, name)) for name in type(obj).model_fields}
        for name in dropped:  # a missing field loads as null
            doc.pop(model.model_fields[name].alias or name)
            row[name] = None
        docs.append(doc)
        wanted.append(row)
    coll = db[f"rt{next(_counter)}"]
    _insert(coll, docs)
    schema = arrow_schema(model)

    table = find_table(coll, schema, sort=[("_id", 1)])

    assert table.schema.equals(schema, check_metadata=True)
    got = table.to_pylist()
    assert len(got) == len(wanted)
    for g, w in zip(got, wanted, strict=True):
        assert same(g, w), (g, w)
    frame = to_frame(table, "polars")
    assert frame.schema == polars_schema(model) and frame.height == len(wanted)
    batches = list(iter_batches(coll, schema, sort=[("_id", 1)], batch_size=2))
    assert (
        same(pa.Table.from_batches(batches, schema=schema).to_pylist(), got)
        if batches
        else not wanted
    )


# ================================================================ plain behaviour
class Opt(BaseModel):
    a: Optional[int] = None
    x: Optional[float] = None


class Address(BaseModel):
    city: str
    zip: Optional[int] = None


class Thing(Persistable):
    name: str
    n: int = 0
    score: Optional[float] = None
    when: Optional[dt.datetime] = None
    day: Optional[dt.date] = None
    color: Optional[Color] = None
    opt: Optional[Opt] = None
    tags: list[str] = []


def test_typed_empty_result(db: Any) -> None:
    schema = arrow_schema(Thing)
    table = find_table(db.things, schema)
    assert table.num_rows == 0 and table.schema.equals(schema, check_metadata=True)
    assert to_frame(table, "polars").schema == polars_schema(Thing)
    df = to_frame(table, "pandas")
    assert list(df.columns) == schema.names and len(df) == 0
    assert str(df.dtypes["when"]) == "datetime64[ms, UTC]"
    assert list(iter_batches(db.things, schema)) == []


def test_missing_fields_and_extra_keys(db: Any) -> None:
    _insert(db.things, [{"name": "a", "unknown": 1}, {}])
    table = find_table(db.things, arrow_schema(Thing), sort=[("_id", 1)])
    rows = table.to_pylist()
    assert rows[0]["name"] == "a" and rows[0]["n"] is None and rows[0]["tags"] is None
    assert all(v is None for k, v in rows[1].items() if k != "id")


def test_nan_is_kept_in_float_fields_and_null_elsewhere(db: Any) -> None:
    nan = float("nan")
    _insert(
        db.things,
        [
            {"name": "a", "score": nan, "opt": {"x": nan}},
            {"name": nan, "n": nan, "score": None, "opt": {"x": None}},
        ],
    )
    rows = find_table(db.things, arrow_schema(Thing), sort=[("_id", 1)]).to_pylist()
    assert math.isnan(rows[0]["score"]) and math.isnan(rows[0]["opt"]["x"])
    assert rows[1]["name"] is None and rows[1]["n"] is None  # pandas-style NaN = missing
    assert rows[1]["score"] is None and rows[1]["opt"]["x"] is None


def test_null_or_missing_subdocument_is_a_null_struct(db: Any) -> None:
    _insert(
        db.things,
        [{"name": "missing"}, {"name": "null", "opt": None}, {"name": "empty", "opt": {}}],
    )
    rows = find_table(db.things, arrow_schema(Thing), sort=[("_id", 1)]).to_pylist()
    assert [r["opt"] for r in rows] == [None, None, {"a": None, "x": None}]


def test_lenient_values_the_model_accepts(db: Any) -> None:
    """mongosh stores numbers as doubles; a double without a fraction is an int."""
    _insert(
        db.things,
        [
            {"name": "a", "n": 30.0, "score": 3},
            {"name": "b", "n": True, "score": True},
            {"name": "c", "n": Int64(2**62), "day": dt.datetime(1969, 12, 31, tzinfo=dt.UTC)},
        ],
    )
    rows = find_table(db.things, arrow_schema(Thing), sort=[("_id", 1)]).to_pylist()
    assert [r["n"] for r in rows] == [30, 1, 2**62]
    assert rows[0]["score"] == 3.0 and rows[1]["score"] == 1.0
    assert rows[2]["day"] == dt.date(1969, 12, 31)


# ---------------------------------------------------------------- wrong types
WRONG: list[tuple[Any, Any, str, Any]] = [
    # (annotation, stored value, path in the message, value loaded with on_invalid="null")
    (int, "abc", "x", None),
    (int, 2.5, "x", None),
    (int, float("inf"), "x", None),
    (int, 1e30, "x", None),
    (str, 5, "x", None),
    (bool, 1, "x", None),
    (float, "1.5", "x", None),
    (float, Decimal128("1.5"), "x", None),
    (dt.datetime, "2024-01-01", "x", None),
    (dt.date, dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC), "x", None),
    (Decimal, Decimal128("1.1234567890123456789"), "x", None),
    (Decimal, Decimal128("NaN"), "x", None),
    (uuid.UUID, Binary(b"0123456789abcdef", 3), "x", None),
    (uuid.UUID, Binary(b"abc", 4), "x", None),
    (Color, "green", "x", None),
    (Level, 3, "x", None),
    (Literal["a", "b"], "c", "x", None),
    (ObjectIdField, "64f8a0000000000000000001", "x", None),
    (list[int], "not a list", "x", None),
    (list[int], [1, "two"], "x[1]", [1, None]),
    (list[int], [1, 2.5], "x[1]", [1, None]),  # the element that does not fit is null
    (list[Address], [1], "x[0]", [None]),
    (Address, "paris", "x", None),
    (Address, [{"city": "p"}], "x", None),
    (Address, {"city": 5}, "x.city", {"city": None, "zip": None}),
    (Address, {"city": "p", "zip": 2.5}, "x.zip", {"city": "p", "zip": None}),
]


def _one_field_model(annotation: Any) -> type[Persistable]:
    return create_model(  # type: ignore[call-overload,no-any-return]
        f"One{next(_counter)}", __base__=Persistable, x=(Optional[annotation], None), ok=(int, 0)
    )


@pytest.mark.parametrize(
    ("annotation", "stored", "path", "as_null"), WRONG, ids=[f"{a}-{v!r}" for a, v, _, _ in WRONG]
)
def test_wrong_type_raises_naming_field_id_and_value(
    db: Any, annotation: Any, stored: Any, path: str, as_null: Any
) -> None:
    model = _one_field_model(annotation)
    coll = db.wrong
    good, bad = _insert(coll, [{"ok": 1}, {"x": stored, "ok": 2}])
    schema = arrow_schema(model)

    with pytest.raises(DocumentValidationError) as info:
        find_table(coll, schema)
    message = str(info.value)
    assert f"_id={bad!r}" in message and f"field {path!r}" in message, message
    assert model.__name__ in message and "on_invalid='null'" in message

    rows = find_table(coll, schema, on_invalid="null", sort=[("_id", 1)]).to_pylist()
    assert [r["ok"] for r in rows] == [1, 2]
    assert rows[1]["x"] == as_null and rows[0]["x"] is None


def test_wrong_type_outside_the_requested_rows_does_not_raise(db: Any) -> None:
    model = _one_field_model(int)
    _insert(db.scope, [{"x": 1}, {"x": 2}, {"x": 2.5}, {"x": "abc"}])
    schema = arrow_schema(model)
    rows = find_table(db.scope, schema, sort=[("_id", 1)], limit=2).to_pylist()
    assert [r["x"] for r in rows] == [1, 2]
    with pytest.raises(DocumentValidationError, match="2.5"):
        find_table(db.scope, schema, sort=[("_id", 1)], limit=3)
    with pytest.raises(DocumentValidationError, match="2.5"):
        find_table(db.scope, schema, filter={"x": {"$ne": 1}}, sort=[("_id", 1)], skip=1, limit=1)


def test_a_load_sends_the_query_and_the_plain_projection_only(db_name: str, commands: Any) -> None:
    """No computed field, no second query: wrong types are found in the raw BSON."""
    from loom_frames import declare_persist_db, fld

    @declare_persist_db(db_name=db_name, collection_name="plain")
    class Plain(Persistable):
        name: str
        n: int = 0
        score: Optional[float] = None
        color: Optional[Color] = None
        opt: Optional[Opt] = None
        tags: list[str] = []

    coll = Plain.collection()
    _, bad = _insert(coll, [{"name": "a", "n": 1, "score": float("nan")},
                            {"name": "b", "n": 2.5, "color": "green", "opt": "x"}])
    commands.clear()
    with pytest.raises(DocumentValidationError, match=re.escape(f"_id={bad!r}")):
        Plain.filter(fld["name"] >= "a").load_polars()
    table = Plain.filter(fld["name"] >= "a").load_table(on_invalid="null")
    assert [c["name"] for c in commands.commands] == ["find", "find"]  # nothing else
    for sent in commands.named("find"):
        assert sent["filter"] == {"name": {"$gte": "a"}}
        assert sent["projection"] == {
            "_id": 1, "created_at": 1, "updated_time": 1, "name": 1, "n": 1, "score": 1,
            "color": 1, "opt": 1, "tags": 1,
        }
    rows = table.to_pylist()
    assert math.isnan(rows[0]["score"]) and rows[0]["n"] == 1
    assert rows[1]["n"] is None and rows[1]["color"] is None and rows[1]["opt"] is None


# ------------------------------------------------------------- other entry points
def test_sort_skip_limit_and_find_options(db: Any) -> None:
    _insert(db.things, [{"name": f"n{i}", "n": i} for i in range(10)])
    table = find_table(
        db.things,
        arrow_schema(Thing, ["name", "n"]),
        filter={"n": {"$gte": 2}},
        sort=[("n", -1)],
        skip=1,
        limit=3,
        comment="loom test",
    )
    assert table.column("n").to_pylist() == [8, 7, 6]
    assert table.column_names == ["name", "n"]


def test_iter_batches_bounded_and_equal_to_find_table(db: Any) -> None:
    _insert(
        db.things,
        [{"name": f"n{i}", "n": i, "score": float("nan") if i % 3 else i} for i in range(10)],
    )
    schema = arrow_schema(Thing)
    batches = list(iter_batches(db.things, schema, sort=[("_id", 1)], batch_size=3))
    assert [b.num_rows for b in batches] == [3, 3, 3, 1]
    assert all(b.schema.equals(schema) for b in batches)
    whole = find_table(db.things, schema, sort=[("_id", 1)])
    assert same(pa.Table.from_batches(batches).to_pylist(), whole.to_pylist())
    piped = list(
        iter_batches(
            db.things,
            schema,
            pipeline=[{"$match": {"n": {"$lt": 5}}}, {"$sort": {"n": 1}}],
            batch_size=2,
        )
    )
    assert pa.Table.from_batches(piped).column("n").to_pylist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="positive"):
        next(iter_batches(db.things, schema, batch_size=0))


def test_aggregate_table_with_a_plain_schema(db: Any) -> None:
    _insert(db.things, [{"name": "a", "n": 1}, {"name": "a", "n": 3}, {"name": "b", "n": 5}])
    schema = pa.schema({"_id": pa.string(), "avg": pa.float64(), "count": pa.int64()})
    table = aggregate_table(
        db.things,
        [
            {"$group": {"_id": "$name", "avg": {"$avg": "$n"}, "count": {"$sum": 1}}},
            {"$sort": {"_id": 1}},
        ],
        schema,
    )
    assert table.to_pylist() == [
        {"_id": "a", "avg": 2.0, "count": 2},
        {"_id": "b", "avg": 5.0, "count": 1},
    ]
    with pytest.raises(PlanError, match=r"\$out"):
        aggregate_table(db.things, [{"$out": "elsewhere"}], schema)


def test_server_errors_are_wrapped(db: Any) -> None:
    with pytest.raises(PlanError, match="rejected"):
        find_table(db.things, arrow_schema(Thing), filter={"$bogus": 1})


def test_on_invalid_must_be_raise_or_null(db: Any) -> None:
    with pytest.raises(ValueError, match="did you mean 'null'"):
        find_table(db.things, arrow_schema(Thing), on_invalid="nul")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- frames
class Typed(Persistable):
    s: str
    i: int
    f: float
    b: bool
    t: dt.datetime
    d: dt.date
    dec: Decimal
    tags: list[str]
    maybe_i: Optional[int] = None


@pytest.fixture
def typed_table(db: Any) -> pa.Table:
    rows = [
        Typed(
            s="x",
            i=1,
            f=1.5,
            b=True,
            t=dt.datetime(1, 1, 1),
            d=dt.date(9999, 12, 31),
            dec=Decimal("1.5"),
            tags=["a"],
            maybe_i=None,
        ),
        Typed(
            s="y",
            i=2,
            f=float("nan"),
            b=False,
            t=dt.datetime(9999, 12, 31, 23, 59, 59, 999000),
            d=dt.date(1, 1, 1),
            dec=Decimal("-2"),
            tags=[],
            maybe_i=7,
        ),
    ]
    docs = [to_bson(r.model_dump(by_alias=True, round_trip=True)) for r in rows]
    _insert(db.typed, docs)
    return find_table(db.typed, arrow_schema(Typed), sort=[("_id", 1)])


def test_pandas_dtypes_follow_the_schema_not_the_data(typed_table: pa.Table) -> None:
    df = to_frame(typed_table, "pandas")
    dtypes = {k: str(v) for k, v in df.dtypes.items()}
    assert dtypes["i"] == "Int64" and dtypes["maybe_i"] == "Int64" and dtypes["b"] == "boolean"
    assert dtypes["t"] == "datetime64[ms, UTC]" and dtypes["created_at"] == "datetime64[ms, UTC]"
    assert dtypes["f"] == "float64" and dtypes["s"] in ("str", "string")
    assert df["t"].iloc[0] == pd.Timestamp("0001-01-01", tz="UTC")
    assert df["d"].iloc[0] == dt.date(9999, 12, 31)
    assert df["dec"].iloc[0] == Decimal("1.5") and pd.isna(df["maybe_i"].iloc[0])


def test_polars_dtypes(typed_table: pa.Table) -> None:
    frame = to_frame(typed_table, "polars")
    assert frame.schema == polars_schema(Typed)
    assert frame["t"].to_list()[1] == dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC)
    assert frame["f"].is_nan().to_list() == [False, True]
    assert frame["id"].str.len_chars().to_list() == [24, 24]


def test_pyarrow_is_the_table_itself_and_unknown_backends_fail(typed_table: pa.Table) -> None:
    assert to_frame(typed_table, "pyarrow") is typed_table
    with pytest.raises(ValueError, match="did you mean 'polars'"):
        to_frame(typed_table, "polar")  # type: ignore[arg-type]


def test_object_ids_and_uuids_are_canonical_strings(db: Any) -> None:
    class Keys(Persistable):
        ref: ObjectIdField
        key: uuid.UUID

    oid, key = ObjectId(), uuid.uuid4()
    (doc_id,) = _insert(db.keys, [{"ref": oid, "key": key}])
    row = find_table(db.keys, arrow_schema(Keys)).to_pylist()[0]
    assert row["id"] == str(doc_id) and row["ref"] == str(oid) and row["key"] == str(key)
    assert bson.ObjectId(row["id"]) == doc_id and uuid.UUID(row["key"]) == key


# ======================================== wrong types, property: loader vs reference
class Mixed(Persistable):
    i: Optional[int] = None
    f: Optional[float] = None
    s: Optional[str] = None
    b: Optional[bool] = None
    t: Optional[dt.datetime] = None
    d: Optional[dt.date] = None
    dec: Optional[Decimal] = None
    u: Optional[uuid.UUID] = None
    e: Optional[Color] = None
    o: Optional[ObjectIdField] = None
    ints: list[int] = []
    a: Optional[Address] = None
    many: list[Address] = []


_SCALARS = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0.0, 3.0, -2.0, 2.5, float("nan"), float("inf"), 1e30]),
    st.floats(allow_nan=True),
    st.text(max_size=3, alphabet="abcred"),
    st.sampled_from(["red", "blue", "green"]),
    st.booleans(),
    st.sampled_from(
        [
            dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
            dt.datetime(2024, 1, 2, 5, tzinfo=dt.UTC),
            dt.datetime(1, 1, 1, tzinfo=dt.UTC),
        ]
    ),
    st.sampled_from(
        [Decimal128("1.5"), Decimal128("NaN"), Decimal128("1E+30"), Decimal128("-0.001")]
    ),
    st.sampled_from(
        [
            ObjectId("64f8a0000000000000000001"),
            uuid.UUID(int=7),
            Binary(b"0123456789abcdef", 3),
            Binary(b"abc", 4),
            b"raw",
        ]
    ),
)
_ANY = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["city", "zip", "x"]), inner, max_size=3)
    ),
    max_leaves=5,
)


_ADDRESS = st.fixed_dictionaries(
    {"city": st.text(max_size=3)}, optional={"zip": st.integers(-5, 5) | st.none()}
)
_FITTING: dict[str, st.SearchStrategy[Any]] = {
    "i": st.integers(-(2**63), 2**63 - 1) | st.sampled_from([3.0, -0.0, True, 1e15]),
    "f": st.floats() | st.integers(-(2**63), 2**63 - 1) | st.booleans(),
    "s": st.text(max_size=5),
    "b": st.booleans(),
    "t": st.datetimes(min_value=dt.datetime(1, 1, 1), timezones=st.just(dt.UTC)),
    "d": st.dates().map(lambda d: dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)),
    "dec": st.sampled_from(
        [Decimal128("1.5"), Decimal128("-12345678901234567890.123"), Decimal128("0E-20")]
    ),
    "u": st.uuids(),
    "e": st.sampled_from(["red", "blue"]),
    "o": st.binary(min_size=12, max_size=12).map(ObjectId),
    "ints": st.lists(st.integers(-3, 3) | st.sampled_from([2.0, None]), max_size=3),
    "a": _ADDRESS | st.none(),
    "many": st.lists(_ADDRESS | st.none(), max_size=3),
}


def frame_value(value: Any, col: Any) -> Any:
    """Reference: what the frame holds for a stored value that fits ``col``."""
    from loom_frames.expr import Kind

    if value is None or (isinstance(value, float) and math.isnan(value)):
        nan_kept = col.kind is Kind.FLOAT and value is not None
        return value if nan_kept else None
    kind = col.kind
    if kind is Kind.LIST:
        return [frame_value(v, col.item) for v in value]
    if kind is Kind.STRUCT:
        return {c.name: frame_value(value.get(c.key), c) for c in col.children}
    if kind is Kind.INT or (kind is Kind.ENUM and str(col.type) == "int64"):
        return int(value)
    if kind is Kind.FLOAT:
        return float(value)
    if kind in (Kind.OBJECTID, Kind.UUID):
        return str(value if not isinstance(value, Binary) else uuid.UUID(bytes=bytes(value)))
    if kind is Kind.DATE:
        return value.date()
    return value


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_loader_agrees_with_the_reference_check(db: Any, data: st.DataObject) -> None:
    """raise iff some value does not fit; null mode never raises; fitting rows are exact."""
    from loom_frames.codec import ABSENT as MISSING
    from loom_frames.codec import problem
    from loom_frames.columns import model_columns

    columns = [
        c for c in model_columns(Mixed) if c.key not in ("_id", "created_at", "updated_time")
    ]
    fields = {c.key: st.one_of(_FITTING[c.key], _FITTING[c.key], _ANY) for c in columns}
    docs = data.draw(st.lists(st.fixed_dictionaries({}, optional=fields), min_size=1, max_size=4))
    coll = db[f"ref{next(_counter)}"]
    ids = _insert(coll, docs)
    stored = {
        d["_id"]: d
        for d in coll.with_options(
            codec_options=coll.codec_options.with_options(
                uuid_representation=bson.binary.UuidRepresentation.UNSPECIFIED
            )
        ).find()
    }
    bad = {
        i
        for i in ids
        if any(problem(_decoded(stored[i].get(c.key, MISSING)), c, c.name) for c in columns)
    }
    schema = arrow_schema(Mixed)
    event(f"{len(bad)} of {len(ids)} documents do not fit")

    if bad:
        with pytest.raises(DocumentValidationError) as info:
            find_table(coll, schema)
        assert any(f"_id={i!r}" in str(info.value) for i in bad), str(info.value)
    else:
        find_table(coll, schema)
    rows = find_table(coll, schema, on_invalid="null", sort=[("_id", 1)]).to_pylist()
    for doc_id, row in zip(ids, rows, strict=True):
        if doc_id in bad:
            continue
        for c in columns:
            want = frame_value(_decoded(stored[doc_id].get(c.key)), c)
            assert same(row[c.name], want), (c.name, row[c.name], want, stored[doc_id])


def _decoded(value: Any) -> Any:
    """Subtype-4 binaries as the loader's reference decodes them (16 bytes -> UUID)."""
    if isinstance(value, Binary) and value.subtype == 4 and len(value) == 16:
        return uuid.UUID(bytes=bytes(value))
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    if isinstance(value, dict):
        return {k: _decoded(v) for k, v in value.items()}
    return value


# ====================================================== conversion units (no server)
@given(
    st.decimals(allow_nan=True, allow_infinity=True, places=None)
    .filter(lambda d: not d.is_finite() or len(d.as_tuple().digits) <= 34)
    .filter(lambda d: not d.is_finite() or -6176 <= d.as_tuple().exponent <= 6111),
    st.integers(0, 20),
)
def test_decimal128_bits_decode_exactly(value: Decimal, scale: int) -> None:
    from loom_frames.read.decode import _bid_unscaled

    bid = Decimal128(value).bid
    got = _bid_unscaled(int.from_bytes(bid[:8], "little"), int.from_bytes(bid[8:], "little"), scale)
    if not value.is_finite():
        assert got is None
        return
    unscaled = value.scaleb(scale, context=__import__("decimal").Context(prec=10_000))
    assert got == (int(unscaled) if unscaled == unscaled.to_integral_value() else None)


def test_hex_strings_keep_nulls_and_slices() -> None:
    from loom_frames.read.decode import _hex_strings

    ids = [ObjectId() for _ in range(5)]
    arr = pa.array(
        [i.binary for i in ids[:2]] + [None] + [i.binary for i in ids[3:]], pa.binary(12)
    )
    out = _hex_strings(arr.slice(1), 12)
    assert out.to_pylist() == [str(ids[1]), None, str(ids[3]), str(ids[4])]
    key = uuid.uuid4()
    assert _hex_strings(
        pa.array([key.bytes], pa.binary(16)), 16, dashes=[8, 12, 16, 20]
    ).to_pylist() == [str(key)]


def test_decimal_fit_is_decided_without_rounding() -> None:
    from loom_frames.codec import fits_decimal

    value = Decimal("1234567890123456789.123456789012345")  # 34 digits
    assert fits_decimal(value, 38, 15) and not fits_decimal(value, 38, 14)
    assert not fits_decimal(Decimal("1E+20"), 38, 18) and fits_decimal(Decimal("-1E+19"), 38, 18)
    assert not fits_decimal(Decimal("NaN"), 38, 18)
