"""insert_dataframe / upsert_dataframe against the real wire server.

Tiers: the encoder against ``bson.encode`` and ``persist()``'s documents (no server),
the frame rules (columns, casts, markers, nulls, ids), batching seen on the wire, the
idempotent upsert, fault injection with ``configureFailPoint`` (a failing command and a
dropped connection), and a hypothesis round trip insert -> load_polars.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import bson
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from pydantic import BaseModel, Field, field_validator

import loom_frames as lm
from loom_frames import (
    FrameValidationError,
    FrameWriteError,
    IncrCounter,
    LedgerModel,
    Persistable,
    StrLower,
    StrUpper,
    TimeInserted,
    TimeSeriesLedgerModel,
    TimeUpdated,
    declare_persist_db,
    declare_timeseries,
)
from loom_frames import codec
from loom_frames.codec import document_of
from loom_frames.connection import CODEC_OPTIONS
from loom_frames.write import arrow_bson as ab
from loom_frames.write import frames, upsert
from loom_frames.write.prepare import frame_to_arrow, prepare

UTC = dt.UTC


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    city: StrLower
    zip: int | None = None


def user_model(db_name: str, collection: str = "users") -> Any:
    @declare_persist_db(db_name=db_name, collection_name=collection, unique=["email"])
    class User(Persistable):
        name: str
        email: StrLower
        age: int
        is_active: bool = True
        score: float | None = None
        logins: IncrCounter = 0

    return User


@pytest.fixture
def User(db_name: str) -> Any:
    return user_model(db_name)


def stored(model: Any, **filter_: Any) -> list[dict[str, Any]]:
    return list(model.collection().find(filter_, sort=[("_id", 1)]))


def three_users() -> pd.DataFrame:
    return pd.DataFrame({
        "name": ["Bob", "Charlie", "Dana"],
        "email": ["Bob@Example.com", "charlie@example.com", "DANA@x.org"],
        "age": [25, 35, 45],
    })


# ---------------------------------------------------------------- the encoder
def test_vectorised_elements_are_the_bytes_bson_encode_writes() -> None:
    ids = ab.new_object_ids(3)
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(12), 3, [None, pa.py_buffer(ids)])
    columns = [
        ("_id", ab.object_id_elements("_id", fixed)),
        ("s", ab.string_elements("s", pa.array(["héllo", "", "a\x00b"]))),
        ("i", ab.int_elements("i", pa.array([1, 2**40, -(2**63)]))),
        ("f", ab.double_elements("f", pa.array([1.5, -0.0, 1e300]))),
        ("b", ab.bool_elements("b", pa.array([True, False, True]))),
        ("t", ab.datetime_elements("t", pa.array([0, -62135596800000, 253402300799999],
                                                 pa.timestamp("ms", tz="UTC")))),
    ]
    docs = ab.join_documents([e for _, e in columns]).to_pylist()
    for row, raw in enumerate(docs):
        decoded = bson.decode(raw, codec_options=CODEC_OPTIONS)
        assert bson.encode(decoded, codec_options=CODEC_OPTIONS) == raw
        assert decoded["_id"] == ObjectId(bytes(ids[row]))
    assert bson.decode(docs[2])["i"] == -(2**63)
    assert bson.decode(docs[0])["t"] == dt.datetime(1970, 1, 1)


def test_new_object_ids_are_unique_increasing_and_hex_round_trips() -> None:
    ids = ab.new_object_ids(10_000)
    hexes = ab.object_id_hex(ids).to_pylist()
    assert len(set(hexes)) == 10_000
    assert [ObjectId(h) for h in hexes] == sorted(ObjectId(h) for h in hexes)
    back, bad = ab.hex_object_ids(pa.array(hexes))
    assert not bad.any() and (back == ids).all()
    assert len(set(ab.object_id_hex(ab.new_object_ids(5)).to_pylist()) & set(hexes)) == 0


def test_documents_are_exactly_what_persist_stores() -> None:
    """A row's document == document_of() of the object built from that row."""

    @declare_persist_db(db_name="unused", collection_name="rich", version=3)
    class Rich(Persistable):
        name: str
        email: StrLower
        code: StrUpper
        age: int
        big: int
        score: float | None = None
        tags: list[str] = []
        address: Address | None = None
        color: Color = Color.RED
        amount: Decimal | None = None
        token: uuid.UUID | None = None
        day: dt.date | None = None
        seen: dt.datetime | None = None
        logins: IncrCounter = 0
        created_at: TimeInserted

    now = lm.fields.utc_now()
    frame = pl.DataFrame({
        "name": ["Ann", "Bo"],
        "email": ["Ann@X.org", "BO@y.org"],
        "code": ["ab", "Cd"],
        "age": pl.Series([30, 40], dtype=pl.Int32),
        "big": [2**40, -5],
        "score": [1.25, None],
        "tags": [["a", "b"], []],
        "address": [{"city": "PARIS", "zip": 75001}, None],
        "color": ["blue", "red"],
        "amount": pl.Series([Decimal("1.50"), None], dtype=pl.Decimal(10, 2)),
        "token": [str(uuid.UUID(int=7)), None],
        "day": [dt.date(2024, 2, 29), None],
        "seen": [dt.datetime(2024, 1, 1, 12, 0, 0, 123456), None],
    })
    prep = prepare(Rich, frame_to_arrow(frame)[0], now=now)
    docs, _ = prep.documents(0, 2)
    for row, raw in zip(frame.iter_rows(named=True), docs, strict=True):
        got = bson.decode(raw, codec_options=CODEC_OPTIONS)
        obj = Rich.model_validate({k: v for k, v in row.items() if v is not None}
                                  | {"id": got["_id"], "created_at": now, "updated_time": now})
        assert got == document_of(obj)
        assert raw == bson.encode(document_of(obj), codec_options=CODEC_OPTIONS)


