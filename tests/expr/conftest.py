"""Fixtures for the expression tests: a real MongoDB wire server, never a mock.

``MONGODB_URI`` set: tests use that (disposable) server. Otherwise one SecantusDB server
is started for the session as its own process (``secantusd-py --storage-path :memory:``)
and terminated at the end. Self-contained on purpose: the shared fixture in
tests/conftest.py may replace ``mongo_client`` / ``scratch_collection`` later.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
from pymongo.collection import Collection

from expr_harness import Differential


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _secantus_binary() -> str:
    beside = Path(sys.executable).with_name("secantusd-py")
    found = str(beside) if beside.exists() else shutil.which("secantusd-py")
    if not found:
        pytest.skip("secantusd-py is not installed and MONGODB_URI is not set")
    return found


def _client(uri: str) -> pymongo.MongoClient[dict[str, Any]]:
    return pymongo.MongoClient(uri, tz_aware=True, tzinfo=dt.UTC,
                               uuidRepresentation="standard", serverSelectionTimeoutMS=2000)


def _start_secantus() -> tuple[subprocess.Popen[bytes], str]:
    binary = _secantus_binary()
    last_error = ""
    for _ in range(3):  # a port picked free can be taken before the server binds it
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "--host", "127.0.0.1", "--port", str(port), "--storage-path", ":memory:"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        uri = f"mongodb://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with _client(uri) as probe:
                    probe.admin.command("ping")
                return proc, uri
            except pymongo.errors.PyMongoError:
                time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=10)
        last_error = err.decode(errors="replace")[-2000:]
    raise RuntimeError(f"secantusd-py did not start: {last_error}")


@pytest.fixture(scope="session")
def mongo_client() -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    """A pymongo client (tz-aware UTC datetimes, standard UUIDs) on a disposable server."""
    uri = os.environ.get("MONGODB_URI")
    proc = None
    if not uri:
        proc, uri = _start_secantus()
    client = _client(uri)
    try:
        yield client
    finally:
        client.close()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


@pytest.fixture
def scratch_collection(
    mongo_client: pymongo.MongoClient[dict[str, Any]],
) -> Iterator[Collection[dict[str, Any]]]:
    """A fresh, empty collection for one test, dropped afterwards."""
    collection = mongo_client["loom_expr_tests"][f"c_{uuid.uuid4().hex[:16]}"]
    yield collection
    collection.drop()


@pytest.fixture
def differential(scratch_collection: Collection[dict[str, Any]]) -> Differential:
    """Check that MongoDB and Polars select the same documents for an expression."""
    return Differential(scratch_collection)
