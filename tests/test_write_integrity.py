"""Nothing lost, nothing doubled: every write path under a second writer and lost replies.

Each test reproduces what a user hits: a second client writing between our read and our
write, a second process upserting the same keys, the reply of an applied write lost
twice (the first attempt and pymongo's own retry: a crash or failover), a server killed
mid-write. Replies are lost by :class:`faults.ReplyDroppingProxy`, which forwards the
write to the server and throws the reply away, so the write IS applied; fail points
(``failCommand``) fail a command before it runs and cannot show that.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing as mp
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pandas as pd
import polars as pl
import pymongo
import pytest
from bson import ObjectId
from pydantic import BaseModel, Field

import loom_frames as lm
from loom_frames import (
    IncrCounter,
    LedgerModel,
    Persistable,
    StrLower,
    declare_persist_db,
)
from loom_frames.errors import (
    DocumentValidationError,
    FrameWriteError,
    ModelDeclarationError,
    WriteOutcomeUnknownError,
    WriteRejectedError,
)

sys.path.insert(0, str(Path(__file__).parent))
from faults import ReplyDroppingProxy  # noqa: E402

UTC = dt.UTC


# ------------------------------------------------------------------ models & fixtures
def models(db_name: str) -> dict[str, Any]:
    @declare_persist_db(db_name=db_name, collection_name="users", unique=["email"])
    class User(Persistable):
        name: str
        email: StrLower
        age: int = 0
        logins: IncrCounter = 0

    @declare_persist_db(db_name=db_name, collection_name="log")
    class Entry(LedgerModel):
        action: str

    @declare_persist_db(db_name=db_name, collection_name="skus", unique=["sku"])
    class Sku(Persistable):
        sku: str
        price: float
        stock: int = 0

    return {"User": User, "Entry": Entry, "Sku": Sku}


@pytest.fixture
def m(db_name: str) -> dict[str, Any]:
    return models(db_name)


def _client(uri: str, **options: Any) -> pymongo.MongoClient[Any]:
    return pymongo.MongoClient(uri, tz_aware=True, tzinfo=UTC, uuidRepresentation="standard",
                               **options)


@contextlib.contextmanager
def library_client(uri: str, restore: Any) -> Iterator[None]:
    """The library's client is one for ``uri`` inside the block, ``restore`` after."""
    via = _client(uri, serverSelectionTimeoutMS=3000)
    lm.connect(client=via)
    try:
        yield
    finally:
        lm.connect(client=restore)
        via.close()


@pytest.fixture
def proxy(mongo_uri: str, client: Any) -> Iterator[ReplyDroppingProxy]:
    """The library's client talks to the server through a reply-dropping proxy."""
    with ReplyDroppingProxy.for_uri(mongo_uri) as p, library_client(p.uri, client):
        yield p


def count(model: Any, **query: Any) -> int:
    return int(model.collection().count_documents(query))


def lose(proxy: ReplyDroppingProxy, write: Any, command: str = "insert") -> None:
    """Run ``write()`` with its reply lost twice (the first attempt and pymongo's retry):
    the server applies the write, the caller gets WriteOutcomeUnknownError."""
    proxy.drop(command, times=2)
    with pytest.raises(WriteOutcomeUnknownError):
        write()


# ------------------------------------------------------------------ 3. persist(): unknown outcomes
def test_a_new_object_whose_insert_reply_is_lost_keeps_its_id_and_a_retry_stores_it_once(
    m: dict[str, Any], proxy: ReplyDroppingProxy
) -> None:
    User = m["User"]
    user = User(name="Ann", email="ann@x.org")
    proxy.drop("insert", times=2)  # the first attempt and pymongo's retry
    with pytest.raises(WriteOutcomeUnknownError) as info:
        user.persist()
    assert isinstance(info.value, lm.WriteFailedError) and isinstance(info.value, ConnectionError)
    assert "may or may not have been applied" in str(info.value)
    assert proxy.dropped == ["insert", "insert"]
    assert user.id is not None and not user.is_stored  # the id it was sent with
    assert count(User) == 1  # ... and the server did apply it
    user.persist()  # the natural retry: completes, never a second document
    assert count(User) == 1 and user.is_stored
    assert User.from_id(user.id) == user


