"""Where the client comes from: connect(), MONGODB_URI, the embedded default."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import loom_frames as lm
from loom_frames import connection

PY = sys.executable


def _run(code: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    full_env.update(env)
    return subprocess.run(
        [PY, "-c", textwrap.dedent(code)], env=full_env, cwd=cwd, capture_output=True,
        text=True, timeout=timeout,
    )


def test_wrong_uri_fails_fast_naming_host_not_password() -> None:
    start = time.monotonic()
    with pytest.raises(lm.ConnectionFailedError) as info:
        connection._client_for("mongodb://bob:s3cret@127.0.0.1:1/?directConnection=true")
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert elapsed < 10
    assert "127.0.0.1:1" in message and "s3cret" not in message and "bob:***@" in message
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
        try:
            connection.get_client()
        except loom_frames.ConnectionFailedError as exc:
            print("FAILED", exc)
        """,
        {"MONGODB_URI": "mongodb://nobody:pw@127.0.0.1:1/?directConnection=true"},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "FAILED could not reach MongoDB at mongodb://nobody:***@127.0.0.1:1/" in result.stdout
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
        """
    data = tmp_path / "data"
    first = _run(code, {"LOOM_DATA_DIR": str(data)}, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "COUNT 1" in first.stdout
    assert first.stderr.count("started the embedded MongoDB server") == 1
    assert str(data) in first.stderr and "MONGODB_URI" in first.stderr
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


def test_missing_embedded_extra_says_how_to_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(connection.shutil, "which", lambda name: None)
    monkeypatch.setattr(connection.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(lm.EmbeddedServerError) as info:
        connection._EmbeddedServer.start(tmp_path)
    message = str(info.value)
    assert "pip install 'loom-frames[embedded]'" in message and "MONGODB_URI" in message


def test_connect_with_client_and_uri_exclusive(client: object) -> None:
    with pytest.raises(TypeError):
        lm.connect("mongodb://x", client=client)  # type: ignore[arg-type]