# ---------------------------------------------------------------- inserting
def test_guide_example_inserts_a_pandas_frame(User: Any) -> None:
    df = pd.DataFrame({
        "name": ["Bob", "Charlie"],
        "email": ["bob@example.com", "Charlie@Example.com"],
        "age": [25, 35],
    })
    result = User.insert_dataframe(df)
    assert (result.inserted, result.updated, result.unchanged, result.failed) == (2, 0, 0, ())
    assert isinstance(result.ids, pd.Series) and list(result.ids.index) == list(df.index)
    docs = {d["name"]: d for d in stored(User)}
    assert docs["Charlie"]["email"] == "charlie@example.com"
    assert docs["Bob"]["is_active"] is True and docs["Bob"]["logins"] == 0
    assert docs["Bob"]["score"] is None  # an Optional field without a column: null
    assert docs["Bob"]["created_at"] == docs["Bob"]["updated_time"]
    assert [str(docs[n]["_id"]) for n in ("Bob", "Charlie")] == result.ids.tolist()


@pytest.mark.parametrize("backend", ["polars", "pyarrow", "pandas"])
def test_every_backend_and_ids_in_frame_order(User: Any, backend: str) -> None:
    frame = pl.from_pandas(three_users())
    native = {"polars": frame, "pyarrow": frame.to_arrow(), "pandas": frame.to_pandas()}[backend]
    result = User.insert_dataframe(native)
    ids = result.ids
    expected_type = {"polars": pl.Series, "pyarrow": pa.Array, "pandas": pd.Series}[backend]
    assert isinstance(ids, expected_type)
    hexes = ids.to_pylist() if backend == "pyarrow" else list(ids)
    loaded = User.filter().sort("id").load_polars()
    assert loaded["id"].to_list() == hexes  # new ids increase in frame order
    assert loaded["name"].to_list() == ["Bob", "Charlie", "Dana"]
    assert loaded["email"].to_list() == ["bob@example.com", "charlie@example.com", "dana@x.org"]


def test_missing_and_unknown_columns_are_listed_together(User: Any) -> None:
    df = pl.DataFrame({"name": ["a"], "agee": [1], "colour": ["x"]})
    with pytest.raises(FrameValidationError) as info:
        User.insert_dataframe(df)
    message = str(info.value)
    assert "missing required column(s) 'email', 'age'" in message
    assert "unknown column(s) 'agee', 'colour'" in message and "'age'" in message
    assert User.collection().count_documents({}) == 0


def test_extra_ignore_skips_unknown_columns_but_not_missing_ones(User: Any) -> None:
    df = pl.DataFrame({"name": ["a"], "email": ["A@b.c"], "age": [1], "junk": [0]})
    assert User.insert_dataframe(df, extra="ignore").inserted == 1
    assert "junk" not in stored(User)[0]
    with pytest.raises(FrameValidationError, match="missing required column"):
        User.insert_dataframe(df.drop("age"), extra="ignore")


@pytest.mark.parametrize("name", ["$where", "a.b", "email.$"])
def test_column_names_with_dollar_or_dot_are_rejected(User: Any, name: str) -> None:
    df = pl.DataFrame({"name": ["a"], "email": ["e"], "age": [1], name: [1]})
    with pytest.raises(FrameValidationError, match="contain '\\$' or '.'"):
        User.insert_dataframe(df, extra="ignore")


def test_both_id_and__id_columns_is_an_error(User: Any) -> None:
    oid = str(ObjectId())
    df = pl.DataFrame({"id": [oid], "_id": [oid], "name": ["a"], "email": ["e"], "age": [1]})
    with pytest.raises(FrameValidationError, match="both give field 'id'"):
        User.insert_dataframe(df)


def test_safe_casts(User: Any) -> None:
    df = pl.DataFrame({
        "name": pl.Series(["a", "b"], dtype=pl.Categorical),
        "email": ["A@x", "B@x"],
        "age": pl.Series([1.0, 2.0], dtype=pl.Float32),  # whole floats -> int
        "score": pl.Series([3, 4], dtype=pl.Int32),  # int -> float
        "logins": pl.Series([5, 6], dtype=pl.UInt8),
    })
    User.insert_dataframe(df)
    docs = stored(User)
    assert [(d["name"], d["age"], d["score"], d["logins"]) for d in docs] == [
        ("a", 1, 3.0, 5), ("b", 2, 4.0, 6)
    ]
    assert isinstance(docs[0]["score"], float) and isinstance(docs[0]["age"], int)


