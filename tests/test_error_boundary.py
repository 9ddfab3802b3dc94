"""One error boundary on the read side (issue 12, case 9): every loader maps driver errors
through ``connection.driver_error``: a lost connection is ``ConnectionFailedError``
everywhere, refused credentials name the user and database, and an invalid name, a
missing TLS key file or a frozen server get messages that say what to check."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pymongo
import pytest
from pymongo.errors import AutoReconnect

import loom_frames as lm
from loom_frames import AggregationStages, Persistable, connection, declare_persist_db
from loom_frames.embedded import EmbeddedServer


def with_options(uri: str, **options: str) -> str:
    """``uri`` with more ``?key=value`` options."""
    extra = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{uri}{'&' if '?' in uri else '?'}{extra}"


@pytest.fixture
def Item(db_name: str) -> type[Persistable]:  # noqa: N802
    @declare_persist_db(db_name=db_name, collection_name="items")
    class Item(Persistable):
        name: str
        n: int

    return Item


@pytest.fixture
def items(Item: Any) -> None:  # noqa: N803
    Item.persist_many([Item(name=f"i{k}", n=k) for k in range(3)])


def loaders(model: Any) -> dict[str, Callable[[], Any]]:
    """Every read path of a model: objects, counts, frames, batches, scans, raw pipelines
    (``load_latest``, ``load_polars`` and ``load_dataframe`` share the paths of
    ``load_one`` and ``load_table``)."""
    query = model.filter(lm.fld["n"] >= 0)
    stages = AggregationStages().match({"n": {"$gte": 0}})
    schema = pa.schema({"name": pa.string(), "n": pa.int64()})
    return {
        "load_one": query.load_one,
        "load_many": query.load_many,
        "count": query.count,
        "exists": query.exists,
        "load_table": query.load_table,
        "iter_batches": lambda: list(query.iter_batches(2)),
        "group_by": lambda: query.group_by("name").agg(n=lm.fld["n"].sum()).load_table(),
        "scan": lambda: model.scan().collect(),
        "scan_collection": lambda: lm.scan_collection(
            model.persist_config().database, "items", schema={"n": pa.int64()}).collect(),
        "agg.load_many": lambda: model.agg(stages).load_many(),
        "agg.load_table": lambda: model.agg(stages, schema=schema).load_table(),
        "agg.load_table (inferred)": lambda: model.agg(stages).load_table(),
    }


@pytest.fixture
def failpoint(client: Any) -> Iterator[Callable[..., None]]:
    def arm(**data: Any) -> None:
        client.admin.command("configureFailPoint", "failCommand", mode="alwaysOn",
                             data={"appName": "loom-boundary", **data})

    try:
        yield arm
    finally:
        client.admin.command("configureFailPoint", "failCommand", mode="off")


@pytest.fixture
def watched(mongo_uri: str, client: Any) -> Iterator[None]:
    """The library's client, named so fail points hit only it (one attempt per read)."""
    lm.connect(with_options(mongo_uri, appname="loom-boundary", retryReads="false"))
    yield
    lm.connect(client=client)


def test_a_lost_connection_is_connection_failed_from_every_loader(
    Item: Any, items: None, watched: None, failpoint: Any  # noqa: N803
) -> None:
    failpoint(failCommands=["find", "aggregate"], closeConnection=True)
    for name, load in loaders(Item).items():
        with pytest.raises(lm.ConnectionFailedError) as info:
            load()
        message = str(info.value)
        assert "connection to" in message and "was lost" in message, (name, message)
        assert Item.persist_config().database in message, (name, message)
        assert "Hint:" in message, name


def test_an_unreachable_server_is_connection_failed_from_every_loader(
    Item: Any, items: None, client: Any  # noqa: N803
) -> None:
    server = EmbeddedServer.ephemeral()
    try:
        lm.connect(with_options(server.uri, serverSelectionTimeoutMS="100"))
        port = server.port
        server.stop()
        for name, load in loaders(Item).items():
            with pytest.raises(lm.ConnectionFailedError) as info:
                load()
            message = str(info.value)
            assert f"nothing is listening at 127.0.0.1:{port} (connection refused)" in message, (
                name, message)
    finally:
        server.stop()
        lm.connect(client=client)


def test_count_names_the_command_it_runs(
    Item: Any, items: None, watched: None, failpoint: Any  # noqa: N803
) -> None:
    failpoint(failCommands=["aggregate"], errorCode=2, errmsg="bad aggregate")
    for load in (Item.filter().count, Item.filter().exists, Item.filter().limit(2).count):
        with pytest.raises(lm.PlanError) as info:
            load()
        message = str(info.value)
        assert "(aggregate)" in message and "find" not in message, message
        assert "code 2" in message and "Hint:" in message


def test_refused_credentials_name_the_user_and_database(mongo_uri: str, client: Any) -> None:
    parsed = pymongo.uri_parser.parse_uri(mongo_uri)
    if not parsed["username"]:
        pytest.skip("the test server does not require authentication")
    host, port = parsed["nodelist"][0]
    wrong = f"mongodb://{parsed['username']}:XYZZY-pa%23ss@{host}:{port}/?authSource=admin"
    try:
        with pytest.raises(lm.AuthenticationFailedError) as info:
            lm.connect(wrong)
    finally:
        lm.connect(client=client)
    message = str(info.value)
    assert f"user '{parsed['username']}'" in message and "database 'admin'" in message
    assert "XYZZY" not in message and "pa#ss" not in message and "pa%23ss" not in message
    assert isinstance(info.value, lm.ConnectionFailedError)
    assert "authSource" in message


