"""Where the MongoDB client comes from, and the ONE place driver errors are mapped.

In order of precedence:

1. :func:`connect` (``lm.connect("mongodb://...")`` or ``lm.connect(client=my_client)``);
2. the ``MONGODB_URI`` environment variable, read lazily at first use (never at import);
3. the embedded default: a SecantusDB server of this folder (``./.loom``;
   ``LOOM_DATA_DIR`` moves it), shared by the processes using the folder, private to
   its user (see :mod:`loom_frames.embedded`).

The first contact is one ``ping`` limited to ``ping_timeout`` seconds (3 by default):
a wrong URI fails fast, with a message naming the host, never a password. Operations
then have the driver's own server selection (30 s unless the URI sets
``serverSelectionTimeoutMS``) and retries, so a transient error is retried instead of
failing the call.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import sys
import threading
import weakref
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymongo
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions, TypeCodec, TypeRegistry
from bson.decimal128 import Decimal128
from pymongo.errors import (
    ConnectionFailure,
    InvalidName,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)
from pymongo.errors import DuplicateKeyError as _DriverDuplicateKey

from ._uri import option, redact_uri, scrub, split_uri
from .errors import (
    AuthenticationFailedError,
    ConnectionFailedError,
    DuplicateKeyError,
    LoomError,
    PlanError,
    WriteOutcomeUnknownError,
    WriteRejectedError,
)

if TYPE_CHECKING:
    from .embedded import EmbeddedServer

__all__ = [
    "CODEC_OPTIONS",
    "PING_TIMEOUT_S",
    "connect",
    "disconnect",
    "driver_error",
    "driver_errors",
    "get_client",
    "outcome_unknown",
    "redact_uri",
    "session_uri",
    "use_uri",
]

_CONFIGURED = re.compile(r" \(configured timeouts: [^)]*\)")  # pymongo's suffix
PING_TIMEOUT_S = 3.0
"""How long the first ``ping`` of a new client may take: a wrong URI fails within
seconds. Operations keep the driver's server selection (and its retries)."""


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
_client_uri: str | None = None  # what _client was made from: to scrub messages
_embedded: EmbeddedServer | None = None
_on_embedded = False  # _client talks to _embedded


def connect(
    uri: str | None = None, *, client: pymongo.MongoClient[Any] | None = None,
    ping_timeout: float = PING_TIMEOUT_S,
) -> pymongo.MongoClient[Any]:
    """Set the process-wide client, from a URI or an existing ``MongoClient``.

    With neither argument, ``MONGODB_URI`` is used, else the embedded server. The server
    is pinged once, within ``ping_timeout`` seconds, so a wrong URI fails here with a
    :class:`~loom_frames.errors.ConnectionFailedError` naming the host (never the
    password); refused credentials raise
    :class:`~loom_frames.errors.AuthenticationFailedError` naming the user. Later
    operations use the driver's server selection and retries (set
    ``serverSelectionTimeoutMS`` or ``timeoutMS`` in the URI to change them).

    >>> import loom_frames as lm
    >>> lm.connect("mongodb://127.0.0.1:1/")  # doctest: +SKIP
    Traceback (most recent call last):
    ConnectionFailedError: connecting to MongoDB at mongodb://127.0.0.1:1/ (first ping, ...
    """
    global _client, _client_uri, _on_embedded
    if uri is not None and client is not None:
        raise TypeError("connect() takes a uri or a client, not both")
    with _lock:
        embedded = False
        if client is not None:
            _ping(client, "the given client", None, ping_timeout)
            uri = _made_from.get(id(client))
        elif uri is not None:
            client = _client_for(uri, ping_timeout)
        elif os.environ.get("MONGODB_URI"):
            uri = os.environ["MONGODB_URI"]
            client = _client_for(uri, ping_timeout)
        else:
            uri, embedded = _embedded_uri(), True
            client = _client_for(uri, ping_timeout)
        _client, _client_uri, _on_embedded = client, uri, embedded
        return client


