"""Where the client comes from (connect(), MONGODB_URI, the embedded default), what its
errors may show (issue 12, case 7) and how long it waits (case 8)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest

import loom_frames as lm
from loom_frames import Persistable, connection, declare_persist_db
from loom_frames._uri import redact_uri, scrub

PY = sys.executable


def _run(code: str, env: dict[str, str], cwd: Path, timeout: float = 120
         ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    full_env.update(env)
    return subprocess.run(
        [PY, "-c", textwrap.dedent(code)], env=full_env, cwd=cwd, capture_output=True,
        text=True, timeout=timeout, check=False,
    )


def with_options(uri: str, **options: str) -> str:
    """``uri`` with more ``?key=value`` options."""
    extra = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{uri}{'&' if '?' in uri else '?'}{extra}"


@pytest.fixture
def restore_client(client: pymongo.MongoClient[Any]) -> Iterator[None]:
    """Put the session's client back as the library's after the test."""
    yield
    lm.connect(client=client)


def test_wrong_uri_fails_fast_naming_host_not_password() -> None:
    start = time.monotonic()
    with pytest.raises(lm.ConnectionFailedError) as info:
        connection._client_for("mongodb://bob:s3cret@127.0.0.1:1/?directConnection=true")
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert elapsed < 10
    assert "127.0.0.1:1" in message and "s3cret" not in message and "bob:***@" in message
    assert "connection refused" in message and "Hint:" in message
    assert isinstance(info.value, ConnectionError)


def test_redact_uri() -> None:
    assert connection.redact_uri("mongodb://u:p@h:1/db") == "mongodb://u:***@h:1/db"
    assert connection.redact_uri("mongodb://h:1/") == "mongodb://h:1/"


def test_import_does_no_work_and_uri_is_read_lazily(tmp_path: Path) -> None:
    result = _run(
        """
        import time, sys
        t = time.monotonic()
        import loom_frames, loom
        from loom_frames import connection
        assert connection._client is None and connection._embedded is None
        assert "loom_frames.embedded" not in sys.modules
        try:
            connection.get_client()
        except loom_frames.ConnectionFailedError as exc:
            print("FAILED", exc)
        """,
        {"MONGODB_URI": "mongodb://nobody:pw@127.0.0.1:1/?directConnection=true"},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "FAILED connecting to MongoDB at mongodb://nobody:***@127.0.0.1:1/" in result.stdout
    assert "pw@" not in result.stdout


def test_embedded_default_on_disk_announced_and_stopped(tmp_path: Path) -> None:
    code = """
        import loom_frames as lm
        from loom_frames import Persistable, declare_persist_db, connection

        @declare_persist_db(db_name="app", collection_name="things")
        class Thing(Persistable):
            n: int

        Thing(n=1).persist()
        print("COUNT", Thing.collection().count_documents({}))
        print("PORT", connection._embedded.port)
        print("REPR", repr(connection._embedded), repr(connection.get_client()))
        """
    data = tmp_path / "data"
    first = _run(code, {"LOOM_DATA_DIR": str(data)}, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "COUNT 1" in first.stdout
    assert first.stderr.count("started the embedded MongoDB server") == 1
    assert str(data) in first.stderr and "MONGODB_URI" in first.stderr
    password = __import__("json").loads((data / "loom-credentials.json").read_text())["password"]
    assert password not in first.stdout + first.stderr  # announcement, reprs
    port = int(first.stdout.split("PORT ")[1].split()[0])
    with pytest.raises(OSError):  # the child server was stopped with the process
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    second = _run(code, {"LOOM_DATA_DIR": str(data)}, tmp_path)
    assert "COUNT 2" in second.stdout, second.stderr  # the data lives on disk


def test_default_data_dir_is_dot_loom_in_cwd(tmp_path: Path) -> None:
    result = _run(
        "import loom_frames as lm; lm.get_client().admin.command('ping'); print('ok')",
        {},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".loom").is_dir()


def test_connect_with_client_and_uri_exclusive(client: object) -> None:
    with pytest.raises(TypeError):
        lm.connect("mongodb://x", client=client)  # type: ignore[arg-type]


# ------------------------------------------------------------------ 7. secrets
# (URI, the secrets it holds, what the message must still say)
AWKWARD_URIS = [
    ("mongodb://bob:pa#ss@127.0.0.1:1/", ["pa#ss", "#ss"], "127.0.0.1:1"),
    ("mongodb://bob:pa?ss@127.0.0.1:1/", ["pa?ss", "ss@"], "bob:***@127.0.0.1:1"),
    ("mongodb://bob:pa/ss@127.0.0.1:1/", ["pa/ss", "ss@"], "bob:***@127.0.0.1:1"),
    ("mongodb://bob:12/ss@127.0.0.1:1/", ["12/ss", "ss@", "bob:12"], "bob:***@127.0.0.1:1"),
    ("mongodb://bob:p@ss@127.0.0.1:1/", ["p@ss", "ss@"], "bob:***@127.0.0.1:1"),
    ("mongodb://bob:p@ss/w0rd@127.0.0.1:1/", ["w0rd", "ss/"], "bob:***@127.0.0.1:1"),
    ("mongodb://bob:pa:ss@127.0.0.1:1/", ["pa:ss", ":ss"], "bob:***@127.0.0.1:1"),
    ("mongodb://bob:s3cr%zzet@127.0.0.1:1/", ["s3cr"], "bob:***@127.0.0.1:1"),
    ("mongodb://bob:s3cret@127.0.0.1:1/?tlsCertificateKeyFilePassword=KEYPASS",
     ["s3cret", "KEYPASS"], "127.0.0.1:1"),
    (("mongodb://127.0.0.1:1/?authMechanism=MONGODB-AWS"
      "&authMechanismProperties=AWS_SESSION_TOKEN:SESSIONTOKEN"), ["SESSIONTOKEN"],
     "AWS_SESSION_TOKEN:***"),
    (("mongodb://bob:s3cret@127.0.0.1:1/?proxyHost=127.0.0.1&proxyPort=1"
      "&proxyUsername=PROXYUSER&proxyPassword=PROXYPASS"), ["s3cret", "PROXYUSER", "PROXYPASS"],
     "127.0.0.1:1"),
]


@pytest.mark.parametrize(("uri", "secrets", "shown"), AWKWARD_URIS,
                         ids=[f"uri{i}" for i in range(len(AWKWARD_URIS))])
def test_awkward_uris_never_show_their_secrets(
    uri: str, secrets: list[str], shown: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # pymongo's own logs too
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        with pytest.raises(lm.ConnectionFailedError) as info:
            connection._client_for(uri, ping_timeout=0.5)
    error = info.value
    texts = {
        "message": str(error),
        "repr": repr(error),
        "traceback": "".join(traceback.format_exception(error)),
        "logs": "\n".join(record.getMessage() for record in caplog.records),
        "warnings": "\n".join(str(w.message) for w in warned),
        "redact_uri": redact_uri(uri),
    }
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} in the {where}: {text}"
    assert shown in str(error) and "Hint:" in str(error)


def test_scrub_masks_every_form_of_a_secret() -> None:
    uri = "mongodb://bob:p%40ss%2Fword@h/?tlsCertificateKeyFilePassword=k%26ey"
    text = f"{uri} p%40ss%2Fword p@ss/word k%26ey k&ey"
    assert scrub(text, uri) == "mongodb://bob:***@h/?tlsCertificateKeyFilePassword=*** *** *** *** ***"


def test_the_embedded_uri_never_shows_its_password(mongo_uri: str, client: Any) -> None:
    assert "***" in redact_uri(mongo_uri) or "@" not in mongo_uri
    password = pymongo.uri_parser.parse_uri(mongo_uri)["password"]
    if password:
        assert password not in repr(lm.get_client()) and password not in redact_uri(mongo_uri)


# ------------------------------------------------------------------ 8. timeouts
@declare_persist_db(db_name="loomtest_retry", collection_name="things")
class Retried(Persistable):
    n: int


def test_a_transient_shutdown_error_is_retried_not_failed(
    mongo_uri: str, client: Any, restore_client: None
) -> None:
    """One ShutdownInProgress on a find: a default pymongo client waits for the server to
    be selectable again and retries (about 10 s here, its heartbeat); a 3 s selection
    timeout on every operation failed the call instead."""
    lm.connect(with_options(mongo_uri, appname="loom-retry"))
    Retried(n=1).persist()
    client.admin.command(
        "configureFailPoint", "failCommand", mode={"times": 1},
        data={"failCommands": ["find"], "errorCode": 91, "appName": "loom-retry"},
    )
    try:
        assert [r.n for r in Retried.filter().load_many()] == [1]
    finally:
        client.admin.command("configureFailPoint", "failCommand", mode="off")
        client.drop_database("loomtest_retry")


def test_first_contact_timeout_is_configurable() -> None:
    start = time.monotonic()
    with pytest.raises(lm.ConnectionFailedError, match="limit 0.5s"):
        lm.connect("mongodb://127.0.0.1:1/", ping_timeout=0.5)
    assert time.monotonic() - start < 5


def test_operations_use_the_uris_selection_timeout(
    mongo_uri: str, client: Any, restore_client: None
) -> None:
    library = lm.connect(with_options(mongo_uri, serverSelectionTimeoutMS="12345"))
    assert library.options.server_selection_timeout == 12.345
    default = lm.connect(mongo_uri)
    if "serverselectiontimeoutms" not in mongo_uri.lower():
        assert default.options.server_selection_timeout == 30  # the driver's own
