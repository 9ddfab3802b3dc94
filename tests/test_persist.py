"""persist(), from_id(), delete(), persist_many() against the real wire server."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any

import pytest
from bson import ObjectId
from pydantic import BaseModel, ValidationError

import loom_frames as lm
from loom_frames import (
    IncrCounter,
    LedgerModel,
    Persistable,
    StrLower,
    StrUpper,
    TimeInserted,
    TimeUpdated,
    declare_persist_db,
)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Size(enum.IntEnum):
    S = 1
    L = 3


class Address(BaseModel):
    city: str
    zip: int | None = None


@pytest.fixture
def models(db_name: str) -> dict[str, Any]:
    @declare_persist_db(db_name=db_name, collection_name="users")
    class User(Persistable):
        name: str
        email: StrLower
        age: int
        is_active: bool = True
        nickname: str | None = None

    @declare_persist_db(db_name=db_name, collection_name="stats")
    class UserStats(Persistable):
        user_id: str
        login_count: IncrCounter = 0
        created_at: TimeInserted
        last_updated: TimeUpdated

    @declare_persist_db(db_name=db_name, collection_name="rich")
    class Rich(Persistable):
        code: StrUpper
        color: Color
        size: Size
        price: Decimal
        born: dt.date
        uid: uuid.UUID
        address: Address
        tags: list[str] = []
        scores: list[float] = []
        when: dt.datetime | None = None
        maybe: int | None = None

    return {"User": User, "UserStats": UserStats, "Rich": Rich}


# ------------------------------------------------------------------ create / read
def test_persist_inserts_and_assigns_id(models: dict[str, Any], db: Any) -> None:
    User = models["User"]
    user = User(name="Alice", email="Alice@Example.com", age=30)
    assert user.id is None and not user.is_stored
    assert user.persist() is user
    assert isinstance(user.id, ObjectId) and user.is_stored
    stored = db.users.find_one({"_id": user.id})
    assert stored["email"] == "alice@example.com"
    assert stored["name"] == "Alice" and stored["age"] == 30 and stored["is_active"] is True
    assert stored["created_at"] == user.created_at == stored["updated_time"]
    assert stored["created_at"].tzinfo is not None


def test_from_id_accepts_str_and_objectid(models: dict[str, Any]) -> None:
    User = models["User"]
    user = User(name="Bo", email="BO@x.io", age=5).persist()
    assert User.from_id(user.id) == user
    assert User.from_id(str(user.id)) == user
    assert User.from_id(ObjectId()) is None


def test_from_id_of_malformed_string_is_none_other_types_error(models: dict[str, Any]) -> None:
    models["User"](name="A", email="a@b.c", age=1).persist()
    assert models["User"].from_id("64f8a...") is None  # the guide's placeholder runs
    with pytest.raises(lm.DocumentValidationError, match="24-character hex"):
        models["User"].from_id(12345)  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # also a ValueError
        models["User"].from_id(b"\x00" * 12)  # type: ignore[arg-type]


def test_id_and_underscore_id_both_accepted() -> None:
    class Doc(Persistable):
        x: int

    oid = ObjectId()
    assert Doc(id=oid, x=1).id == oid
    assert Doc(_id=str(oid), x=1).id == oid
    with pytest.raises(ValidationError, match="24-character hex"):
        Doc(id="xyz", x=1)


def test_every_value_type_round_trips(models: dict[str, Any], db: Any) -> None:
    Rich = models["Rich"]
    obj = Rich(
        code="ab-1",
        color=Color.BLUE,
        size=Size.L,
        price=Decimal("12.345"),
        born=dt.date(1999, 12, 31),
        uid=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        address=Address(city="Zürich", zip=8000),
        tags=["ü", "日本"],
        scores=[1.5, -0.0],
        when=dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=dt.UTC),
    ).persist()
    assert obj.code == "AB-1"
    raw = db.rich.find_one({"_id": obj.id})
    assert raw["color"] == "blue" and raw["size"] == 3
    assert raw["price"] == Decimal("12.345")
    assert raw["born"] == dt.datetime(1999, 12, 31, tzinfo=dt.UTC)
    assert raw["uid"] == uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert raw["address"] == {"city": "Zürich", "zip": 8000}
    back = Rich.from_id(obj.id)
    assert back == obj
    assert back.color is Color.BLUE and back.size is Size.L and back.born == dt.date(1999, 12, 31)


# ------------------------------------------------------------------ time rules
def test_naive_datetime_is_utc_and_microseconds_floor_to_milliseconds(
    models: dict[str, Any],
) -> None:
    Rich = models["Rich"]
    base = dict(code="x", color="red", size=1, price=1, born=dt.date(2000, 1, 1),
                uid=uuid.uuid4(), address={"city": "c"})
    naive = Rich(**base, when=dt.datetime(2024, 1, 1, 12, 0, 0, 123456))
    assert naive.when == dt.datetime(2024, 1, 1, 12, 0, 0, 123000, tzinfo=dt.UTC)
    plus2 = dt.timezone(dt.timedelta(hours=2))
    aware = Rich(**base, when=dt.datetime(2024, 1, 1, 14, 0, tzinfo=plus2))
    assert aware.when == dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC)
    assert aware.when.tzinfo is dt.UTC
    naive.persist()
    assert Rich.from_id(naive.id).when == naive.when  # what it holds is what loads


def test_assignment_is_normalised_and_validated(models: dict[str, Any]) -> None:
    User = models["User"]
    user = User(name="A", email="a@b.c", age=1)
    user.email = "MiXeD@Case.COM"
    assert user.email == "mixed@case.com"
    with pytest.raises(ValidationError, match="age"):
        user.age = "x"
    assert user.age == 1


def test_time_inserted_set_once_time_updated_refreshed(models: dict[str, Any], db: Any) -> None:
    UserStats = models["UserStats"]
    stats = UserStats(user_id="u1").persist()
    created, updated = stats.created_at, stats.last_updated
    assert created is not None and updated == created
    stats.login_count += 1
    stats.persist()
    raw = db.stats.find_one({"_id": stats.id})
    assert raw["created_at"] == created
    assert raw["last_updated"] >= updated and raw["updated_time"] >= updated
    assert stats.created_at == created and stats.last_updated == raw["last_updated"]


# ------------------------------------------------------------------ updates
def test_update_sends_one_set_of_changed_fields_only(
    models: dict[str, Any], commands: Any, db: Any
) -> None:
    User = models["User"]
    user = User(name="Alice", email="alice@example.com", age=30).persist()
    commands.clear()
    user.age = 31
    user.persist()
    writes = commands.writes()
    assert len(writes) == 1
    update = writes[0]["command"]["update"]
    assert set(update) == {"$set", "$setOnInsert"}
    assert set(update["$set"]) == {"age", "updated_time"} and update["$set"]["age"] == 31
    assert db.users.find_one({"_id": user.id})["age"] == 31


def test_nothing_changed_means_no_write(models: dict[str, Any], commands: Any) -> None:
    User = models["User"]
    user = User(name="A", email="a@b.c", age=1).persist()
    loaded = User.from_id(user.id)
    commands.clear()
    user.persist()
    loaded.age = 1  # same value
    loaded.persist()
    assert commands.writes() == []


def test_field_set_to_none_is_stored(models: dict[str, Any], db: Any) -> None:
    User, Rich = models["User"], models["Rich"]
    user = User(name="A", email="a@b.c", age=1, nickname="ace").persist()
    user.nickname = None
    user.persist()
    assert "nickname" not in db.users.find_one({"_id": user.id})  # $unset
    assert User.from_id(user.id).nickname is None

    class WithDefault(Persistable):
        note: str | None = "hello"

    WithDefault.__loom_persist__ = None
    obj = declare_persist_db(db_name=db.name, collection_name="wd")(WithDefault)(note="x")
    obj.persist()
    obj.note = None
    obj.persist()  # default is not None: None must be stored as null, not unset
    assert db.wd.find_one({"_id": obj.id})["note"] is None
    assert type(obj).from_id(obj.id).note is None
    del Rich


def test_counter_increment_is_inc_of_delta(
    models: dict[str, Any], commands: Any, db: Any
) -> None:
    UserStats = models["UserStats"]
    stats = UserStats(user_id="u", login_count=10).persist()
    assert db.stats.find_one({"_id": stats.id})["login_count"] == 10  # not 0
    stats = UserStats.from_id(stats.id)
    commands.clear()
    stats.login_count += 1
    stats.persist()
    (write,) = commands.writes()
    update = write["command"]["update"]
    assert update["$inc"] == {"login_count": 1}
    assert "login_count" not in update.get("$set", {})
    assert stats.login_count == 11


def test_counter_reads_back_concurrent_increments(models: dict[str, Any], db: Any) -> None:
    UserStats = models["UserStats"]
    a = UserStats(user_id="u").persist()
    b = UserStats.from_id(a.id)
    a.login_count += 2
    a.persist()
    b.login_count += 3
    b.persist()
    assert b.login_count == 5
    assert db.stats.find_one({"_id": a.id})["login_count"] == 5


def test_plain_assignment_to_stored_counter_is_an_error(models: dict[str, Any]) -> None:
    UserStats = models["UserStats"]
    new = UserStats(user_id="u")
    new.login_count = 4  # a new object may set its starting value
    new.persist()
    with pytest.raises(lm.ModelDeclarationError, match=r"only with \+= or -="):
        new.login_count = 7
    assert new.login_count == 4
    new.login_count -= 1
    assert new.login_count == 3


def test_stale_copies_changing_different_fields_both_keep_their_change(
    models: dict[str, Any], db: Any
) -> None:
    User = models["User"]
    user = User(name="A", email="a@b.c", age=1).persist()
    one, two = User.from_id(user.id), User.from_id(user.id)
    one.age = 50
    one.persist()
    two.name = "Zed"
    two.persist()
    raw = db.users.find_one({"_id": user.id})
    assert raw["age"] == 50 and raw["name"] == "Zed"


# ------------------------------------------------------------------ delete / bulk
def test_delete(models: dict[str, Any], db: Any) -> None:
    User = models["User"]
    user = User(name="A", email="a@b.c", age=1).persist()
    assert user.delete() is True
    assert db.users.count_documents({}) == 0
    assert not user.is_stored
    with pytest.raises(lm.NotPersistedError):
        User(name="B", email="b@b.c", age=2).delete()


def test_persist_many_is_one_bulk_write(
    models: dict[str, Any], commands: Any, db: Any
) -> None:
    User = models["User"]
    stored = User(name="Old", email="o@x.y", age=70).persist()
    stored.age = 71
    commands.clear()
    ids = User.persist_many([User(name=f"u{i}", email=f"U{i}@X.Y", age=i) for i in range(3)]
                            + [stored])
    writes = commands.writes()
    # One unordered bulk write: MongoDB has one command per kind of write, so the bulk is
    # exactly one insert (all new objects) and one update (all changed ones).
    assert [w["name"] for w in writes] == ["insert", "update"]
    assert len(writes[0]["command"]["documents"]) == 3
    assert len(writes[1]["command"]["updates"]) == 1
    assert writes[0]["command"]["ordered"] is False
    assert len(ids) == 4 and ids[3] == stored.id
    assert db.users.count_documents({}) == 4
    assert db.users.find_one({"_id": ids[0]})["email"] == "u0@x.y"
    assert db.users.find_one({"_id": stored.id})["age"] == 71


def test_duplicate_id_is_a_clear_error_and_loses_nothing(models: dict[str, Any], db: Any) -> None:
    User = models["User"]
    first = User(name="A", email="a@b.c", age=1).persist()
    clash = User(id=first.id, name="B", email="b@b.c", age=2)
    with pytest.raises(lm.DuplicateKeyError, match="already exists"):
        clash.persist()
    assert not clash.is_stored
    assert db.users.find_one({"_id": first.id})["name"] == "A"


def test_persist_many_reports_failures_and_writes_the_rest(
    models: dict[str, Any], db: Any
) -> None:
    User = models["User"]
    first = User(name="A", email="a@b.c", age=1).persist()
    batch = [User(name="B", email="b@b.c", age=2), User(id=first.id, name="C", email="c", age=3)]
    with pytest.raises(lm.DuplicateKeyError, match=r"(?s)1 of 2 writes.*objects\[1\]"):
        User.persist_many(batch)
    assert db.users.count_documents({}) == 2
    assert batch[0].is_stored and not batch[1].is_stored


def test_unique_index_declared_on_model(db_name: str, db: Any) -> None:
    from pymongo import IndexModel

    @declare_persist_db(
        db_name=db_name,
        collection_name="accounts",
        indexes=["email", [("org", 1), ("name", -1)], IndexModel("handle", unique=True)],
    )
    class Account(Persistable):
        email: str
        org: str
        name: str
        handle: str

    Account(email="e", org="o", name="n", handle="h").persist()
    names = {tuple(ix["key"].items()) for ix in db.accounts.list_indexes()}
    assert (("email", 1),) in names and (("org", 1), ("name", -1)) in names
    with pytest.raises(lm.DuplicateKeyError):
        Account(email="e2", org="o", name="n", handle="h").persist()
    assert db.accounts.count_documents({}) == 1


# ------------------------------------------------------------------ bad input
def test_persisting_undeclared_model_is_a_clear_error() -> None:
    class Loose(Persistable):
        x: int

    with pytest.raises(lm.ModelDeclarationError, match="@declare_persist_db"):
        Loose(x=1).persist()


def test_invalid_values_name_the_field(models: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="age"):
        models["User"](name="A", email="a@b.c", age="not a number")
    with pytest.raises(ValidationError, match="nmae"):
        models["User"](nmae="A", email="a@b.c", age=3)  # typos are not silently dropped


def test_declaration_rejects_bad_names() -> None:
    with pytest.raises(lm.ModelDeclarationError, match="collection_name"):
        declare_persist_db(db_name="x", collection_name="$bad")
    with pytest.raises(lm.ModelDeclarationError, match="Persistable subclass"):
        declare_persist_db(db_name="x", collection_name="y")(dict)  # type: ignore[type-var]
    # Names MongoDB refuses fail at the declaration, not as a driver error at first use.
    for db_name, says in [("my app", "contains ' '"), ("a.b", "contains '.'"),
                          ("x" * 64, "over 63 bytes")]:
        with pytest.raises(lm.ModelDeclarationError, match=says):
            declare_persist_db(db_name=db_name, collection_name="y")
    with pytest.raises(lm.ModelDeclarationError, match="over 63 bytes"):
        declare_persist_db(db_name="x" * 60, collection_name="y", test=True)  # + "_test"
    with pytest.raises(lm.ModelDeclarationError, match="reserved by MongoDB"):
        declare_persist_db(db_name="x", collection_name="system.users")


def test_test_flag_uses_test_database(db_name: str, client: Any) -> None:
    @declare_persist_db(db_name=db_name, collection_name="c", test=True, version=2)
    class T(Persistable):
        x: int

    obj = T(x=1).persist()
    raw = client[f"{db_name}_test"].c.find_one({"_id": obj.id})
    assert raw["x"] == 1 and raw["_v"] == 2
    assert T.from_id(obj.id) == obj  # the version key is not a field


# ------------------------------------------------------------------ ledger
def test_ledger_persist_always_inserts(db_name: str, db: Any) -> None:
    @declare_persist_db(db_name=db_name, collection_name="logs")
    class AuditLog(LedgerModel):
        action: str
        user_id: str

    log = AuditLog(action="login", user_id="123")
    log.persist()
    first_id = log.id
    log.action = "logout"
    log.persist()
    assert log.id != first_id
    docs = list(db.logs.find({}, sort=[("_id", 1)]))
    assert [d["action"] for d in docs] == ["login", "logout"]
    assert docs[1]["updated_time"] >= docs[0]["updated_time"]

    ids = AuditLog.persist_many([AuditLog(action="view", user_id="1"),
                                 AuditLog(action="click", user_id="1")])
    assert len(set(ids)) == 2 and db.logs.count_documents({}) == 4


def test_nested_model_datetimes_are_normalised_too(db_name: str) -> None:
    class Stamp(BaseModel):
        when: dt.datetime

    @declare_persist_db(db_name=db_name, collection_name="stamps")
    class Stamped(Persistable):
        stamp: Stamp
        history: list[Stamp] = []

    naive = dt.datetime(2024, 1, 1, 12, 0, 0, 123456)
    obj = Stamped(stamp=Stamp(when=naive), history=[Stamp(when=naive)]).persist()
    expected = dt.datetime(2024, 1, 1, 12, 0, 0, 123000, tzinfo=dt.UTC)
    assert obj.stamp.when == expected and obj.history[0].when == expected
    assert Stamped.from_id(obj.id) == obj