@pytest.mark.parametrize(
    ("column", "values", "expected"),
    [
        ("age", [1.0, 2.5], "row 1 holds 2.5: not a whole number"),
        ("age", pl.Series([1, 2**64 - 1], dtype=pl.UInt64), "row 1 .*larger than int64"),
        ("age", ["1", "2"], "column 'age' is (large_)?string, expected int"),
        ("age", [True, False], "column 'age' is bool, expected int"),
        ("score", [1, 2**60], "row 1 holds 1152921504606846976: an integer beyond"),
        ("name", [1, 2], "column 'name' is int64, expected str"),
        ("is_active", [1, 0], "column 'is_active' is int64, expected bool"),
    ],
)
def test_unsafe_casts_name_the_column_and_first_bad_row(
    User: Any, column: str, values: Any, expected: str
) -> None:
    df = pl.DataFrame({"name": ["a", "b"], "email": ["e", "f"], "age": [1, 2]})
    df = df.with_columns(pl.Series(column, values))
    with pytest.raises(FrameValidationError, match=expected):
        User.insert_dataframe(df)
    assert User.collection().count_documents({}) == 0


def test_datetimes_naive_is_utc_aware_is_converted_floored_to_ms(db_name: str) -> None:
    @declare_persist_db(db_name=db_name, collection_name="events")
    class Event(Persistable):
        at: dt.datetime
        day: dt.datetime | None = None

    paris = dt.timezone(dt.timedelta(hours=2))
    df = pd.DataFrame({
        "at": pd.to_datetime(["2024-05-01 12:00:00.123456", "1969-12-31 23:59:59.999999"]),
        "day": [dt.date(2024, 5, 1), None],
    })
    df["day"] = df["day"].astype(object)
    Event.insert_dataframe(pl.from_pandas(df))
    aware = pl.DataFrame({"at": [dt.datetime(2024, 5, 1, 14, 0, tzinfo=paris)]})
    Event.insert_dataframe(aware)
    docs = stored(Event)
    assert docs[0]["at"] == dt.datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert docs[1]["at"] == dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)  # floor
    assert docs[0]["day"] == dt.datetime(2024, 5, 1, tzinfo=UTC)
    assert docs[2]["at"] == dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_nan_and_null_rules(db_name: str) -> None:
    @declare_persist_db(db_name=db_name, collection_name="m")
    class M(Persistable):
        label: str
        x: float | None = None
        y: float = 1.0
        n: int = 7

    pandas_df = pd.DataFrame({"label": ["p"], "x": [np.nan], "y": [np.nan], "n": [None]})
    M.insert_dataframe(pandas_df)
    polars_df = pl.DataFrame({"label": ["q", "r"], "x": [float("nan"), None],
                              "y": [float("nan"), None]})
    M.insert_dataframe(polars_df)
    docs = {d["label"]: d for d in stored(M)}
    # pandas: NaN is pandas' missing value -> null (Optional) / the default (y, n)
    assert docs["p"]["x"] is None and docs["p"]["y"] == 1.0 and docs["p"]["n"] == 7
    # Polars/Arrow: NaN is a float value and kept; null follows the same rules as pandas
    assert math.isnan(docs["q"]["x"]) and math.isnan(docs["q"]["y"])
    assert docs["r"]["x"] is None and docs["r"]["y"] == 1.0
    loaded = M.filter().sort("label").load_polars()
    assert loaded["x"].is_nan().to_list() == [None, True, None]


def test_null_in_a_required_field_is_an_error(User: Any) -> None:
    df = pl.DataFrame({"name": ["a", None], "email": ["e", "f"], "age": [1, 2]})
    with pytest.raises(FrameValidationError, match="column 'name' row 1 holds None: name is required"):
        User.insert_dataframe(df)


def test_markers_apply_vectorised_with_python_case_rules(db_name: str) -> None:
    @declare_persist_db(db_name=db_name, collection_name="marks")
    class Mark(Persistable):
        low: StrLower
        up: StrUpper
        hits: IncrCounter = 0
        first: TimeInserted
        last: TimeUpdated

    given = dt.datetime(2020, 1, 1, tzinfo=UTC)
    df = pl.DataFrame({
        "low": ["ABC", "İstanbul", "ΣΑΣ"],
        "up": ["abc", "straße", "ﬃ"],
        "last": [given, None, None],
    })
    before = lm.fields.utc_now()
    Mark.insert_dataframe(df)
    docs = stored(Mark)
    assert [d["low"] for d in docs] == ["abc", "İstanbul".lower(), "ΣΑΣ".lower()]
    assert [d["up"] for d in docs] == ["ABC", "STRASSE", "FFI"]
    assert [d["hits"] for d in docs] == [0, 0, 0]
    assert docs[0]["last"] == given  # a given time is kept
    assert docs[1]["last"] == docs[1]["first"] == docs[2]["first"] >= before
    assert docs[0]["created_at"] == docs[0]["updated_time"] >= before