def test_an_object_changed_after_a_lost_insert_is_completed_then_updated(
    m: dict[str, Any], proxy: ReplyDroppingProxy
) -> None:
    User = m["User"]
    user = User(name="Ann", email="ann@x.org")
    lose(proxy, user.persist)
    user.age = 41
    user.persist()
    assert count(User) == 1
    assert User.from_id(user.id).age == 41


def test_a_lost_insert_that_was_not_applied_is_inserted_by_the_retry(
    m: dict[str, Any], client: Any, proxy: ReplyDroppingProxy
) -> None:
    User = m["User"]
    user = User(name="Ann", email="ann@x.org")
    lose(proxy, user.persist)
    client[User.persist_config().database].users.delete_many({})  # as if never applied
    user.persist()
    assert count(User) == 1 and User.from_id(user.id).name == "Ann"


def test_a_lost_insert_not_applied_whose_key_was_taken_meanwhile_can_be_fixed(
    m: dict[str, Any], client: Any, proxy: ReplyDroppingProxy
) -> None:
    User = m["User"]
    user = User(name="Ann", email="ann@x.org")
    lose(proxy, user.persist)
    users = client[User.persist_config().database].users
    users.delete_many({})  # as if never applied ...
    users.insert_one({"name": "Other", "email": "ann@x.org"})  # ... and the email taken
    with pytest.raises(lm.DuplicateKeyError):
        user.persist()  # the earlier insert is not stored: forgotten, the clash reported
    user.email = "ann2@x.org"
    user.persist()  # an ordinary new object now: stored with what it holds
    assert User.from_id(user.id).email == "ann2@x.org" and count(User) == 2


def test_a_lost_counter_update_is_never_applied_twice(
    m: dict[str, Any], proxy: ReplyDroppingProxy
) -> None:
    User = m["User"]
    user = User(name="Ann", email="ann@x.org").persist()
    user.logins += 1
    lose(proxy, user.persist, "findAndModify")
    assert User.from_id(user.id).logins == 1  # applied once
    with pytest.raises(WriteRejectedError) as info:  # a blind retry would store 2
        user.persist()
    message = str(info.value)
    assert "counter increments" in message and f"User.from_id('{user.id}')" in message
    assert User.from_id(user.id).logins == 1
    fresh = User.from_id(user.id)
    fresh.logins += 1
    fresh.persist()
    assert User.from_id(user.id).logins == 2


def test_a_lost_field_update_is_resent_as_is(m: dict[str, Any], proxy: ReplyDroppingProxy
                                             ) -> None:
    User = m["User"]
    user = User(name="Ann", email="ann@x.org").persist()
    user.age = 30
    lose(proxy, user.persist, "findAndModify")
    user.persist()  # $set is idempotent: the retry is allowed and harmless
    stored = User.from_id(user.id)
    assert stored.age == 30 and count(User) == 1


def test_a_ledger_entry_whose_reply_is_lost_is_stored_once_by_the_retry(
    m: dict[str, Any], proxy: ReplyDroppingProxy
) -> None:
    Entry = m["Entry"]
    entry = Entry(action="login")
    lose(proxy, entry.persist)
    entry.persist()  # completes the lost one: not a second history record
    assert count(Entry) == 1
    entry.action = "logout"
    entry.persist()  # a ledger appends a new document for a new persist()
    assert sorted(d["action"] for d in Entry.collection().find()) == ["login", "logout"]