def disconnect() -> None:
    """Forget the process-wide client (the embedded server keeps running until exit)."""
    global _client, _client_uri, _on_embedded
    with _lock:
        if _client is not None:
            _close(_client, PING_TIMEOUT_S)
        _client, _client_uri, _on_embedded = None, None, False


def _close(client: pymongo.MongoClient[Any], timeout: float) -> None:
    """Close ``client``; its ``endSessions`` may wait ``timeout`` s for a gone server
    (not the 30 s of server selection)."""
    with contextlib.suppress(PyMongoError), pymongo.timeout(timeout):
        client.close()


def get_client() -> pymongo.MongoClient[Any]:
    """The process-wide client, connecting on first use.

    When the client is the embedded server's and that server has stopped (killed, or
    crashed), it is started again (or the one another process restarted is attached)."""
    client = _client
    if client is not None and (not _on_embedded or _embedded is None or _embedded.alive()):
        return client
    with _lock:
        if _client is not None and _on_embedded and _embedded is not None \
                and not _embedded.alive():
            _restart_note(_embedded)
            _close(_client, 0.1)  # its server is gone
            disconnect()
        return _client if _client is not None else connect()


def session_uri() -> str | None:
    """The URI of the process-wide client (credentials included), or None when it was
    given as a client object: what another process needs to reach the same server
    (Dask workers; see :func:`use_uri`)."""
    get_client()
    return _client_uri


def use_uri(uri: str) -> pymongo.MongoClient[Any]:
    """Make ``uri`` this process's server (a worker running a partition): the current
    client when it already is, else :func:`connect`."""
    with _lock:
        if _client is not None and _client_uri == uri:
            return _client
        return connect(uri)


def _embedded_uri() -> str:
    """The URI of this folder's embedded server, started or attached to."""
    global _embedded
    from .embedded import EmbeddedServer

    if _embedded is not None and _embedded.alive():
        return _embedded.uri
    if _embedded is not None:
        _embedded.stop()
    data_dir = Path(os.environ.get("LOOM_DATA_DIR") or ".loom").absolute()
    _embedded = EmbeddedServer.open(data_dir)
    verb = "started" if _embedded.started else "attached to"
    print(
        f"loom-frames: {verb} the embedded MongoDB server (SecantusDB, pid {_embedded.pid}) "
        f"at {_embedded.address}, data in {data_dir} (private: mode 0700, authentication "
        "on). Set MONGODB_URI to use your own server.",
        file=sys.stderr,
    )
    return _embedded.uri


def _restart_note(server: EmbeddedServer) -> None:
    print(f"loom-frames: {server.describe()} has stopped (see {server.log}); starting it "
          "again.", file=sys.stderr)


def _client_for(uri: str, ping_timeout: float = PING_TIMEOUT_S) -> pymongo.MongoClient[Any]:
    """A client for ``uri``, pinged once; every failure is the library's own error."""
    if not isinstance(uri, str):
        raise TypeError(f"a MongoDB URI must be a str, got {type(uri).__name__}")
    if not split_uri(uri).well_formed:  # pymongo might even accept it: "bob:12/ss@host"
        try:  # ... and look up part of the password as a host name: never try it
            pymongo.MongoClient(uri, connect=False).close()
        except (PyMongoError, ValueError, OSError) as exc:
            raise _invalid_uri(uri, exc) from exc
        raise _invalid_uri(uri, ValueError(
            "the user name or password holds an unescaped '/', '?' or '@' (read as it is, "
            "part of it would be taken for a host or a database name)"))
    try:
        client: pymongo.MongoClient[Any] = pymongo.MongoClient(
            uri, tz_aware=True, tzinfo=_dt.UTC, uuidRepresentation="standard",
        )
    except (PyMongoError, ValueError, OSError) as exc:
        raise _invalid_uri(uri, exc) from exc
    _ping(client, redact_uri(uri), uri, ping_timeout)
    _made_from[id(client)] = uri
    weakref.finalize(client, _made_from.pop, id(client), None)
    return client


