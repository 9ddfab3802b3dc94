"""Where the MongoDB client comes from.

In order of precedence:

1. :func:`connect` (``lm.connect("mongodb://...")`` or ``lm.connect(client=my_client)``);
2. the ``MONGODB_URI`` environment variable, read lazily at first use (never at import);
3. the embedded default: a SecantusDB server (the ``embedded`` extra) started as a child
   process on 127.0.0.1, on a free port, storing its data on disk under ``./.loom/``
   (``LOOM_DATA_DIR`` overrides), stopped when this Python process exits.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from decimal import Decimal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pymongo
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions, TypeCodec, TypeRegistry
from bson.decimal128 import Decimal128
from pymongo.errors import (
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)
from pymongo.errors import DuplicateKeyError as _DriverDuplicateKey

from .errors import (
    ConnectionFailedError,
    DuplicateKeyError,
    EmbeddedServerError,
    LoomError,
    PlanError,
    WriteOutcomeUnknownError,
    WriteRejectedError,
)

__all__ = [
    "CODEC_OPTIONS",
    "connect",
    "disconnect",
    "driver_error",
    "driver_errors",
    "get_client",
    "outcome_unknown",
    "redact_uri",
]

SERVER_SELECTION_TIMEOUT_MS = 3000
"""A wrong URI fails within seconds, not the driver's default 30."""


class _DecimalCodec(TypeCodec):
    python_type = Decimal
    bson_type = Decimal128

    def transform_python(self, value: Decimal) -> Decimal128:
        return Decimal128(value)

    def transform_bson(self, value: Decimal128) -> Decimal:
        return value.to_decimal()


CODEC_OPTIONS: CodecOptions[Any] = CodecOptions(
    tz_aware=True,
    tzinfo=_dt.UTC,
    uuid_representation=UuidRepresentation.STANDARD,
    type_registry=TypeRegistry([_DecimalCodec()]),
)
"""How every model collection reads and writes BSON: aware UTC datetimes, standard
UUIDs, ``decimal.Decimal`` stored as Decimal128 and read back as Decimal."""

_lock = threading.RLock()
_client: pymongo.MongoClient[Any] | None = None
_embedded: _EmbeddedServer | None = None


def connect(
    uri: str | None = None, *, client: pymongo.MongoClient[Any] | None = None
) -> pymongo.MongoClient[Any]:
    """Set the process-wide client, from a URI or an existing ``MongoClient``.

    With neither argument, ``MONGODB_URI`` is used, else the embedded server starts.
    The server is pinged once, so a wrong URI fails here within seconds, with an error
    that names the host (never the password).

    >>> import loom_frames as lm
    >>> lm.connect("mongodb://127.0.0.1:1/")  # doctest: +SKIP
    Traceback (most recent call last):
    ConnectionFailedError: could not reach MongoDB at mongodb://127.0.0.1:1/ ...
    """
    global _client
    if uri is not None and client is not None:
        raise TypeError("connect() takes a uri or a client, not both")
    with _lock:
        if client is None:
            client = _client_for(uri) if uri is not None else _default_client()
        else:
            _ping(client, "the given client")
        _client = client
        return client


def disconnect() -> None:
    """Forget the process-wide client (the embedded server, if any, keeps running)."""
    global _client
    with _lock:
        if _client is not None:
            _client.close()
        _client = None


def get_client() -> pymongo.MongoClient[Any]:
    """The process-wide client, connecting on first use."""
    client = _client
    if client is not None:
        return client
    with _lock:
        return _client if _client is not None else connect()