def test_no_credentials_for_a_server_that_requires_them(
    mongo_uri: str, client: Any, Item: Any, items: None  # noqa: N803
) -> None:
    parsed = pymongo.uri_parser.parse_uri(mongo_uri)
    if not parsed["username"]:
        pytest.skip("the test server does not require authentication")
    host, port = parsed["nodelist"][0]
    try:
        lm.connect(f"mongodb://{host}:{port}/")  # ping needs no authentication
        with pytest.raises(lm.AuthenticationFailedError) as info:
            Item.filter().load_many()
    finally:
        lm.connect(client=client)
    assert "requires authentication" in str(info.value) and "no user" in str(info.value)


@pytest.mark.parametrize("name", ["my app", "a.b", "x" * 70], ids=["space", "dot", "long"])
def test_an_invalid_database_name_says_what_to_fix(name: str, client: Any) -> None:
    # A model's database is refused where it is declared ...
    with pytest.raises(lm.ModelDeclarationError, match="not a MongoDB database name"):
        declare_persist_db(db_name=name, collection_name="things")
    # ... a raw collection's when it is read, through the one error boundary.
    import polars as pl

    try:
        with pytest.raises(lm.PlanError) as info:
            lm.scan_collection(name, "things", schema={"n": pl.Int64}).collect()
    finally:
        if name == "x" * 70:
            client.drop_database(name[:63])
    message = str(info.value)
    assert "database name" in message and "Hint:" in message, message


def test_a_missing_tls_key_file_names_the_file(tmp_path: Any) -> None:
    missing = tmp_path / "client.pem"
    with pytest.raises(lm.ConnectionFailedError) as info:
        lm.connect(f"mongodb://127.0.0.1:1/?tls=true&tlsCertificateKeyFile={missing}")
    message = str(info.value)
    assert str(missing) in message and "tlsCertificateKeyFile" in message
    assert "cannot be read" in message and "Hint:" in message


@pytest.fixture
def frozen() -> Iterator[EmbeddedServer]:
    """A server that stops answering (SIGSTOP) once the test froze it."""
    server = EmbeddedServer.ephemeral()
    try:
        yield server
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.stop()


def _wait_stopped(pid: int) -> None:
    """Until the kernel reports process ``pid`` stopped (state T)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop")


def test_a_frozen_server_says_what_to_check(frozen: EmbeddedServer, client: Any) -> None:
    @declare_persist_db(db_name="loomtest_frozen", collection_name="things")
    class Thing(Persistable):
        n: int

    try:
        lm.connect(with_options(frozen.uri, socketTimeoutMS="1000",
                                serverSelectionTimeoutMS="2000"))
        Thing(n=1).persist()
        os.kill(frozen.pid, signal.SIGSTOP)
        _wait_stopped(frozen.pid)  # a signal is delivered asynchronously: a request sent
        start = time.monotonic()   # right after kill() could still be answered
        with pytest.raises(lm.ConnectionFailedError) as info:
            Thing.filter().load_many()
        assert time.monotonic() - start < 20
        message = str(info.value)  # the read timed out, or its retry found no answer
        assert "did not reply in time" in message or "did not answer" in message, message
        assert "frozen or overloaded" in message and "responsive" in message
        with pytest.raises(lm.ConnectionFailedError) as first:  # a new client: the ping
            lm.connect(frozen.uri, ping_timeout=1)
        assert "did not answer" in str(first.value) and "frozen" in str(first.value)
    finally:
        lm.connect(client=client)


def test_an_operation_cancelled_by_the_heartbeat_says_the_server_stopped_answering() -> None:
    # pymongo's monitor cancels a command whose server stopped answering (after ~30 s
    # with default settings: too long for this suite; the mapping is what matters)
    error = connection.driver_error(AutoReconnect("operation cancelled"), "reading db.items")
    assert isinstance(error, lm.ConnectionFailedError)
    assert "stopped answering" in str(error) and "frozen" in str(error)
    assert "timeoutMS" in str(error)


def test_a_dead_embedded_server_is_named_in_the_error() -> None:
    server = EmbeddedServer.ephemeral()
    saved = (connection._client, connection._client_uri, connection._embedded,
             connection._on_embedded)
    try:
        connection._client = pymongo.MongoClient(server.uri)
        connection._client_uri, connection._embedded = server.uri, server
        connection._on_embedded = True
        os.kill(server.pid, signal.SIGKILL)
        server.process.wait(10)  # type: ignore[union-attr]
        error = connection.driver_error(AutoReconnect("connection closed"), "reading db.x")
        assert f"pid {server.pid}" in str(error) and "started again at the next call" in str(error)
    finally:
        connection._client.close()  # type: ignore[union-attr]
        (connection._client, connection._client_uri, connection._embedded,
         connection._on_embedded) = saved
        server.stop()