# The URI each client this module made was made from, by identity (clients to the same
# host compare equal): connect(client=...) with one of them keeps the URI that other
# processes (Dask workers) connect with.
_made_from: dict[int, str] = {}


_TLS_FILES = (
    ("tlsCertificateKeyFile", "TLS certificate key file",
     "the client certificate and its private key"),
    ("tlsCAFile", "TLS CA file", "the certificates of the authorities to trust"),
    ("tlsCRLFile", "TLS CRL file", "the certificate revocation list"),
)


def _invalid_uri(uri: str, exc: BaseException) -> ConnectionFailedError:
    """The error of a URI that cannot be used (the driver's reason, scrubbed)."""
    where = redact_uri(uri)
    if isinstance(exc, OSError):  # TLS files: pymongo reads them when the client is made
        lowered = str(exc).lower()
        for name, what, holds in _TLS_FILES:
            if name.lower() in lowered:
                path = option(uri, name) or "?"
                reason = exc.strerror or type(exc).__name__
                return ConnectionFailedError(
                    f"the {what} {path} ({name} in {where}) cannot be read: {reason}. "
                    f"Hint: check the path, and that this user may read it (a PEM file "
                    f"holding {holds})."
                )
    reason = scrub(str(exc), uri)
    hint = "Hint: a URI looks like mongodb://user:password@host:27017/?authSource=admin."
    if not split_uri(uri).well_formed:
        hint = ("Hint: percent-encode reserved characters (: / ? # [ ] @ %) in the user "
                "name and password, e.g. with urllib.parse.quote_plus.")
    return ConnectionFailedError(f"invalid MongoDB URI {where}: {reason}. {hint}")


def _ping(
    client: pymongo.MongoClient[Any], where: str, uri: str | None, timeout: float,
) -> None:
    """One ``ping`` within ``timeout`` s; a client made here (``uri`` given) is closed
    when it fails, the caller's own client never."""
    try:
        with pymongo.timeout(timeout):
            client.admin.command("ping")
    except PyMongoError as exc:
        if uri is not None:
            _close(client, 1.0)
        what = f"connecting to MongoDB at {where} (first ping, limit {timeout:g}s)"
        error = driver_error(exc, what, client=client, uri=uri)
        raise error from exc


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


def driver_error(
    exc: PyMongoError, what: str, *, write: bool = False,
    client: pymongo.MongoClient[Any] | None = None, uri: str | None = None,
) -> LoomError:
    """The library's error for a driver error raised while doing ``what``.

    The ONE place driver errors are mapped; every read and write path goes through it
    (``raise driver_error(exc, ...) from exc``, or :func:`driver_errors`):

    * a write whose outcome is unknown -> :class:`WriteOutcomeUnknownError`;
    * refused credentials -> :class:`AuthenticationFailedError` (names user and database);
    * a server that cannot be reached, or a lost connection -> :class:`ConnectionFailedError`
      saying what happened (refused, no answer, frozen, TLS, name resolution) and what
      to check;
    * a duplicate key -> :class:`DuplicateKeyError`; another rejected write ->
      :class:`WriteRejectedError`; a rejected read -> :class:`PlanError`.

    ``what`` completes "... failed while <what>", e.g. ``"inserting a User"``. Messages
    never hold a password: the client's URI secrets are scrubbed from the driver's text.
    """
    client = client if client is not None else _client
    uri = uri if uri is not None else (_client_uri if client is _client else None)
    reason = scrub(_CONFIGURED.sub("", str(exc).split(", Timeout:")[0]), uri)
    if write and outcome_unknown(exc):
        return WriteOutcomeUnknownError(
            f"{what}: the connection to MongoDB was lost after the write was sent "
            f"({type(exc).__name__}: {reason}), so it may or may not have been applied. "
            "Hint: retrying is safe for inserts of the same object and for plain field "
            "changes; an object with counter increments must be reloaded first."
        )
    nothing = f"nothing was {'written' if write else 'read'}"
    if _is_auth_failure(exc):
        return AuthenticationFailedError(
            f"{what}: MongoDB refused the credentials of {_who(client, uri)} "
            f"({_describe(exc, uri)}); {nothing}. Hint: check the user name and password "
            "(percent-encode special characters in the URI) and authSource, the database "
            "where the user was created."
        )
    if isinstance(exc, OperationFailure) and exc.code == 13 and _credentials(client) is None:
        return AuthenticationFailedError(
            f"{what}: the server requires authentication and this client gives no user "
            f"({_describe(exc, uri)}); {nothing}. Hint: put user:password@ before the host "
            "in the URI (and authSource= if the user was created in another database)."
        )
    if isinstance(exc, ConnectionFailure):
        cause, check = _connection_problem(exc, reason, client)
        done = "; nothing was written" if write else ""
        return ConnectionFailedError(
            f"{what}: {cause}{done}.{_embedded_note(client)} Hint: {check}."
        )
    if isinstance(exc, _DriverDuplicateKey):
        details = exc.details or {}
        key = details.get("keyValue")
        return DuplicateKeyError(
            f"{what}: a document with {key if key is not None else 'that key'} already "
            "exists (unique index). Hint: load the stored document and change it, or "
            "give a new key."
        )
    hint = _rejection_hint(exc, client, uri)
    if isinstance(exc, InvalidName):  # refused by the driver, before anything was sent
        problem = f"{what}: invalid name ({exc})"
        if write:
            return WriteRejectedError(f"{problem}; nothing was applied.{hint}")
        return PlanError(f"{problem}.{hint}")
    if write:
        return WriteRejectedError(
            f"{what}: MongoDB rejected the write ({_describe(exc, uri)}); nothing was "
            f"applied.{hint}"
        )
    hint = hint or (" Hint: check the filter / pipeline (a query's explain() shows the "
                    "exact command).")
    return PlanError(f"{what}: MongoDB rejected the command ({_describe(exc, uri)}).{hint}")


