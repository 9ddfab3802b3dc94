"""Time-series ledgers: native collection options, honoured explicit times, bad input."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import loom_frames as lm
from loom_frames import TimeSeriesLedgerModel, declare_persist_db, declare_timeseries


def _options(db: Any, name: str) -> dict[str, Any]:
    (info,) = db.list_collections(filter={"name": name})
    return dict(info.get("options", {}))


def test_declares_native_time_series_collection(db_name: str, db: Any) -> None:
    @declare_timeseries(metakey="sensor_id", granularity="minutes", ttl=86400)
    @declare_persist_db(db_name=db_name, collection_name="readings")
    class SensorReading(TimeSeriesLedgerModel):
        sensor_id: str
        temperature: float
        humidity: float

    reading = SensorReading(sensor_id="S1", temperature=22.5, humidity=45.0)
    reading.persist()
    options = _options(db, "readings")
    assert options["timeseries"]["timeField"] == "updated_time"
    assert options["timeseries"]["metaField"] == "sensor_id"
    assert options["timeseries"]["granularity"] == "minutes"
    assert options["expireAfterSeconds"] == 86400
    (doc,) = db.readings.find({})
    assert doc["temperature"] == 22.5 and doc["sensor_id"] == "S1"
    assert doc["updated_time"] == reading.updated_time


def test_no_ttl_means_no_expiry(db_name: str, db: Any) -> None:
    @declare_timeseries(metakey="m")
    @declare_persist_db(db_name=db_name, collection_name="forever")
    class Forever(TimeSeriesLedgerModel):
        m: str

    Forever(m="a").persist()
    options = _options(db, "forever")
    assert "expireAfterSeconds" not in options
    assert options["timeseries"]["granularity"] == "seconds"


def test_explicit_time_is_honoured_and_history_recorded(db_name: str, db: Any) -> None:
    @declare_timeseries(metakey="sensor_id", timekey="ts", granularity="hours")
    @declare_persist_db(db_name=db_name, collection_name="history")
    class Reading(TimeSeriesLedgerModel):
        sensor_id: str
        ts: dt.datetime
        value: float

    days = [dt.datetime(2020, 1, d, 6, tzinfo=dt.UTC) for d in (1, 2, 3)]
    Reading.persist_many([Reading(sensor_id="s", ts=t, value=i) for i, t in enumerate(days)])
    stored = [d["ts"] for d in db.history.find({}, sort=[("ts", 1)])]
    assert stored == days
    assert _options(db, "history")["timeseries"]["timeField"] == "ts"


def test_default_time_field_explicit_value_kept_then_auto_refreshed(db_name: str, db: Any) -> None:
    @declare_timeseries(metakey="k")
    @declare_persist_db(db_name=db_name, collection_name="auto")
    class Tick(TimeSeriesLedgerModel):
        k: str

    past = dt.datetime(2001, 9, 9, 1, 46, 40, tzinfo=dt.UTC)
    tick = Tick(k="a", updated_time=past).persist()
    assert tick.updated_time == past  # explicitly given: honoured
    auto = Tick(k="b").persist()
    first = auto.updated_time
    assert first is not None and first > past
    auto.persist()  # a ledger persist makes a new document with a fresh time
    assert auto.updated_time >= first
    assert db.auto.count_documents({}) == 3


def test_missing_metakey_value_is_an_error(db_name: str, db: Any) -> None:
    @declare_timeseries(metakey="sensor_id")
    @declare_persist_db(db_name=db_name, collection_name="strict")
    class Reading(TimeSeriesLedgerModel):
        sensor_id: str | None = None
        value: float

    with pytest.raises(lm.DocumentValidationError, match="sensor_id"):
        Reading(value=1.0).persist()
    assert db.strict.count_documents({}) == 0


def test_existing_plain_collection_is_a_clear_error(db_name: str, db: Any) -> None:
    db.create_collection("plain")

    @declare_timeseries(metakey="m")
    @declare_persist_db(db_name=db_name, collection_name="plain")
    class Reading(TimeSeriesLedgerModel):
        m: str

    with pytest.raises(lm.ModelDeclarationError, match="already exists as a plain collection"):
        Reading(m="x").persist()


def test_bad_declarations() -> None:
    with pytest.raises(lm.ModelDeclarationError, match="granularity must be one of"):
        declare_timeseries(metakey="m", granularity="minute")
    with pytest.raises(lm.ModelDeclarationError, match="ttl"):
        declare_timeseries(metakey="m", ttl=-5)

    with pytest.raises(lm.ModelDeclarationError, match="metakey 'sensor' is not a field"):

        @declare_timeseries(metakey="sensor")
        @declare_persist_db(db_name="x", collection_name="y")
        class Bad(TimeSeriesLedgerModel):
            sensor_id: str


def test_time_series_model_without_declaration_is_an_error(db_name: str) -> None:
    @declare_persist_db(db_name=db_name, collection_name="undeclared")
    class Reading(TimeSeriesLedgerModel):
        m: str

    with pytest.raises(lm.ModelDeclarationError, match="@declare_timeseries"):
        Reading(m="x").persist()
