"""The read side as one layer: a pure plan, one cursor, raw BSON -> Arrow, objects.

Free-form fields through every loader, dirty documents in scans, schema inference where
no model gives one, n_unique in two $group stages, dates beyond Python's years, the fast
object builder equal to ``model_validate``, and ``repr(query)`` importing nothing of the
read side.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from typing import Any

import bson
import polars as pl
import pyarrow as pa
import pytest
from bson import DatetimeMS, ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, create_model

import loom_frames as lm
from loom_frames import AggregationStages, Persistable, declare_persist_db, fld
from loom_frames.codec import hydrate
from loom_frames.model import STORED


# ---------------------------------------------------------------- the layering
def test_printing_a_query_imports_nothing_of_the_read_side() -> None:
    code = (
        "import sys, loom_frames as lm\n"
        "from loom_frames import Persistable, declare_persist_db\n"
        "@declare_persist_db(db_name='app', collection_name='users')\n"
        "class User(Persistable):\n"
        "    name: str\n"
        "    age: int\n"
        "q = User.filter(lm.fld['age'] > 1).group_by('name').agg(n=lm.fld['age'].n_unique())\n"
        "text = repr(q) + repr(q.compile()) + str(q.compile().to_dict())\n"
        "print(sorted(m for m in sys.modules if m.startswith(('loom_frames.read', "
        "'pymongoarrow', 'loom_frames.codec', 'loom_frames.scan'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------- free-form fields
class Loose(BaseModel):
    label: str = ""
    extra: dict[str, Any] = {}


@pytest.fixture
def Event(db_name: str) -> type[Persistable]:
    @declare_persist_db(db_name=db_name, collection_name="events")
    class Event(Persistable):
        kind: str
        meta: dict[str, Any] = {}
        either: int | str = 0
        pair: tuple[int, str] | None = None
        items: list[dict[str, Any]] = []
        wait: dt.timedelta | None = None
        loose: Loose | None = None

    return Event


@pytest.fixture
def events(Event: Any) -> list[Any]:
    stored = [
        Event(kind="click", meta={"x": 1, "source": "web", "at": dt.datetime(2024, 5, 1)},
              either="a", pair=(1, "one"), items=[{"sku": "A", "n": 2}],
              loose=Loose(label="l", extra={"k": [1, 2]})),
        Event(kind="view", meta={"x": 2, "nested": {"deep": True}}, either=7),
        Event(kind="view"),
    ]
    Event.persist_many(stored)
    Event.collection().update_one({"_id": stored[1].id}, {"$set": {"wait": 90.5}})
    return stored


def test_free_form_fields_load_as_objects(Event: Any, events: list[Any]) -> None:
    loaded = Event.filter().sort("id").load_many()
    assert [o.meta for o in loaded] == [
        {"x": 1, "source": "web", "at": dt.datetime(2024, 5, 1, tzinfo=dt.UTC)},
        {"x": 2, "nested": {"deep": True}}, {}]
    assert loaded[0].pair == (1, "one") and loaded[0].either == "a" and loaded[1].either == 7
    assert loaded[1].wait == dt.timedelta(seconds=90.5)  # whatever Pydantic accepts
    assert loaded[0].loose == Loose(label="l", extra={"k": [1, 2]})
    assert Event.filter(fld["kind"] == "click").load_one().items == [{"sku": "A", "n": 2}]


def test_free_form_fields_need_no_column_type_to_count_and_filter(
    Event: Any, events: list[Any]
) -> None:
    assert Event.filter().count() == 3 and Event.filter(fld["meta.x"] == 1).exists()
    assert Event.filter(fld["meta.x"] >= 1).count() == 2
    assert [o.kind for o in Event.filter(fld["meta.source"] == "web").load_many()] == ["click"]
    assert Event.filter(fld["items.sku"] == "A").count() == 1
    assert Event.filter(fld["meta.nested.deep"] == True).count() == 1


def test_free_form_fields_are_json_text_in_frames(Event: Any, events: list[Any]) -> None:
    frame = Event.filter().sort("id").load_polars()
    assert frame.schema["meta"] == pl.String and frame.schema["loose"] == pl.String
    meta = [json.loads(m) for m in frame["meta"]]
    assert meta[0] == {"x": 1, "source": "web", "at": {"$date": "2024-05-01T00:00:00Z"}}
    assert meta[2] == {} and frame["pair"].to_list()[:2] == ['[1, "one"]', None]
    assert frame["either"].to_list() == ['"a"', "7", "0"] and frame["wait"][1] == "90.5"
    decoded = frame.select(pl.col("meta").str.json_decode(
        pl.Struct({"x": pl.Int64, "source": pl.String})))
    assert decoded["meta"].struct.field("x").to_list() == [1, 2, None]
    assert Event.filter().load_dataframe()["meta"].dtype != object or True
    assert Event.filter().load_table().schema.field("items").metadata[b"loom.json"] == b"true"


def test_dotted_paths_into_free_form_fields_select(Event: Any, events: list[Any]) -> None:
    frame = (Event.filter(fld["meta.x"] >= 1).select("kind", source=fld["meta.source"])
             .sort("kind").load_polars())
    assert frame.to_dicts() == [{"kind": "click", "source": '"web"'},
                                {"kind": "view", "source": None}]
    grouped = Event.filter().group_by(x=fld["meta.x"]).agg(n=fld["kind"].count()).sort("x")
    assert grouped.load_polars()["x"].to_list() == [None, "1", "2"]


def test_scans_of_models_with_free_form_fields(Event: Any, events: list[Any]) -> None:
    assert Event.scan().select("kind").collect()["kind"].sort().to_list() == [
        "click", "view", "view"]
    full = Event.scan().filter(pl.col("kind") == "view").collect()
    assert full.height == 2 and full.schema["meta"] == pl.String
    assert sum(b.num_rows for b in Event.filter().iter_batches(batch_size=2)) == 3


# ---------------------------------------------------------------- dirty documents in scans
@pytest.fixture
def Reading(db_name: str) -> type[Persistable]:
    @declare_persist_db(db_name=db_name, collection_name="readings")
    class Reading(Persistable):
        sensor: str
        value: float
        count: int = 0

    return Reading


def test_scan_with_on_invalid(Reading: Any) -> None:
    Reading.persist_many([Reading(sensor=f"s{i}", value=i / 2, count=i) for i in range(5)])
    bad = Reading.collection().insert_one({"sensor": "s9", "value": "hot", "count": 2.5})
    with pytest.raises(Exception) as caught:  # Polars may wrap the source's error
        Reading.scan().collect()
    text = str(caught.value)
    assert f"_id={bad.inserted_id!r}" in text and "on_invalid='null'" in text
    frame = Reading.scan(on_invalid="null").filter(pl.col("sensor") == "s9").collect()
    assert frame.select("value", "count").to_dicts() == [{"value": None, "count": None}]
    scanned = Reading.filter(fld["count"] >= 0).scan(on_invalid="null").collect()
    assert scanned.height == 6 and scanned["count"].null_count() == 1  # 2.5 >= 0 in MongoDB
    with pytest.raises(ValueError, match="did you mean 'null'"):
        Reading.scan(on_invalid="nul")


def test_sparse_fields_are_settled_for_the_whole_batch(db_name: str) -> None:
    # most documents lack "note" and "where": two counts over the reply settle them (a
    # look per row otherwise); a present wrong type still makes the counts disagree
    class Where(BaseModel):
        city: str | None = None

    @declare_persist_db(db_name=db_name, collection_name="sparse")
    class Sparse(Persistable):
        n: int
        note: str | None = None
        where: Where | None = None
        level: float | None = None

    docs: list[dict[str, Any]] = [{"n": i} for i in range(3000)]
    docs[10].update(note=None, where=None)  # explicit nulls
    docs[20].update(note="x", where={"city": "Oslo"}, level=float("nan"))
    docs[30].update(where={})
    Sparse.collection().insert_many(docs)
    frame = Sparse.filter().sort("n").load_polars()
    assert frame["note"].null_count() == 2999 and frame["where"].null_count() == 2998
    assert frame["where"][30] == {"city": None} and frame["where"][20] == {"city": "Oslo"}
    assert frame["level"].is_nan().to_list()[20] and frame["level"].null_count() == 2999
    bad = Sparse.collection().insert_one({"n": 5000, "note": 7, "where": "Rome"}).inserted_id
    with pytest.raises(lm.DocumentValidationError, match=re.escape(f"_id={bad!r}")):
        Sparse.filter().load_table()
    nulled = Sparse.filter().sort("n").load_polars(on_invalid="null")
    assert nulled.row(3000, named=True)["note"] is None and nulled["where"][3000] is None


# ---------------------------------------------------------------- inference
def test_scan_collection_infers_nested_and_mixed_types(db: Any) -> None:
    db.raw.insert_many([
        {"n": 1, "x": 1, "tags": ["a"], "where": {"city": "Oslo", "zip": 1}, "odd": "s"},
        {"n": 2, "x": 2.5, "tags": [], "where": {"city": "Rome"}, "odd": 3},
        {"n": 3, "x": None, "where": {"zip": 4}, "when": dt.datetime(2024, 1, 1)},
    ])
    lf = lm.scan_collection(db.name, "raw")
    schema = lf.collect_schema()
    assert schema["n"] == pl.Int64 and schema["x"] == pl.Float64
    assert schema["tags"] == pl.List(pl.String)
    assert schema["where"] == pl.Struct({"city": pl.String, "zip": pl.Int64})
    assert schema["odd"] == pl.String and schema["when"] == pl.Datetime("ms", "UTC")
    explained = lf.explain()
    assert "schema inferred from the first 3 documents" in explained
    assert "x: int64 and double widened to double" in explained
    assert "odd: mixed string and int64: JSON text" in explained
    frame = lf.sort("n").collect()
    assert frame["odd"].to_list() == ['"s"', "3", None] and frame["x"].to_list() == [1.0, 2.5, None]
    assert frame["where"].to_list()[2] == {"city": None, "zip": 4}


def test_inference_reads_only_the_first_documents(db: Any) -> None:
    db.raw.insert_many([{"_id": i, "n": i} for i in range(3)] + [{"_id": 3, "n": "three"}])
    with pytest.raises(Exception, match="field 'n' holds 'three'"):
        lm.scan_collection(db.name, "raw", infer_schema_length=3).collect()
    frame = lm.scan_collection(db.name, "raw", infer_schema_length=3,
                               on_invalid="null").sort("_id").collect()
    assert frame["n"].to_list() == [0, 1, 2, None]
    assert lm.scan_collection(db.name, "raw").collect_schema()["n"] == pl.String  # JSON text
    with pytest.raises(lm.PlanError, match="no document"):
        lm.scan_collection(db.name, "empty")


def test_raw_pipelines_without_a_schema_are_inferred(Reading: Any) -> None:
    Reading.persist_many([Reading(sensor=f"s{i % 2}", value=i, count=i) for i in range(4)])
    stages = AggregationStages().group({"_id": "$sensor", "total": {"$sum": "$count"},
                                        "values": {"$push": "$value"}})
    frame = Reading.agg(stages).load_polars().sort("_id")
    assert frame.schema == pl.Schema({"_id": pl.String, "total": pl.Int64,
                                      "values": pl.List(pl.Float64)})
    assert frame["total"].to_list() == [2, 4]
    scanned = Reading.agg(stages).scan().filter(pl.col("total") > 2).collect()
    assert scanned["_id"].to_list() == ["s1"]
    with pytest.raises(lm.PlanError, match="infer_schema_length"):
        Reading.agg(stages, infer_schema_length=0)


def test_inference_of_all_rows_reads_past_the_first_reply(db: Any, Reading: Any) -> None:  # noqa: N803
    Reading.collection().insert_many(
        [{"sensor": "s", "value": 1.0, "count": i} for i in range(150)]
        + [{"sensor": "s", "value": 1.0, "count": 2.5}])
    stages = [{"$project": {"_id": 0, "count": 1}}]
    with pytest.raises(lm.DocumentValidationError, match="holds 2.5"):
        Reading.agg(stages).load_polars()  # the first 100 rows say int64
    everything = Reading.agg(stages, infer_schema_length=None).load_polars()
    assert everything.schema["count"] == pl.Float64 and everything.height == 151
    batches = list(Reading.agg(stages, infer_schema_length=None).iter_batches(batch_size=60))
    assert sum(b.num_rows for b in batches) == 151


# ---------------------------------------------------------------- n_unique
def test_n_unique_groups_twice_and_never_collects_a_set(Reading: Any) -> None:
    Reading.persist_many([Reading(sensor=f"s{i % 3}", value=i % 4, count=i % 2)
                          for i in range(24)])
    alone = Reading.filter().group_by("sensor").agg(values=fld["value"].n_unique())
    pipeline = alone.compile().pipeline
    assert [next(iter(s)) for s in pipeline] == ["$group", "$group", "$project"]
    assert "$addToSet" not in json.dumps(pipeline)
    mixed = Reading.filter(fld["count"] >= 0).group_by("sensor").agg(
        values=fld["value"].n_unique(), counts=fld["count"].n_unique(),
        mean=fld["value"].mean(), n=fld["value"].count())
    text = json.dumps(mixed.compile().pipeline)
    assert "$addToSet" not in text and text.count('"$unionWith"') == 2
    got = mixed.load_polars().sort("sensor")
    frame = Reading.filter().load_polars()
    want = frame.group_by("sensor").agg(
        values=pl.col("value").n_unique(), counts=pl.col("count").n_unique(),
        mean=pl.col("value").mean(), n=pl.col("value").count()).sort("sensor")
    assert got.to_dicts() == want.to_dicts()


# ---------------------------------------------------------------- beyond Python's years
def _decoded_table(docs: list[dict[str, Any]], schema: pa.Schema, on_invalid: str) -> Any:
    from loom_frames.read.decode import read_plan
    from loom_frames.read.frames import _table
    from loom_frames.schema import columns_from_arrow

    raw = b"".join(bson.encode(d) for d in docs)
    return _table(raw, read_plan(columns_from_arrow(schema), "T"), on_invalid)  # type: ignore[arg-type]


def test_dates_beyond_python_years_load_in_frames_not_objects() -> None:
    beyond = DatetimeMS(253_402_300_800_000 + 86_400_000)  # 10000-01-02, midnight UTC
    before = DatetimeMS(-62_135_596_800_000 - 86_400_000)  # the day before year 1
    schema = pa.schema({"t": pa.timestamp("ms", tz="UTC"), "d": pa.date32()})
    table = _decoded_table([{"t": beyond, "d": beyond}, {"t": before, "d": before}], schema,
                           "raise")
    assert table.column("t").cast(pa.int64()).to_pylist() == [int(beyond), int(before)]
    assert table.column("d").cast(pa.int32()).to_pylist() == [2_932_898, -719_163]

    class When(Persistable):
        t: dt.datetime | None = None

    with pytest.raises(lm.DocumentValidationError, match="field 't' holds.*outside years"):
        hydrate(When, {"_id": ObjectId(), "t": beyond})


# ---------------------------------------------------------------- the object builder
_VALUES: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (int, st.integers(-(2**63), 2**63 - 1) | st.sampled_from([2.0, True, -0.0])),
    (float, st.floats() | st.integers(-5, 5) | st.booleans()),
    (str, st.text(max_size=4)),
    (bool | None, st.booleans() | st.none()),
    (dt.datetime, st.datetimes(timezones=st.just(dt.UTC)).map(
        lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))),
    (dt.date, st.dates().map(lambda d: dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC))),
    (list[int], st.lists(st.integers(-3, 3) | st.just(4.0), max_size=3)),
    (Loose | None, st.none() | st.fixed_dictionaries(
        {"label": st.text(max_size=2)}, optional={"extra": st.just({"a": 1})})),
    (lm.StrLower, st.text(alphabet="aBc", max_size=3)),
    (lm.IncrCounter, st.integers(0, 9)),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_objects_built_directly_equal_model_validate(data: st.DataObject) -> None:
    chosen = data.draw(st.lists(st.sampled_from(range(len(_VALUES))), min_size=1,
                                max_size=5, unique=True))
    optional = (bool | None, Loose | None)
    fields = {f"f{i}": (_VALUES[i][0], None if _VALUES[i][0] in optional else ...)
              for i in chosen}
    model = create_model(f"Built{len(chosen)}", __base__=Persistable, **fields)  # type: ignore[call-overload]
    doc = {"_id": ObjectId()}
    for i in chosen:
        if data.draw(st.booleans()) or _VALUES[i][0] not in optional:
            doc[f"f{i}"] = data.draw(_VALUES[i][1])
    built = hydrate(model, dict(doc))
    validated = model.model_validate(dict(doc), context=STORED)
    assert built == validated
    assert built.__pydantic_fields_set__ == validated.__pydantic_fields_set__
    assert {k: type(v) for k, v in built.__dict__.items()} == {
        k: type(v) for k, v in validated.__dict__.items()}
    assert built._loom_saved == doc and built._loom_auto_times == set()


def test_a_loaded_frame_with_free_form_fields_writes_back_what_was_stored(db_name: str) -> None:
    @declare_persist_db(db_name=db_name, collection_name="ff", unique=["kind"])
    class Tagged(Persistable):
        kind: str
        meta: dict[str, Any] = {}
        extra: Any = None

    Tagged(kind="a", meta={"n": 1, "tags": ["x"], "at": dt.datetime(2024, 5, 1, tzinfo=dt.UTC)},
           extra=[1, "two"]).persist()
    before = list(Tagged.collection().find({}, {"_id": 0, "meta": 1, "extra": 1}))
    frame = Tagged.filter().load_polars()
    assert Tagged.upsert_dataframe(frame, on=["kind"]).unchanged == 1  # the text reads back
    changed = frame.with_columns(meta=pl.lit('{"n": 2}'))
    assert Tagged.upsert_dataframe(changed, on=["kind"]).updated == 1
    assert Tagged.collection().find_one({}, {"_id": 0, "meta": 1}) == {"meta": {"n": 2}}
    assert before[0]["extra"] == [1, "two"]
    with pytest.raises(lm.FrameValidationError, match="not Extended JSON text"):
        Tagged.upsert_dataframe(frame.with_columns(meta=pl.lit("not json")), on=["kind"])
