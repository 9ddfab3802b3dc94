"""The guide (shared/seed/USAGE.md), section by section, verbatim.

Each block below is copied from the guide unchanged; lines marked ``# test:`` are the
test's own (setting up what the guide assumes, and checking what it promises).
"""

from __future__ import annotations

from typing import Any

import pytest

GUIDE_DATABASES = ("my_app", "audit", "iot")


@pytest.fixture
def guide(client: Any) -> Any:
    for name in GUIDE_DATABASES:
        client.drop_database(name)
    yield client
    for name in GUIDE_DATABASES:
        client.drop_database(name)


def test_guide_end_to_end(guide: Any) -> None:
    # ---- Defining Models / Basic Model
    import loom as lm
    from loom.info import Persistable, declare_persist_db, StrLower

    @declare_persist_db(db_name="my_app", collection_name="users")
    class User(Persistable):
        name: str
        email: StrLower  # Automatically lowercased
        age: int
        is_active: bool = True

    # ---- Field Types
    from loom.info import TimeInserted, TimeUpdated, IncrCounter

    @declare_persist_db(db_name="my_app", collection_name="stats")
    class UserStats(Persistable):
        user_id: str
        login_count: IncrCounter = 0
        created_at: TimeInserted
        last_updated: TimeUpdated

    # ---- CRUD / Create
    user = User(name="Alice", email="Alice@Example.com", age=30)
    user.persist() # Saves to MongoDB, 'email' becomes 'alice@example.com'
    print(f"User ID: {user.id}")
    assert guide.my_app.users.find_one({"_id": user.id})["email"] == "alice@example.com"  # test:

    # ---- CRUD / Read
    # Load by ID
    user = User.from_id("64f8a...")
    assert user is None  # test: the placeholder id matches no document

    # Load one matching a filter
    user = User.filter(lm.fld['email'] == "alice@example.com").load_one()
    assert user.name == "Alice" and user.age == 30  # test:

    # ---- CRUD / Update
    user.age = 31
    user.persist() # Only updates the 'age' and 'updated_time' fields
    assert guide.my_app.users.find_one({"_id": user.id})["age"] == 31  # test:

    # ---- CRUD / Atomic Increments
    UserStats(user_id=str(user.id)).persist()  # test: the stats the guide loads
    stats = UserStats.filter(lm.fld['user_id'] == user.id).load_one()
    stats.login_count += 1
    stats.persist() # Executes {$inc: {login_count: 1}}
    assert guide.my_app.stats.find_one({})["login_count"] == 1  # test:

    # ---- Querying / Basic Filtering
    User(name="Bob", email="bob@x.io", age=26, is_active=False).persist()  # test:
    User(name="Cy", email="cy@x.io", age=45).persist()  # test:
    # Find active users older than 25
    users = User.filter(
        (lm.fld['age'] > 25) & (lm.fld['is_active'] == True)
    ).load_many()
    assert sorted(u.name for u in users) == ["Alice", "Cy"]  # test:

    # ---- Querying / Sorting and Limiting
    # Get top 10 oldest users
    oldest_users = User.filter()\
        .sort('age', descending=True)\
        .limit(10)\
        .load_many()
    assert [u.age for u in oldest_users] == [45, 31, 26]  # test:

    # ---- Querying / Aggregation
    from loom.info import AggregationStages

    pipeline = AggregationStages().group({
        "_id": "$is_active",
        "avg_age": {"$avg": "$age"}
    })

    results = User.agg(pipeline).load_many()
    assert sorted((r["_id"], r["avg_age"]) for r in results) == [(False, 26.0), (True, 38.0)]  # test:

    # ---- Ledger Models
    from loom.info import LedgerModel

    @declare_persist_db(db_name="audit", collection_name="logs")
    class AuditLog(LedgerModel):
        action: str
        user_id: str

    log = AuditLog(action="login", user_id="123")
    log.persist() # Creates document A

    log.action = "logout"
    log.persist() # Creates document B (new document)
    assert guide.audit.logs.count_documents({}) == 2  # test:

    # ---- Ledger Models / Bulk Persistence
    logs = [
        AuditLog(action="view", user_id="123"),
        AuditLog(action="click", user_id="123")
    ]
    AuditLog.persist_many(logs)
    assert guide.audit.logs.count_documents({}) == 4  # test:

    # ---- Timeseries Models
    from loom.info import TimeSeriesLedgerModel, declare_timeseries

    @declare_timeseries(metakey="sensor_id", granularity="minutes", ttl=86400)
    @declare_persist_db(db_name="iot", collection_name="readings")
    class SensorReading(TimeSeriesLedgerModel):
        sensor_id: str
        temperature: float
        humidity: float

    # Usage is the same as LedgerModel
    reading = SensorReading(sensor_id="S1", temperature=22.5, humidity=45.0)
    reading.persist()
    assert guide.iot.readings.find_one({})["temperature"] == 22.5  # test:

    # ---- Dataframe Integration / Loading into Dataframes
    # Load as Pandas DataFrame
    df = User.filter(lm.fld['age'] > 20).load_dataframe()

    # Load as Polars DataFrame
    pdf = User.filter().load_polars()

    # Load as PyArrow Table
    table = User.filter().load_table()
    assert len(df) == 3 and pdf.height == 3 and table.num_rows == 3  # test:
    assert sorted(pdf["name"].to_list()) == ["Alice", "Bob", "Cy"]  # test:

    # ---- Dataframe Integration / Inserting Dataframes
    import pandas as pd

    df = pd.DataFrame({
        "name": ["Bob", "Charlie"],
        "email": ["bob@example.com", "charlie@example.com"],
        "age": [25, 35]
    })

    User.insert_dataframe(df)
    assert User.filter(lm.fld['name'] == "Charlie").load_one().age == 35  # test:
    assert User.filter().count() == 5  # test:
