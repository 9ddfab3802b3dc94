"""``python -m loom_frames demo``: the guide, end to end, printing what it did and got.

Runs against ``MONGODB_URI`` when set, else the embedded server (data under ``./.loom``).
The demo's databases (``loom_demo_*``) are dropped first, so it can run again and again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

__all__ = ["main"]


def _say(title: str) -> None:
    print(f"\n== {title}")


def _show(label: str, value: Any) -> None:
    print(f"   {label}: {value}")


def demo() -> None:
    """Define models, persist, update, increment, ledger, time series, load frames."""
    import loom_frames as lm
    from loom_frames import (
        AggregationStages,
        IncrCounter,
        LedgerModel,
        Persistable,
        StrLower,
        TimeInserted,
        TimeSeriesLedgerModel,
        TimeUpdated,
        declare_persist_db,
        declare_timeseries,
    )

    client = lm.get_client()
    for name in ("loom_demo_app", "loom_demo_audit", "loom_demo_iot"):
        client.drop_database(name)

    _say("Defining models")

    # unique=["email"]: one user per email, which is what lets upsert_dataframe(on=["email"])
    # run safely beside other writers (the guide's model has no index; the demo adds one).
    @declare_persist_db(db_name="loom_demo_app", collection_name="users", unique=["email"])
    class User(Persistable):
        name: str
        email: StrLower  # automatically lowercased
        age: int
        is_active: bool = True

    @declare_persist_db(db_name="loom_demo_app", collection_name="stats")
    class UserStats(Persistable):
        user_id: str
        login_count: IncrCounter = 0
        created_at: TimeInserted
        last_updated: TimeUpdated

    _show("User fields", list(User.model_fields))
    _show("User Arrow schema", ", ".join(f"{f.name}: {f.type}" for f in User.arrow_schema()))

    _say("Create")
    user = User(name="Alice", email="Alice@Example.com", age=30)
    user.persist()
    _show("persisted id", user.id)
    _show("stored document", User.collection().find_one({"_id": user.id}))

    _say("Read")
    _show("from_id", User.from_id(str(user.id)))
    found = User.filter(lm.fld["email"] == "ALICE@example.com").load_one()
    _show("filter(email == 'ALICE@example.com') (the literal is lowercased too)", found)

    _say("Update: only what changed is sent")
    user.age = 31
    user.persist()
    _show("stored age", User.collection().find_one({"_id": user.id})["age"])

    _say("Atomic increments")
    UserStats(user_id=str(user.id), login_count=10).persist()
    stats = UserStats.filter(lm.fld["user_id"] == user.id).load_one()
    stats.login_count += 1
    stats.persist()  # {$inc: {login_count: 1}}
    _show("login_count after += 1", stats.login_count)

    _say("Querying")
    User.persist_many(
        [
            User(name=n, email=f"{n}@example.com", age=a, is_active=act)
            for n, a, act in [("Bob", 25, True), ("Carol", 41, False), ("Dan", 19, True)]
        ]
    )
    active = User.filter((lm.fld["age"] > 25) & (lm.fld["is_active"] == True)).load_many()
    _show("active users older than 25", [u.name for u in active])
    oldest = User.filter().sort("age", descending=True).limit(2)
    _show("two oldest", [u.name for u in oldest.load_many()])
    pipeline = AggregationStages().group({"_id": "$is_active", "avg_age": {"$avg": "$age"}})
    _show("avg age by is_active (raw pipeline)", User.agg(pipeline).sort("_id").load_many())
    grouped = User.filter().group_by("is_active").agg(
        avg_age=lm.fld["age"].mean(), n=lm.fld["age"].count()
    )
    print(grouped.explain())
    print(grouped.load_polars())

    _say("Ledger models: every persist() is a new document")

    @declare_persist_db(db_name="loom_demo_audit", collection_name="logs")
    class AuditLog(LedgerModel):
        action: str
        user_id: str

    log = AuditLog(action="login", user_id="123")
    log.persist()
    log.action = "logout"
    log.persist()
    AuditLog.persist_many(
        [AuditLog(action="view", user_id="123"), AuditLog(action="click", user_id="123")]
    )
    _show("actions stored", [d["action"] for d in AuditLog.collection().find(sort=[("_id", 1)])])

    _say("Time series models")

    @declare_timeseries(metakey="sensor_id", granularity="minutes", ttl=86400 * 365 * 100)
    @declare_persist_db(db_name="loom_demo_iot", collection_name="readings")
    class SensorReading(TimeSeriesLedgerModel):
        sensor_id: str
        temperature: float
        humidity: float

    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    SensorReading.persist_many(
        SensorReading(
            sensor_id=f"S{i % 2}",
            temperature=20 + (i % 7) * 0.5,
            humidity=40 + i % 5,
            updated_time=start + dt.timedelta(minutes=10 * i),
        )
        for i in range(36)
    )
    hourly = (
        SensorReading.filter(lm.fld["sensor_id"] == "S1")
        .group_by(hour=lm.fld["updated_time"].dt.truncate("1h"))
        .agg(mean_temp=lm.fld["temperature"].mean(), readings=lm.fld["temperature"].count())
        .sort("hour")
    )
    print(hourly.load_polars())

    _say("Dataframes")
    _show("pandas", "")
    print(User.filter(lm.fld["age"] > 20).load_dataframe())
    _show("polars", "")
    print(User.filter().select("name", "age").load_polars())
    table = User.filter().load_table()
    _show("pyarrow", f"{table.num_rows} rows; " + ", ".join(f"{f.name}: {f.type}" for f in table.schema))

    _say("Inserting dataframes")
    import pandas as pd

    df = pd.DataFrame({
        "name": ["Eve", "Frank"],
        "email": ["Eve@Example.com", "frank@example.com"],
        "age": [27, 52],
    })
    _show("insert_dataframe", User.insert_dataframe(df))
    _show("upsert_dataframe(on=['email']) of the same frame",
          User.upsert_dataframe(df, on=["email"]))  # idempotent: every row unchanged
    _show("users now", User.filter().count())
    print("\nDone.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loom_frames")
    parser.add_argument("command", choices=["demo"], help="what to run")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