@contextlib.contextmanager
def driver_errors(what: str, *, write: bool = False) -> Iterator[None]:
    """Map any driver error raised inside the block with :func:`driver_error`."""
    try:
        yield
    except PyMongoError as exc:
        raise driver_error(exc, what, write=write) from exc


def _describe(exc: PyMongoError, uri: str | None = None) -> str:
    if isinstance(exc, OperationFailure):
        errmsg = (exc.details or {}).get("errmsg") or str(exc)
        text = f"code {exc.code}: {errmsg}" if exc.code is not None else str(errmsg)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return scrub(text, uri)


def _is_auth_failure(exc: PyMongoError) -> bool:
    # 18 AuthenticationFailed; 334 MechanismUnavailable (the server lacks the mechanism)
    return isinstance(exc, OperationFailure) and exc.code in (18, 334)


def _credentials(client: pymongo.MongoClient[Any] | None) -> Any:
    """The client's ``MongoCredential`` (user, source, mechanism), or None."""
    if client is None:
        return None
    with contextlib.suppress(Exception):
        return client.options.pool_options._credentials
    return None


def _who(client: pymongo.MongoClient[Any] | None, uri: str | None) -> str:
    """``"user 'bob' (authentication database 'admin', SCRAM-SHA-256)"`` or a fallback."""
    credentials = _credentials(client)
    if credentials is not None:
        mechanism = getattr(credentials, "mechanism", "DEFAULT")
        mechanism = "SCRAM, negotiated" if mechanism == "DEFAULT" else mechanism
        return (f"user {credentials.username!r} (authentication database "
                f"{credentials.source!r}, {mechanism})")
    user = split_uri(uri).user if uri else None
    if user:
        source = option(uri or "", "authSource") or "admin"
        return f"user {user!r} (authentication database {source!r})"
    return "this client (no user name given)"


def _hosts(client: pymongo.MongoClient[Any] | None) -> str:
    if client is None:
        return "the server"
    with contextlib.suppress(Exception):
        seeds = sorted(client.topology_description.server_descriptions())
        if seeds:
            return ", ".join(f"{host}:{port}" for host, port in seeds)
    return "the server"