def test_ids_given_as_hex_or_objectid_and_new_ones_for_the_rest(User: Any) -> None:
    a, b = ObjectId(), ObjectId()
    df = pd.DataFrame({"_id": [a, None, str(b)], "name": ["a", "b", "c"],
                       "email": ["e", "f", "g"], "age": [1, 2, 3]})
    result = User.insert_dataframe(df)
    assert result.ids[0] == str(a) and result.ids[2] == str(b)
    assert ObjectId.is_valid(result.ids[1])
    assert {d["name"]: d["_id"] for d in stored(User)} == {
        "a": a, "b": ObjectId(result.ids[1]), "c": b
    }
    with pytest.raises(FrameValidationError, match="row 0 holds 'nope': not an ObjectId"):
        User.insert_dataframe(pl.DataFrame({"id": ["nope"], "name": ["x"], "email": ["y"],
                                            "age": [1]}))


def test_duplicate_ids_are_reported_per_row_never_dropped(User: Any) -> None:
    taken = ObjectId()
    User.collection().insert_one({"_id": taken, "name": "old"})
    twin = str(ObjectId())
    df = pl.DataFrame({"id": [str(taken), twin, None, twin], "name": list("abcd"),
                       "email": list("efgh"), "age": [1, 2, 3, 4]})
    with pytest.raises(FrameWriteError) as info:
        User.insert_dataframe(df)
    result = info.value.result
    assert isinstance(info.value, lm.WriteFailedError)
    assert result.inserted == 2
    assert [(f.row, f.id, f.code) for f in result.failed] == [(0, str(taken), 11000), (3, twin, 11000)]
    assert "E11000" in result.failed[0].message
    assert "row 0 (id" in str(info.value) and "on_error='report'" in str(info.value)
    assert "clashes with a stored document on a unique index" in str(info.value)
    assert "re-running" not in str(info.value)  # a rerun would clash again
    assert User.collection().count_documents({}) == 3
    report = User.insert_dataframe(df.with_columns(email=pl.Series(list("ijkl"))),
                                   on_error="report")
    assert (report.inserted, report.failed_rows) == (1, [0, 1, 3])  # row 2: a new id