def test_a_ledger_entry_changed_after_a_lost_insert_keeps_both_records(
    m: dict[str, Any], proxy: ReplyDroppingProxy
) -> None:
    Entry = m["Entry"]
    entry = Entry(action="view")
    lose(proxy, entry.persist)
    entry.action = "click"
    entry.persist()  # completes "view" (at most once), then appends "click"
    entry.persist()
    assert sorted(d["action"] for d in Entry.collection().find()) == ["click", "click", "view"]


def test_persist_many_of_counter_deltas_is_never_applied_twice(
    m: dict[str, Any], proxy: ReplyDroppingProxy
) -> None:
    User = m["User"]
    users = [User(name=f"u{i}", email=f"u{i}@x.org").persist() for i in range(3)]
    for user in users:
        user.logins += 1
    proxy.drop("update", times=2)
    with pytest.raises(WriteOutcomeUnknownError) as info:
        User.persist_many(users)
    assert "3 of 3 writes of User failed" in str(info.value)
    assert [User.from_id(u.id).logins for u in users] == [1, 1, 1]
    with pytest.raises(WriteRejectedError, match="refused \\(nothing sent\\)"):
        User.persist_many(users)
    assert [User.from_id(u.id).logins for u in users] == [1, 1, 1]


def test_persist_many_of_new_objects_with_a_lost_reply_is_completed_once(
    m: dict[str, Any], proxy: ReplyDroppingProxy
) -> None:
    User, Entry = m["User"], m["Entry"]
    users = [User(name=f"u{i}", email=f"u{i}@x.org") for i in range(4)]
    entries = [Entry(action=f"a{i}") for i in range(3)]
    proxy.drop("insert", times=4)  # both bulk writes: first attempt and retry
    with pytest.raises(WriteOutcomeUnknownError):
        User.persist_many(users)
    with pytest.raises(WriteOutcomeUnknownError):
        Entry.persist_many(entries)
    users[0].age = 99  # changed since: completed, then updated
    assert User.persist_many(users) == [u.id for u in users]
    Entry.persist_many(entries)
    assert count(User) == 4 and count(Entry) == 3
    assert User.from_id(users[0].id).age == 99
    assert all(u.is_stored for u in users)


def test_a_delete_whose_reply_is_lost_can_be_retried(
    m: dict[str, Any], proxy: ReplyDroppingProxy
) -> None:
    User = m["User"]
    user = User(name="Ann", email="ann@x.org").persist()
    lose(proxy, user.delete, "delete")
    assert user.delete() is False  # it had been applied; the retry is harmless
    assert count(User) == 0