def redact_uri(uri: str) -> str:
    """The URI without its password: ``mongodb://bob:***@host/``."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _default_client() -> pymongo.MongoClient[Any]:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        return _client_for(uri)
    global _embedded
    if _embedded is None:
        data_dir = Path(os.environ.get("LOOM_DATA_DIR", ".loom")).resolve()
        _embedded = _EmbeddedServer.start(data_dir)
        print(
            f"loom-frames: started the embedded MongoDB server (SecantusDB) at "
            f"{_embedded.uri}, data in {data_dir}. Set MONGODB_URI to use your own server.",
            file=sys.stderr,
        )
    return _client_for(_embedded.uri)


def _client_for(uri: str) -> pymongo.MongoClient[Any]:
    try:
        client: pymongo.MongoClient[Any] = pymongo.MongoClient(
            uri,
            serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
            tz_aware=True,
            tzinfo=_dt.UTC,
            uuidRepresentation="standard",
        )
    except (PyMongoError, ValueError) as exc:
        raise ConnectionFailedError(
            f"invalid MongoDB URI {redact_uri(uri)}: {exc}. "
            "Hint: set MONGODB_URI to a mongodb:// or mongodb+srv:// URI."
        ) from exc
    _ping(client, redact_uri(uri))
    return client


def _ping(client: pymongo.MongoClient[Any], where: str) -> None:
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        client.close()
        reason = str(exc).split(", Timeout:")[0]
        raise ConnectionFailedError(
            f"could not reach MongoDB at {where} within "
            f"{SERVER_SELECTION_TIMEOUT_MS / 1000:g}s ({type(exc).__name__}: {reason}). "
            "Hint: check that the server runs and MONGODB_URI is right, or unset "
            "MONGODB_URI to use the embedded server."
        ) from exc


# ------------------------------------------------------------------ driver errors
def outcome_unknown(exc: BaseException) -> bool:
    """True when a failed WRITE may still have been applied.

    The connection broke after the command was sent (``AutoReconnect``, a network
    timeout), or the write was applied but its write concern failed. A
    ``ServerSelectionTimeoutError`` means nothing was sent: pymongo re-raises the first
    attempt's error when the retry cannot select a server, so a selection timeout is only
    ever the first attempt's.
    """
    if isinstance(exc, ServerSelectionTimeoutError):
        return False
    return isinstance(exc, (ConnectionFailure, WriteConcernError))


def driver_error(exc: PyMongoError, what: str, *, write: bool = False) -> LoomError:
    """The library's error for a driver error raised while doing ``what``.

    The ONE place driver errors are mapped; every read and write path goes through it
    (``raise driver_error(exc, ...) from exc``, or :func:`driver_errors`):

    * a write whose outcome is unknown -> :class:`WriteOutcomeUnknownError`;
    * a server that cannot be reached -> :class:`ConnectionFailedError`;
    * a duplicate key -> :class:`DuplicateKeyError`; another rejected write ->
      :class:`WriteRejectedError`; a rejected read -> :class:`PlanError`.

    ``what`` completes "... failed while <what>", e.g. ``"inserting a User"``.
    """
    reason = str(exc).split(", Timeout:")[0]
    if write and outcome_unknown(exc):
        return WriteOutcomeUnknownError(
            f"{what}: the connection to MongoDB was lost after the write was sent "
            f"({type(exc).__name__}: {reason}), so it may or may not have been applied. "
            "Hint: retrying is safe for inserts of the same object and for plain field "
            "changes; an object with counter increments must be reloaded first."
        )
    if isinstance(exc, ConnectionFailure):
        return ConnectionFailedError(
            f"{what}: MongoDB could not be reached ({type(exc).__name__}: {reason}); "
            "nothing was written. Hint: check that the server runs and is reachable, "
            "then retry."
        )
    if isinstance(exc, _DriverDuplicateKey):
        details = exc.details or {}
        key = details.get("keyValue")
        return DuplicateKeyError(
            f"{what}: a document with {key if key is not None else 'that key'} already "
            "exists (unique index). Hint: load the stored document and change it, or "
            "give a new key."
        )
    if write:
        return WriteRejectedError(
            f"{what}: MongoDB rejected the write ({_describe(exc)}); nothing was applied."
        )
    return PlanError(f"{what}: MongoDB rejected the command ({_describe(exc)}).")


def _describe(exc: PyMongoError) -> str:
    if isinstance(exc, OperationFailure):
        errmsg = (exc.details or {}).get("errmsg") or str(exc)
        return f"code {exc.code}: {errmsg}" if exc.code is not None else str(errmsg)
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def driver_errors(what: str, *, write: bool = False) -> Iterator[None]:
    """Map any driver error raised inside the block with :func:`driver_error`."""
    try:
        yield
    except PyMongoError as exc:
        raise driver_error(exc, what, write=write) from exc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _EmbeddedServer:
    """A ``secantusd-py`` child process on 127.0.0.1, stopped at interpreter exit."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.uri = f"mongodb://127.0.0.1:{port}/"

    @classmethod
    def start(
        cls, storage: Path | str, *, extra_args: tuple[str, ...] = (), timeout: float = 60.0
    ) -> _EmbeddedServer:
        exe = shutil.which("secantusd-py") or str(Path(sys.executable).with_name("secantusd-py"))
        if not Path(exe).exists():
            raise EmbeddedServerError(
                "no MONGODB_URI is set and the embedded server is not installed. "
                "Hint: pip install 'loom-frames[embedded]', or set MONGODB_URI to your "
                "MongoDB server (e.g. export MONGODB_URI=mongodb://localhost:27017)."
            )
        if str(storage) != ":memory:":
            Path(storage).mkdir(parents=True, exist_ok=True)
            log = Path(storage) / "secantusd.log"
        else:
            log = Path(os.devnull)
        port = free_port()
        args = [exe, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(storage)]
        args += ["--log-level", "WARNING", *extra_args]
        with open(log, "ab") as out:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # only prctl() runs between fork and exec: no lock a thread may hold
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
            )
        server = cls(process, port, log)
        atexit.register(server.stop)
        server._wait_ready(timeout)
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedServerError(
                    f"the embedded server exited with code {self.process.returncode}; "
                    f"see {self.log}. Hint: set MONGODB_URI to use another server."
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EmbeddedServerError(f"the embedded server did not start within {timeout:g}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _die_with_parent() -> None:
    """Linux: have the kernel stop the server if this process dies without atexit."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