_RUNNING = "check that the server runs, and that the host and port are right"
_RESPONSIVE = "check that the server process is running and responsive"
_PROBLEMS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    # (words of the driver's text, what happened, what to check)
    (("refused",), "nothing is listening at {hosts} (connection refused)", _RUNNING),
    (("name or service not known", "nodename nor servname", "getaddrinfo failed",
      "name resolution", "no address"),
     "the host name of {hosts} does not resolve ({reason})",
     "check the host name in the URI (and DNS / the network)"),
    (("ssl", "certificate", "tls", "handshake"),
     "the TLS handshake with {hosts} failed ({reason})",
     ("check tls=, tlsCAFile= and tlsCertificateKeyFile= in the URI, and that the server "
      "speaks TLS")),
    (("operation cancelled",),
     ("{hosts} stopped answering while the command ran: its heartbeat failed (the server "
      "is frozen, overloaded or no longer reachable)"),
     f"{_RESPONSIVE}; timeoutMS=... in the URI bounds how long any operation may wait"),
)


def _connection_problem(
    exc: ConnectionFailure, reason: str, client: pymongo.MongoClient[Any] | None,
) -> tuple[str, str]:
    """(what happened, what to check) for a connection failure."""
    hosts = _hosts(client)
    text = reason.lower()
    if isinstance(exc, NotPrimaryError):
        return (f"{hosts} is shutting down or is not the primary ({reason})",
                "wait for the server (or the replica set's new primary), then retry")
    for words, cause, check in _PROBLEMS:
        if any(word in text for word in words):
            return cause.format(hosts=hosts, reason=reason), check
    if isinstance(exc, ServerSelectionTimeoutError) and ("replica set" in text
                                                         or "replicaset" in text):
        cause = f"no server of {hosts} matches the replica set or read preference ({reason})"
        check = ("check replicaSet= and readPreference= in the URI, or add "
                 "directConnection=true to talk to one server")
    elif isinstance(exc, ServerSelectionTimeoutError):
        cause = (f"{hosts} did not answer (the server is frozen or overloaded, a firewall "
                 "drops the connection, or it is not a MongoDB server)")
        check = f"{_RESPONSIVE}, and the address"
    elif isinstance(exc, NetworkTimeout) or "timed out" in text:
        cause = f"{hosts} did not reply in time ({reason}): the server is frozen or overloaded"
        check = f"{_RESPONSIVE}, or raise socketTimeoutMS / timeoutMS in the URI for long reads"
    else:
        cause = f"the connection to {hosts} was lost ({type(exc).__name__}: {reason})"
        check = ("the server restarted, crashed or closed the connection; check its log, "
                 "then retry")
    return cause, check


def _embedded_note(client: pymongo.MongoClient[Any] | None) -> str:
    server = _embedded
    if server is None or not _on_embedded or client is not _client or server.alive():
        return ""
    return (f" {server.describe()[0].upper()}{server.describe()[1:]} has stopped (see "
            f"{server.log}); it is started again at the next call.")


def _rejection_hint(
    exc: PyMongoError, client: pymongo.MongoClient[Any] | None, uri: str | None,
) -> str:
    if isinstance(exc, InvalidName) or (isinstance(exc, OperationFailure)
                                        and exc.code in (73, 13297)):
        return (" Hint: database names may not hold / \\ . \" $ spaces or NUL, have at most "
                "63 bytes and must not differ from an existing one only by case; "
                "collection names may not be empty, start with 'system.' or hold $ or NUL. "
                "Fix db_name= / collection_name= in @declare_persist_db.")
    if isinstance(exc, OperationFailure) and exc.code == 13:
        return (f" Hint: {_who(client, uri)} lacks a role allowing this (e.g. readWrite on "
                "the database); without a user in the URI, the server requires one.")
    if isinstance(exc, OperationFailure) and exc.code == 50:
        return " Hint: the operation exceeded its time limit (maxTimeMS / timeoutMS)."
    if isinstance(exc, OperationFailure) and exc.code == 43:
        return (" Hint: the server discarded the cursor (idle too long between batches); "
                "read the result in fewer, larger batches or faster.")
    return ""