# ------------------------------------------------------------------ a killed server
def _start_server(storage: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("secantusd-py") or str(Path(sys.executable).with_name("secantusd-py"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = storage.parent / "empty.toml"  # an explicit, empty configuration
    config.write_text("")
    process = subprocess.Popen(
        [exe, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(storage),
         "--log-level", "ERROR", "--config", str(config), "--sync-on-commit"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the test server did not start")


class Killable:
    """A server on disk behind a reply-dropping proxy: killed at the moment a reply is
    lost (``kill_on_lost``), restarted on the same data (``restart``)."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.process, port = _start_server(storage)
        self.proxy = ReplyDroppingProxy("127.0.0.1", port)
        self.killed: list[str] = []

    def kill_on_lost(self, command: str) -> None:
        """Lose the next reply to ``command``; the server dies right after applying it."""

        def crash(name: str) -> None:
            self.killed.append(name)
            self.process.kill()

        self.proxy.hook = crash
        self.proxy.drop(command, times=1)

    def restart(self) -> None:
        self.process.wait(30)
        self.process, port = _start_server(self.storage)
        self.proxy.upstream = ("127.0.0.1", port)

    def close(self) -> None:
        self.proxy.close()
        self.process.kill()
        self.process.wait(30)


@pytest.fixture
def killable(tmp_path: Path, client: Any) -> Iterator[Killable]:
    """The library talks to a :class:`Killable` server for one test."""
    server = Killable(tmp_path / "data")
    try:
        with library_client(server.proxy.uri, client):
            yield server
    finally:
        server.close()


def test_a_server_killed_after_applying_an_insert_loses_or_keeps_it_and_the_retry_stores_once(
    killable: Killable
) -> None:
    User = models("killed")["User"]
    user = User(name="Ann", email="ann@x.org")
    User(name="Bob", email="bob@x.org").persist()
    killable.kill_on_lost("insert")  # the write is applied, then the crash
    with pytest.raises(WriteOutcomeUnknownError):
        user.persist()
    assert user.id is not None and killable.killed == ["insert"]
    killable.restart()  # on the same data
    user.persist()
    stored = sorted(d["name"] for d in User.collection().find())
    assert stored == ["Ann", "Bob"]  # durable (--sync-on-commit), and Ann exactly once


def test_a_server_killed_during_a_frame_write_leaves_a_result_a_rerun_completes(
    killable: Killable
) -> None:
    Sku = models("killed_frames")["Sku"]
    df = frame(30)
    # The second batch is applied, then the server dies: its reply is lost.
    killable.proxy.before_reply("insert", lambda: killable.kill_on_lost("insert"))
    result = Sku.insert_dataframe(df, batch_size=10, on_error="report")
    assert killable.killed == ["insert"] and result.rows == 30
    assert result.inserted == 10  # the first batch; the second unknown; the third not sent
    outcomes = {f.row // 10: f.outcome for f in result.failed}
    assert outcomes == {1: "unknown", 2: "not_attempted"}
    killable.restart()
    done = Sku.upsert_dataframe(df.with_columns(id=result.ids), on=["id"])
    assert done.rows == 30 and done.ok
    assert Sku.collection().count_documents({}) == 30  # every row once
    assert len(Sku.collection().distinct("sku")) == 30


# ------------------------------------------------------------------ frames: lost replies
def frame(n: int, start: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"sku": [f"s{i:04d}" for i in range(start, start + n)],
                         "price": [float(i) for i in range(start, start + n)]})


def test_insert_dataframe_with_a_lost_reply_reports_unknown_rows_and_a_rerun_completes(
    m: dict[str, Any], proxy: ReplyDroppingProxy
) -> None:
    Sku = m["Sku"]
    df = frame(9)
    proxy.drop("insert", times=2)
    result = Sku.insert_dataframe(df, batch_size=3, on_error="report")
    assert result.rows == 9 and (result.inserted, len(result.failed)) == (6, 3)
    assert {f.outcome for f in result.failed} == {"unknown"}
    assert count(Sku) == 9  # the lost batch was applied
    done = Sku.upsert_dataframe(df.with_columns(id=result.ids), on=["id"])
    assert (done.inserted, done.updated, done.unchanged) == (0, 0, 9)
    assert count(Sku) == 9


def test_upsert_with_a_lost_update_reply_reports_unknown_and_a_rerun_completes(
    m: dict[str, Any], proxy: ReplyDroppingProxy
) -> None:
    Sku = m["Sku"]
    Sku.insert_dataframe(frame(4))
    changed = frame(4).with_columns(price=pl.col("price") + 100)
    proxy.drop("update", times=2)
    result = Sku.upsert_dataframe(changed, on="sku", on_error="report")
    assert result.rows == 4 and {f.outcome for f in result.failed} == {"unknown"}
    again = Sku.upsert_dataframe(changed, on="sku")
    assert again.rows == 4 and again.failed == ()
    assert sorted(d["price"] for d in Sku.collection().find()) == [100.0, 101.0, 102.0, 103.0]


# ------------------------------------------------------------------ 1. a second client mid-upsert
def test_upsert_rows_whose_documents_another_client_deletes_or_rekeys_are_never_dropped(
    m: dict[str, Any], mongo_uri: str, proxy: ReplyDroppingProxy
) -> None:
    Sku = m["Sku"]
    Sku.insert_dataframe(frame(3))
    other = _client(mongo_uri)
    coll = other[Sku.persist_config().database].skus

    def second_client() -> None:  # between our key lookup and our update
        coll.delete_one({"sku": "s0001"})
        coll.update_one({"sku": "s0002"}, {"$set": {"sku": "renamed"}})

    proxy.before_reply("find", second_client)
    changed = frame(3).with_columns(price=pl.col("price") + 10)
    result = Sku.upsert_dataframe(changed, on="sku")
    other.close()
    assert result.rows == 3 and result.ok
    assert (result.inserted, result.updated, result.unchanged) == (2, 1, 0)
    stored = {d["sku"]: d["price"] for d in Sku.collection().find()}
    assert stored == {"s0000": 10.0, "s0001": 11.0, "s0002": 12.0, "renamed": 2.0}
    assert result.ids.to_list()[1] == str(Sku.collection().find_one({"sku": "s0001"})["_id"])


def _upsert_worker(uri: str, db_name: str, rounds: int, start_at: float, queue: Any) -> None:
    import loom_frames as lm

    lm.connect(uri)
    Sku = models(db_name)["Sku"]
    time.sleep(max(0.0, start_at - time.time()))
    totals = []
    for r in range(rounds):
        result = Sku.upsert_dataframe(frame(500).with_columns(stock=pl.lit(r)), on=["sku"],
                                      batch_size=50, on_error="report")
        totals.append((result.inserted, result.updated, result.unchanged, len(result.failed)))
    queue.put(totals)


def test_two_processes_upserting_the_same_keys_store_one_document_per_key(
    m: dict[str, Any], mongo_uri: str, db_name: str
) -> None:
    m["Sku"].collection()  # the unique index exists before the race starts
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 3
    procs = [ctx.Process(target=_upsert_worker, args=(mongo_uri, db_name, 2, start_at, queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    Sku = m["Sku"]
    assert count(Sku) == 500
    assert len(Sku.collection().distinct("sku")) == 500
    for totals in results:
        assert all(sum(t) == 500 and t[3] == 0 for t in totals)  # every row, none failed
    assert sum(totals[0][0] for totals in results) == 500  # each key inserted once


def test_upsert_without_a_unique_index_is_refused_before_anything_is_written(
    db_name: str,
) -> None:
    @declare_persist_db(db_name=db_name, collection_name="loose")
    class Loose(Persistable):
        sku: str

    with pytest.raises(ModelDeclarationError, match=r"unique=\['sku'\]"):
        Loose.upsert_dataframe(pl.DataFrame({"sku": ["a"]}), on="sku")
    assert count(Loose) == 0


def _insert_worker(uri: str, db_name: str, ids: list[str], start_at: float, queue: Any) -> None:
    import loom_frames as lm

    lm.connect(uri)
    Sku = models(db_name)["Sku"]
    time.sleep(max(0.0, start_at - time.time()))
    df = frame(len(ids)).with_columns(id=pl.Series(ids))
    result = Sku.insert_dataframe(df, batch_size=20, on_error="report")
    queue.put((result.inserted, [f.code for f in result.failed]))


def test_two_processes_inserting_the_same_rows_store_each_once_and_report_the_rest(
    m: dict[str, Any], mongo_uri: str, db_name: str
) -> None:
    m["Sku"].collection()
    ids = [str(ObjectId()) for _ in range(200)]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 3
    procs = [ctx.Process(target=_insert_worker, args=(mongo_uri, db_name, ids, start_at, queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(60)
    assert count(m["Sku"]) == 200
    assert sum(inserted for inserted, _ in results) == 200
    assert all(inserted + len(codes) == 200 and set(codes) <= {11000} for inserted, codes in results)


# ------------------------------------------------------------------ rejected: exactly as it was
@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("big", 2**63, "beyond MongoDB's 64-bit integers"),
        ("name", "bad \ud800 text", "lone surrogate"),
        ("meta", {"a\x00b": 1}, "NUL character"),
        ("name", "x" * (17 * 1024 * 1024), "MongoDB stores at most 16,777,216"),
    ],
)
def test_an_unstorable_value_is_refused_before_sending_and_leaves_the_object_as_it_was(
    db_name: str, commands: Any, field: str, value: Any, says: str
) -> None:
    @declare_persist_db(db_name=db_name, collection_name="odd")
    class Odd(Persistable):
        name: str = "ok"
        big: int = 0
        meta: dict[str, int] = Field(default_factory=dict)

    obj = Odd(**{field: value})
    before = obj.model_dump()
    commands.clear()
    with pytest.raises(DocumentValidationError) as info:
        obj.persist()
    assert f"field {field!r}" in str(info.value) or f"'{field}'" in str(info.value)
    assert says in str(info.value)
    assert not commands.writes()  # nothing was sent
    assert obj.model_dump() == before and obj.id is None and not obj.is_stored
    assert obj.created_at is None and obj.updated_time is None
    # The same value set on a stored object: refused too, the snapshot untouched.
    stored = Odd().persist()
    snapshot = dict(stored._loom_saved)
    setattr(stored, field, value)
    commands.clear()
    with pytest.raises(DocumentValidationError, match=says):
        stored.persist()
    assert not commands.writes() and stored._loom_saved == snapshot


def test_a_rejected_duplicate_leaves_the_new_object_exactly_as_it_was(m: dict[str, Any]) -> None:
    User = m["User"]
    User(name="Ann", email="ann@x.org").persist()
    twin = User(name="Ann2", email="ANN@x.org")
    before = dict(twin.__dict__)
    with pytest.raises(lm.DuplicateKeyError) as info:
        twin.persist()
    assert isinstance(info.value, WriteRejectedError)
    assert twin.__dict__ == before and twin.id is None and not twin.is_stored


# ------------------------------------------------------------------ 4. pandas index
def test_a_pandas_index_named_after_a_field_is_that_column(m: dict[str, Any]) -> None:
    Sku = m["Sku"]
    first = Sku.insert_dataframe(frame(3).to_pandas())
    loaded = Sku.filter().sort("sku").load_dataframe()[["id", "sku", "price"]]
    by_id = loaded.assign(price=loaded.price + 1).set_index("id")
    result = Sku.upsert_dataframe(by_id, on=["id"])
    assert (result.inserted, result.updated) == (0, 3)  # the index gave the ids
    assert count(Sku) == 3
    assert list(result.ids.index) == list(by_id.index)
    assert result.ids.tolist() == first.ids.tolist()
    by_price = pd.DataFrame({"sku": ["n1", "n2"], "stock": [7, 8]},
                            index=pd.Index([5.0, 6.0], name="price"))
    Sku.insert_dataframe(by_price)
    assert {d["sku"]: (d["price"], d["stock"]) for d in Sku.collection().find({"sku": {"$in": ["n1", "n2"]}})} == {
        "n1": (5.0, 7), "n2": (6.0, 8)}


def test_a_pandas_index_without_a_field_to_go_to_is_refused(m: dict[str, Any]) -> None:
    Sku = m["Sku"]
    df = frame(3).to_pandas()
    with pytest.raises(lm.FrameValidationError, match="index level.*'region'.*reset_index"):
        Sku.insert_dataframe(df.set_index(pd.Index(["a", "b", "c"], name="region")))
    with pytest.raises(lm.FrameValidationError, match="unnamed DatetimeIndex.*reset_index"):
        Sku.insert_dataframe(df.set_index(pd.date_range("2024-01-01", periods=3)))
    with pytest.raises(lm.FrameValidationError, match="also columns"):
        Sku.insert_dataframe(df.set_index(pd.Index([1.0, 2.0, 3.0], name="price")))
    assert count(Sku) == 0
    filtered = df[df.price > 0]  # an unnamed integer index: row labels, not data
    result = Sku.insert_dataframe(filtered)
    assert result.inserted == 2 and list(result.ids.index) == [1, 2]


# ------------------------------------------------------------------ 5. keys decided at definition
def test_model_declarations_that_would_corrupt_data_are_refused_naming_the_field() -> None:
    with pytest.raises(ModelDeclarationError, match="Bad.rev is stored as '_v'"):
        @declare_persist_db(db_name="x", collection_name="y", version=2)
        class Bad(Persistable):
            rev: int = Field(0, alias="_v")

    with pytest.raises(ModelDeclarationError, match="Other.id is redeclared"):
        class Other(Persistable):
            id: str | None = Field(None, alias="_id")  # type: ignore[assignment]

    with pytest.raises(ModelDeclarationError, match="Twin.code is stored as '_id'"):
        class Twin(Persistable):
            code: str = Field(alias="_id")

    for key, says in [("a.b", "contains '.'"), ("$x", "starts with '$'"),
                      ("a\x00b", "NUL"), ("__loom_report", "reserved")]:
        with pytest.raises(ModelDeclarationError,
                           match=f"Keyed.k is stored under the key .*{re.escape(says)}"):
            class Keyed(Persistable):
                k: int = Field(0, alias=key)

    class Inner(BaseModel):
        city: str = Field(alias="ci.ty")

    with pytest.raises(ModelDeclarationError, match="Outer.home holds Inner.*'ci.ty'"):
        class Outer(Persistable):
            home: Inner | None = None

    with pytest.raises(ModelDeclarationError, match="both stored as 'n'"):
        class Two(Persistable):
            n: int = 0
            m: int = Field(0, alias="n")

    # _v is only the library's when version= is declared; unique= names are checked.
    class Versionless(Persistable):
        rev: int = Field(0, alias="_v")

    with pytest.raises(lm.FieldNotFoundError, match="did you mean 'email'"):
        @declare_persist_db(db_name="x", collection_name="y", unique=["emial"])
        class Typo(Persistable):
            email: str


# ------------------------------------------------------------------ 6. output names
@pytest.mark.parametrize("name", ["$x", "a.b", "$toUpper", "__loom_report", ""])
def test_output_column_names_are_checked_like_field_names(m: dict[str, Any], name: str) -> None:
    Sku = m["Sku"]
    with pytest.raises(lm.InvalidExpressionError, match="cannot name a column"):
        Sku.filter().with_columns(**{name: lm.fld["price"] * 2})
    with pytest.raises(lm.InvalidExpressionError, match="cannot name a column"):
        Sku.filter().group_by(**{name: lm.fld["sku"]}).agg(n=lm.fld["price"].count())
    with pytest.raises(lm.InvalidExpressionError, match="cannot name a column"):
        Sku.filter().group_by("sku").agg(**{name: lm.fld["price"].sum()})
    with pytest.raises(lm.InvalidExpressionError, match="cannot name a column"):
        Sku.filter().select(lm.fld["price"].alias(name))
    with pytest.raises(lm.InvalidExpressionError, match="cannot name a column"):
        lm.scan_collection("x", "y", schema={name: pl.Int64})
    import pyarrow as pa

    with pytest.raises(lm.InvalidExpressionError, match="cannot name a column"):
        Sku.agg([{"$match": {}}], schema=pa.schema({name: pa.int64()}))


# ------------------------------------------------------------------ the one equality rule
def test_persist_and_upsert_share_one_equality_rule(m: dict[str, Any], commands: Any) -> None:
    Sku = m["Sku"]
    Sku.collection().insert_one({"_id": ObjectId(), "sku": "int", "price": 5, "stock": 1})
    obj = Sku.filter(lm.fld["sku"] == "int").load_one()
    obj.price = 5.0  # the same number: MongoDB's equality, as upsert_dataframe uses it
    commands.clear()
    obj.persist()
    assert not commands.writes()
    result = Sku.upsert_dataframe(pl.DataFrame({"sku": ["int"], "price": [5.0], "stock": [1]}),
                                  on="sku")
    assert result.unchanged == 1