def test_batches_are_bounded_by_rows_and_bytes(
    User: Any, commands: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    df = pl.DataFrame({"name": [f"n{i}" for i in range(10)],
                       "email": [f"e{i}" for i in range(10)], "age": list(range(10))})
    seen: list[tuple[int, int]] = []
    User.insert_dataframe(df, batch_size=3, progress=lambda done, total: seen.append((done, total)))
    sizes = [len(c["documents"]) for c in commands.named("insert")]
    assert sizes == [3, 3, 3, 1]
    assert all(c["ordered"] is False for c in commands.named("insert"))
    assert seen == [(3, 10), (6, 10), (9, 10), (10, 10)]
    commands.clear()
    one = len(bson.encode(stored(User)[0]))
    monkeypatch.setattr(frames, "MAX_BATCH_BYTES", 2 * one + 10)
    User.insert_dataframe(df.with_columns(email=pl.col("email") + "b"))
    assert [len(c["documents"]) for c in commands.named("insert")] == [2, 2, 2, 2, 2]


def test_an_oversized_row_fails_alone(
    User: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(codec, "MAX_DOCUMENT_BYTES", 200)
    df = pl.DataFrame({"name": ["short", "x" * 300, "fine"], "email": ["e1", "e2", "e3"],
                       "age": [1, 2, 3]})
    result = User.insert_dataframe(df, on_error="report", progress=True)
    assert result.inserted == 2
    assert [(f.row, f.code) for f in result.failed] == [(1, frames.DOCUMENT_TOO_LARGE)]
    assert sorted(d["name"] for d in stored(User)) == ["fine", "short"]
    err = capsys.readouterr().err  # progress=True: a tqdm bar on stderr, even for one batch
    assert "User: insert: 100%" in err and "3/3" in err


def test_ledger_inserts_and_refuses_upserts(db_name: str) -> None:
    @declare_persist_db(db_name=db_name, collection_name="logs")
    class Log(LedgerModel):
        action: str

    df = pl.DataFrame({"action": ["a", "b"]})
    assert Log.insert_dataframe(df).inserted == 2
    assert Log.insert_dataframe(df).inserted == 2  # append-only: new documents again
    assert Log.collection().count_documents({}) == 4
    with pytest.raises(lm.ModelDeclarationError, match="append-only"):
        Log.upsert_dataframe(df, on=["action"])


def test_time_series_time_column_honoured_else_now(db_name: str, client: Any) -> None:
    @declare_timeseries(metakey="sensor", granularity="minutes")
    @declare_persist_db(db_name=db_name, collection_name="readings")
    class Reading(TimeSeriesLedgerModel):
        sensor: str
        value: float

    at = dt.datetime(2024, 3, 1, 10, 30, tzinfo=UTC)
    df = pl.DataFrame({"sensor": ["s1", "s2"], "value": [1.0, 2.0], "updated_time": [at, None]})
    before = lm.fields.utc_now()
    Reading.insert_dataframe(df)
    Reading.insert_dataframe(pl.DataFrame({"sensor": ["s3"], "value": [3.0]}))
    info = client[db_name].command("listCollections", filter={"name": "readings"})
    assert "timeseries" in info["cursor"]["firstBatch"][0]["options"]
    docs = {d["sensor"]: d for d in Reading.collection().find()}
    assert docs["s1"]["updated_time"] == at
    assert docs["s2"]["updated_time"] >= before and docs["s3"]["updated_time"] >= before
    with pytest.raises(FrameValidationError, match="column 'sensor' row 0 holds None"):
        Reading.insert_dataframe(pl.DataFrame({"sensor": [None, "x"], "value": [1.0, 2.0]}))


def test_nested_list_decimal_uuid_enum_date_columns_round_trip(db_name: str) -> None:
    @declare_persist_db(db_name=db_name, collection_name="rich")
    class Rich(Persistable):
        tags: list[str] = []
        address: Address | None = None
        color: Color = Color.RED
        amount: Decimal | None = Field(default=None, max_digits=10, decimal_places=2)
        token: uuid.UUID | None = None
        day: dt.date | None = None

    token = uuid.uuid4()
    df = pd.DataFrame({
        "tags": [["x", "y"], None],
        "address": [{"city": "PARIS", "zip": 75001}, None],
        "color": [Color.BLUE, "red"],
        "amount": [Decimal("12.50"), None],
        "token": [token, None],
        "day": [dt.date(2024, 2, 29), None],
    })
    Rich.insert_dataframe(df)
    objects = sorted(Rich.filter().load_many(), key=lambda o: o.id)
    assert objects[0].tags == ["x", "y"] and objects[1].tags == []
    assert objects[0].address == Address(city="paris", zip=75001)  # nested marker applied
    assert objects[0].color is Color.BLUE and objects[1].color is Color.RED
    assert objects[0].amount == Decimal("12.50") and objects[0].token == token
    assert objects[0].day == dt.date(2024, 2, 29)
    with pytest.raises(FrameValidationError, match="column 'color' row 0 holds 'green'"):
        Rich.insert_dataframe(pd.DataFrame({"color": ["green"]}))
    with pytest.raises(FrameValidationError, match="column 'amount' row 0"):
        Rich.insert_dataframe(pd.DataFrame({"amount": [Decimal("1.234")]}))


def test_models_with_their_own_validators_validate_row_by_row(db_name: str) -> None:
    @declare_persist_db(db_name=db_name, collection_name="v")
    class Tagged(Persistable):
        tag: str
        n: int = Field(default=0, ge=0)

        @field_validator("tag")
        @classmethod
        def strip(cls, value: str) -> str:
            return value.strip()

    Tagged.insert_dataframe(pl.DataFrame({"tag": ["  a  "], "n": [3]}))
    assert stored(Tagged)[0]["tag"] == "a"
    with pytest.raises(FrameValidationError, match="row 1"):
        Tagged.insert_dataframe(pl.DataFrame({"tag": ["b", "c"], "n": [1, -1]}))
    assert Tagged.collection().count_documents({}) == 1


def test_empty_frame_and_option_errors(User: Any) -> None:
    empty = pl.DataFrame(schema={"name": pl.String, "email": pl.String, "age": pl.Int64})
    result = User.insert_dataframe(empty)
    assert (result.inserted, len(result.ids)) == (0, 0)
    with pytest.raises(ValueError, match="batch_size"):
        User.insert_dataframe(empty, batch_size=0)
    with pytest.raises(ValueError, match="on_error"):
        User.insert_dataframe(empty, on_error="ignore")
    with pytest.raises(TypeError, match="collect"):
        User.insert_dataframe(empty.lazy())


# ---------------------------------------------------------------- upserting
def test_upsert_is_idempotent_and_only_bumps_changed_rows(User: Any, commands: Any) -> None:
    first = User.upsert_dataframe(three_users(), on=["email"])
    assert (first.inserted, first.updated, first.unchanged) == (3, 0, 0)
    before = {d["email"]: d for d in stored(User)}
    changed = three_users().assign(age=[25, 36, 45])  # Charlie changed
    second = User.upsert_dataframe(changed, on="email")
    assert (second.inserted, second.updated, second.unchanged) == (0, 1, 2)
    after = {d["email"]: d for d in stored(User)}
    assert after["charlie@example.com"]["age"] == 36
    assert after["charlie@example.com"]["updated_time"] > before["charlie@example.com"]["updated_time"]
    assert after["charlie@example.com"]["created_at"] == before["charlie@example.com"]["created_at"]
    assert after["bob@example.com"] == before["bob@example.com"]  # not written at all
    assert second.ids.tolist() == [str(before[e]["_id"]) for e in before]
    commands.clear()
    third = User.upsert_dataframe(changed, on="email")
    assert (third.inserted, third.updated, third.unchanged) == (0, 0, 3)
    assert stored(User) == list(after.values())
    assert not commands.writes()  # an unchanged frame sends no write at all
    assert len(commands.named("find")) >= 1


def test_upsert_sets_only_the_columns_the_frame_has(User: Any) -> None:
    User.insert_dataframe(three_users().assign(score=[1.0, 2.0, 3.0], logins=[5, 5, 5]))
    # Required columns are needed (any row may be new); columns with defaults may be left out.
    partial = pl.DataFrame({"email": ["bob@example.com"], "name": ["Bob"], "age": [26]})
    result = User.upsert_dataframe(partial, on=["email"])
    assert (result.updated, result.unchanged) == (1, 0)
    bob = User.collection().find_one({"email": "bob@example.com"})
    assert (bob["age"], bob["score"], bob["logins"]) == (26, 1.0, 5)


def test_upsert_change_detection_semantics(db_name: str) -> None:
    @declare_persist_db(db_name=db_name, collection_name="c", unique=["key"])
    class C(Persistable):
        key: str
        x: float | None = None
        tags: list[str] = []

    C.collection().insert_many([
        {"key": "int", "x": 5},  # stored as an int: 5 == 5.0
        {"key": "missing"},  # missing == null
        {"key": "nan", "x": float("nan"), "tags": []},
    ])
    df = pl.DataFrame({"key": ["int", "missing", "nan"], "x": [5.0, None, float("nan")]})
    result = C.upsert_dataframe(df, on="key")
    assert (result.updated, result.unchanged) == (0, 3)
    assert C.upsert_dataframe(df.with_columns(tags=pl.lit(["a"])), on="key").updated == 3
    assert C.collection().find_one({"key": "int"})["x"] == 5  # left as stored (an int)

    @declare_persist_db(db_name=db_name, collection_name="flags", unique=["key"])
    class F(Persistable):
        key: str
        flag: bool | None = None
        n: int | None = None

    F.collection().insert_many([{"key": "a", "flag": 1, "n": True}])
    changed = F.upsert_dataframe(pl.DataFrame({"key": ["a"], "flag": [True], "n": [1]}), on="key")
    assert changed.updated == 1  # MongoDB never equates a bool with a number
    assert F.collection().find_one({"key": "a"}, {"_id": 0, "key": 1, "flag": 1, "n": 1}) == {
        "key": "a", "flag": True, "n": 1}


def test_upsert_without_a_unique_index_on_the_key_is_refused_naming_it(db_name: str) -> None:
    @declare_persist_db(db_name=db_name, collection_name="loose")
    class Loose(Persistable):
        sku: str
        color: str
        n: int = 0

    df = pl.DataFrame({"sku": ["a"], "color": ["red"], "n": [1]})
    with pytest.raises(lm.ModelDeclarationError) as info:
        Loose.upsert_dataframe(df, on=["sku", "color"])
    message = str(info.value)
    assert "unique=[('sku', 'color')]" in message and "create_index([('sku', 1), ('color', 1)]" in message
    assert Loose.collection().count_documents({}) == 0  # refused before writing anything
    # A unique index on part of the key is enough (at most one document per sku); _id always is.
    Loose.collection().create_index("sku", unique=True)
    assert Loose.upsert_dataframe(df, on=["sku", "color"]).inserted == 1
    with_id = df.with_columns(id=pl.lit(str(ObjectId())))
    assert Loose.upsert_dataframe(with_id.with_columns(sku=pl.lit("b")), on=["id"]).inserted == 1
    # A partial unique index covers only the documents matching its filter: not enough.
    Loose.collection().drop_indexes()
    Loose.collection().create_index("color", unique=True,
                                    partialFilterExpression={"n": {"$gt": 5}})
    with pytest.raises(lm.ModelDeclarationError, match="needs a unique index"):
        Loose.upsert_dataframe(df, on=["color"])


@pytest.mark.parametrize("reverse", [False, True], ids=["index order", "reversed"])
@pytest.mark.parametrize("by_or", [False, True], ids=["grouped lookup", "$or lookup"])
def test_a_compound_key_lookup_reads_one_document_per_row(
    db_name: str, commands: Any, monkeypatch: pytest.MonkeyPatch, reverse: bool, by_or: bool
) -> None:
    key = ["year", "month", "day", "flight"]

    @declare_persist_db(db_name=db_name, collection_name="flights", unique=[tuple(key)])
    class Flight(Persistable):
        year: int
        month: int
        day: int
        flight: int
        delay: float = 0.0

    stored = pl.DataFrame({"year": [2013] * 400, "month": [m % 12 + 1 for m in range(400)],
                           "day": [d % 28 + 1 for d in range(400)],
                           "flight": list(range(400)), "delay": [1.0] * 400})
    Flight.insert_dataframe(stored)
    # The first field has one value: a lookup by it alone would read all 400 documents.
    monkeypatch.setattr(upsert, "serves_with_index", lambda coll, query: by_or)
    rows = stored.sample(60, seed=1).with_columns(
        delay=pl.when(pl.col("flight") % 2 == 0).then(2.0).otherwise(1.0))
    commands.clear()
    result = Flight.upsert_dataframe(rows, on=list(reversed(key)) if reverse else key)
    assert (result.updated, result.unchanged) == (int((rows["flight"] % 2 == 0).sum()),
                                                   int((rows["flight"] % 2 == 1).sum()))
    lookups = commands.named("find")
    assert commands.returned <= 60 + 5  # the matching documents (+ the index list)
    assert all(("$or" in c["filter"]) == by_or for c in lookups)
    assert Flight.collection().count_documents({"delay": 2.0}) == result.updated


def test_the_server_says_which_lookup_shape_its_index_serves(db: Any) -> None:
    from loom_frames.storage import serves_with_index

    db.k.create_index([("a", 1), ("b", 1)], unique=True)
    db.k.insert_many([{"a": i % 3, "b": i} for i in range(20)])
    assert serves_with_index(db.k, {"a": 1, "b": {"$in": [4, 7]}})
    assert not serves_with_index(db.k, {"c": 1})
    # Real MongoDB plans an $or of whole keys branch by branch on the index; SecantusDB
    # scans the collection for any $or (the upsert then uses the grouped shape).
    secantus = "secantusVersion" in db.client.admin.command("buildInfo")
    by_or = serves_with_index(db.k, {"$or": [{"a": 1, "b": 4}, {"a": 1, "b": 7}]})
    assert by_or is not secantus


def test_upsert_frame_keys_must_be_present_non_null_and_distinct(User: Any) -> None:
    df = pl.DataFrame({"email": ["a@x", "A@X"], "name": ["a", "b"], "age": [1, 2]})
    with pytest.raises(FrameValidationError, match="rows 0, 1 .*same upsert key"):
        User.upsert_dataframe(df, on=["email"])  # the same after StrLower
    with pytest.raises(FrameValidationError, match="column 'email' row 1 holds None"):
        User.upsert_dataframe(df.with_columns(email=pl.Series(["a", None])), on=["email"])
    with pytest.raises(FrameValidationError, match="no column in the frame"):
        User.upsert_dataframe(df, on=["id"])
    with pytest.raises(FrameValidationError, match="User has no field 'emial'. Hint: did you mean 'email'"):
        User.upsert_dataframe(df, on=["emial"])
    assert User.collection().count_documents({}) == 0


def test_upsert_on_id_and_id_conflicts(User: Any) -> None:
    result = User.insert_dataframe(three_users())
    frame = pl.from_pandas(three_users()).with_columns(id=pl.Series(result.ids.tolist()))
    again = User.upsert_dataframe(frame.with_columns(age=pl.lit(50)), on=["id"])
    assert (again.inserted, again.updated) == (0, 3)
    fresh = User.upsert_dataframe(frame.with_columns(id=pl.lit(None, pl.String),
                                                     email=pl.col("email") + "2"), on=["id"])
    assert fresh.inserted == 3  # rows without an id are new by definition
    wrong = frame.head(1).with_columns(id=pl.lit(str(ObjectId())), email=pl.lit("solo@x"))
    User.insert_dataframe(wrong.with_columns(id=pl.lit(None, pl.String)))
    conflict = User.upsert_dataframe(wrong, on=["email"], on_error="report")
    assert [f.code for f in conflict.failed] == [upsert.ID_CONFLICT]


# ---------------------------------------------------------------- faults
@pytest.fixture
def failpoint(client: Any) -> Iterator[Any]:
    def arm(**spec: Any) -> None:
        client.admin.command({"configureFailPoint": "failCommand", **spec})

    try:
        yield arm
    finally:
        client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


def numbered(n: int) -> pl.DataFrame:
    return pl.DataFrame({"name": [f"n{i}" for i in range(n)],
                         "email": [f"u{i}@x.org" for i in range(n)], "age": list(range(n))})


def test_a_failing_insert_command_reports_exactly_its_rows(User: Any, failpoint: Any) -> None:
    failpoint(mode={"skip": 2, "times": 1},
              data={"failCommands": ["insert"], "errorCode": 2})
    df = numbered(10)
    result = User.insert_dataframe(df, batch_size=3, on_error="report")
    assert result.inserted == 7
    assert result.failed_rows == [6, 7, 8]  # the third batch
    assert {f.code for f in result.failed} == {2}
    assert all("failCommand" in f.message for f in result.failed)
    assert [f.id for f in result.failed] == result.ids.to_list()[6:9]
    assert sorted(d["age"] for d in stored(User)) == [0, 1, 2, 3, 4, 5, 9]
    # Completing the collection: the same frame with its ids, idempotently.
    done = User.upsert_dataframe(df.with_columns(id=result.ids), on=["id"])
    assert (done.inserted, done.updated, done.unchanged) == (3, 0, 7)
    assert User.collection().count_documents({}) == 10


def test_the_error_carries_the_partial_result(User: Any, failpoint: Any) -> None:
    failpoint(mode={"times": 1}, data={"failCommands": ["insert"], "errorCode": 2})
    with pytest.raises(FrameWriteError) as info:
        User.insert_dataframe(numbered(4), batch_size=2)
    assert info.value.result.inserted == 2 and info.value.result.failed_rows == [0, 1]
    assert "re-running upsert_dataframe(..., on=['id'] or your key)" in str(info.value)
    assert "unique index" not in str(info.value)


def test_a_dropped_connection_reports_its_rows_and_a_rerun_completes(
    User: Any, failpoint: Any
) -> None:
    # times=2: the driver retries a write once on a new connection; both are dropped.
    failpoint(mode={"skip": 1, "times": 2},
              data={"failCommands": ["insert"], "closeConnection": True})
    df = numbered(9)
    result = User.insert_dataframe(df, batch_size=3, on_error="report")
    assert result.inserted == 6
    assert result.failed_rows == [3, 4, 5]
    assert {f.code for f in result.failed} <= {"AutoReconnect", "NetworkTimeout"}
    assert "connection to MongoDB was lost" in result.failed[0].message
    done = User.upsert_dataframe(df.with_columns(id=result.ids), on=["id"])
    assert (done.inserted, done.unchanged) == (3, 6)
    assert User.collection().count_documents({}) == 9
    assert len(User.collection().distinct("email")) == 9


def test_rerun_by_natural_key_completes_without_duplicates(User: Any, failpoint: Any) -> None:
    failpoint(mode={"skip": 1, "times": 1},
              data={"failCommands": ["insert"], "errorCode": 2})
    df = numbered(8)
    first = User.upsert_dataframe(df, on=["email"], batch_size=4, on_error="report")
    assert first.inserted == 4 and first.failed_rows == [4, 5, 6, 7]
    second = User.upsert_dataframe(df, on=["email"], batch_size=4)
    assert (second.inserted, second.unchanged) == (4, 4)
    assert User.collection().count_documents({}) == 8


def test_a_failing_update_command_during_upsert(User: Any, failpoint: Any) -> None:
    User.insert_dataframe(numbered(4))
    failpoint(mode={"times": 1}, data={"failCommands": ["update"], "errorCode": 2})
    changed = numbered(4).with_columns(age=pl.col("age") + 100)
    result = User.upsert_dataframe(changed, on=["email"], on_error="report")
    assert result.failed_rows == [0, 1, 2, 3] and result.updated == 0
    assert User.upsert_dataframe(changed, on=["email"]).updated == 4


def test_the_rest_is_not_attempted_after_repeated_connection_loss(
    User: Any, failpoint: Any
) -> None:
    failpoint(mode={"times": 4}, data={"failCommands": ["insert"], "closeConnection": True})
    result = User.insert_dataframe(numbered(12), batch_size=3, on_error="report")
    assert result.inserted == 0 and result.failed_rows == list(range(12))
    assert [f.code for f in result.failed[6:]] == [frames.NOT_ATTEMPTED] * 6


# ---------------------------------------------------------------- round trip
def roundtrip_model(db_name: str) -> Any:
    @declare_persist_db(db_name=db_name, collection_name="rt")
    class RT(Persistable):
        s: str | None = None
        low: StrLower | None = None
        i: int | None = None
        f: float | None = None
        b: bool | None = None
        t: dt.datetime | None = None

    return RT


_MS = st.integers(min_value=-62135596800000, max_value=253402300799999)  # years 1..9999
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_INTS = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([-(2**63), 2**63 - 1, 2**31, -(2**31) - 1]))
_FLOATS = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(st.fixed_dictionaries({
    "s": st.none() | _TEXT, "low": st.none() | _TEXT, "i": st.none() | _INTS,
    "f": st.none() | _FLOATS, "b": st.none() | st.booleans(), "t": st.none() | _MS,
}), max_size=8))
def test_insert_then_load_polars_round_trips(db_name: str, rows: list[dict[str, Any]]) -> None:
    RT = roundtrip_model(db_name)
    RT.collection().delete_many({})
    schema = {"s": pl.String, "low": pl.String, "i": pl.Int64, "f": pl.Float64,
              "b": pl.Boolean, "t": pl.Int64}
    frame = pl.DataFrame(rows, schema=schema, orient="row").with_columns(
        pl.col("t").cast(pl.Datetime("ms", "UTC"))
    )
    result = RT.insert_dataframe(frame)
    loaded = RT.filter().load_polars()
    order = {h: k for k, h in enumerate(result.ids.to_list())}
    loaded = loaded.sort(pl.col("id").replace_strict(order, return_dtype=pl.Int64))
    expected = frame.with_columns(
        pl.col("low").map_elements(str.lower, return_dtype=pl.String)
    ).select(["s", "low", "i", "f", "b", "t"])
    assert loaded["id"].to_list() == result.ids.to_list()
    assert_frame_equal(loaded.select(expected.columns), expected, check_exact=True)


def test_model_entry_points_share_the_write_defaults() -> None:
    import inspect

    for verb in ("insert_dataframe", "upsert_dataframe"):
        params = inspect.signature(getattr(Persistable, verb)).parameters
        assert params["batch_size"].default == frames.DEFAULT_BATCH_SIZE
        assert params["extra"].default == "raise" and params["on_error"].default == "raise"
