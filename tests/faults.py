"""Fault injection for the write-path tests: a TCP proxy that loses replies.

``failCommand`` fail points fail a command *before* the server runs it. What a write
path must survive is the opposite: the server applied the write and the reply never
arrived (a crash, a failover, a cut cable). :class:`ReplyDroppingProxy` sits between
pymongo and the server, forwards every request, and for the commands it is told to
drop, waits for the server's reply (so the write is applied), throws the reply away and
closes the client's connection. pymongo sees exactly what it sees in production: a
connection closed after the request was sent (``AutoReconnect``), and retries once.

>>> proxy = ReplyDroppingProxy("127.0.0.1", 27017)  # doctest: +SKIP
>>> proxy.drop("insert", times=2)  # the first attempt and pymongo's retry  # doctest: +SKIP
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import bson

_OP_MSG = 2013
_OP_QUERY = 2004


def _read_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_message(sock: socket.socket) -> tuple[bytes, int, int, int]:
    """One wire message: (bytes, requestID, responseTo, opCode)."""
    header = _read_exact(sock, 16)
    length, request_id, response_to, op_code = struct.unpack("<iiii", header)
    return header + _read_exact(sock, length - 16), request_id, response_to, op_code


def command_name(message: bytes) -> str | None:
    """The command an OP_MSG (or legacy OP_QUERY) request runs: its body's first key."""
    op_code = struct.unpack_from("<i", message, 12)[0]
    if op_code == _OP_MSG:
        pos = 20  # header + flagBits
        while pos < len(message):
            kind = message[pos]
            pos += 1
            size = struct.unpack_from("<i", message, pos)[0]
            if kind == 0:
                body = bson.decode(message[pos : pos + size])
                return next(iter(body), None)
            pos += size
        return None
    if op_code == _OP_QUERY:
        pos = 20
        pos = message.index(b"\x00", pos) + 1 + 8  # collection name, skip, limit
        size = struct.unpack_from("<i", message, pos)[0]
        body = bson.decode(message[pos : pos + size])
        return next(iter(body), None)
    return None


class ReplyDroppingProxy:
    """Forward MongoDB wire traffic; lose the replies of chosen commands after the server
    applied them.

    ``uri`` is a ``directConnection`` URI through the proxy (a replica-set URI would let
    pymongo discover the real port and bypass it). ``upstream`` may be changed while the
    proxy runs (a restarted server on another port). ``hook`` (optional) is called with
    the command name after the server replied and before the reply is dropped, e.g. to
    kill the server at exactly that moment.
    """

    def __init__(self, host: str, port: int, *, uri_template: str | None = None) -> None:
        self.upstream = (host, port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._drops: dict[str, int] = {}
        self._before: dict[str, list[Callable[[], None]]] = {}
        self.dropped: list[str] = []
        self.seen: list[str] = []
        self.hook: Callable[[str], None] | None = None
        self._sockets: set[socket.socket] = set()
        self._closed = False
        self._uri_template = uri_template
        threading.Thread(target=self._accept, daemon=True).start()

    @classmethod
    def for_uri(cls, uri: str) -> ReplyDroppingProxy:
        """A proxy in front of the server of ``uri`` (credentials and options kept)."""
        parts = urlsplit(uri)
        host = parts.hostname or "127.0.0.1"
        return cls(host, parts.port or 27017, uri_template=uri)

    @property
    def uri(self) -> str:
        if self._uri_template is None:
            return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"
        parts = urlsplit(self._uri_template)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{self.port}"
        query = "&".join(
            q for q in parts.query.split("&") if q and not q.startswith("directConnection")
        )
        query = (query + "&" if query else "") + "directConnection=true"
        return urlunsplit(parts._replace(netloc=netloc, query=query, path=parts.path or "/"))

    def drop(self, command: str, *, times: int = 1) -> None:
        """Lose the next ``times`` replies to ``command`` (after the server applied it)."""
        with self._lock:
            self._drops[command] = self._drops.get(command, 0) + times

    def before_reply(self, command: str, action: Callable[[], None]) -> None:
        """Run ``action`` once, when the next reply to ``command`` arrives (the server
        has answered; the client has not yet seen it): e.g. a second client's write
        landing between a read and the write that depends on it."""
        with self._lock:
            self._before.setdefault(command, []).append(action)

    def pending_drops(self, command: str) -> int:
        with self._lock:
            return self._drops.get(command, 0)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for sock in list(self._sockets):
            _close(sock)

    def __enter__(self) -> ReplyDroppingProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            _close(client)
            return
        server.settimeout(None)
        self._sockets.update((client, server))
        names: dict[int, str] = {}  # requestID -> command, for the replies' responseTo
        threading.Thread(target=self._requests, args=(client, server, names), daemon=True).start()
        try:
            while True:
                reply, _, response_to, _ = _read_message(server)
                with self._lock:
                    name = names.pop(response_to, None)
                    actions = self._before.get(name or "", [])
                    action = actions.pop(0) if actions else None
                    drop = name is not None and self._drops.get(name, 0) > 0
                    if drop and name is not None:
                        self._drops[name] -= 1
                        self.dropped.append(name)
                if action is not None:
                    action()
                if drop and name is not None:
                    if self.hook is not None:
                        self.hook(name)
                    return  # the write was applied; its reply is lost with the connection
                client.sendall(reply)
        except (OSError, ConnectionError, ValueError, struct.error):
            return
        finally:
            self._hang_up(client, server)

    def _requests(self, client: socket.socket, server: socket.socket,
                  names: dict[int, str]) -> None:
        try:
            while True:
                request, request_id, _, _ = _read_message(client)
                name = command_name(request) or "?"
                with self._lock:
                    names[request_id] = name
                    self.seen.append(name)
                server.sendall(request)
        except (OSError, ConnectionError, ValueError, struct.error):
            return
        finally:
            self._hang_up(client, server)

    def _hang_up(self, client: socket.socket, server: socket.socket) -> None:
        for sock in (client, server):
            _close(sock)
            self._sockets.discard(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
