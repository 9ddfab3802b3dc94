"""A counting TCP proxy for benchmarks: documents and bytes MongoDB sends to a client.

Runs as its own process (so its CPU is never billed to the client being measured):
``python bench/wire_counter.py LISTEN_PORT TARGET_PORT COUNTS_FILE``. It forwards
bytes both ways and, for every OP_MSG reply, counts the documents in
``cursor.firstBatch`` / ``cursor.nextBatch`` and the reply's bytes, rewriting
``COUNTS_FILE`` with ``"<documents> <bytes>"`` after each reply. Works for any driver
(pymongo, pymongoarrow's raw batches, a Rust driver), which a pymongo command listener
cannot see.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
from pathlib import Path

import bson

OP_MSG = 2013


class Counts:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.docs = 0
        self.bytes = 0
        self.lock = threading.Lock()
        self.write()

    def add(self, docs: int, size: int) -> None:
        with self.lock:
            self.docs += docs
            self.bytes += size
            self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{self.docs} {self.bytes}")
        os.replace(tmp, self.path)


def read_counts(path: Path) -> tuple[int, int]:
    """(documents, bytes) sent so far, as the proxy last wrote them."""
    docs, size = path.read_text().split()
    return int(docs), int(size)


def _documents(message: bytes) -> int:
    opcode = struct.unpack_from("<i", message, 12)[0]
    if opcode != OP_MSG:
        return 0
    pos = 20  # header (16) + flagBits (4)
    total = 0
    while pos < len(message):
        kind = message[pos]
        pos += 1
        if kind == 0:
            size = struct.unpack_from("<i", message, pos)[0]
            body = bson.decode(message[pos : pos + size])
            cursor = body.get("cursor") if isinstance(body, dict) else None
            if isinstance(cursor, dict):
                total += len(cursor.get("firstBatch", cursor.get("nextBatch", [])))
            pos += size
        else:  # document sequence: size, identifier, documents
            size = struct.unpack_from("<i", message, pos)[0]
            pos += size
    return total


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError
        out += chunk
    return bytes(out)


def _pump(src: socket.socket, dst: socket.socket, counts: Counts | None) -> None:
    try:
        while True:
            header = _recv_exact(src, 16)
            length = struct.unpack_from("<i", header)[0]
            message = header + _recv_exact(src, length - 16)
            dst.sendall(message)
            if counts is not None:
                counts.add(_documents(message), len(message))
    except (ConnectionError, OSError):
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listen_port: int, target_port: int, counts_file: Path) -> None:
    counts = Counts(counts_file)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(64)
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection(("127.0.0.1", target_port))
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_pump, args=(client, upstream, None), daemon=True).start()
        threading.Thread(target=_pump, args=(upstream, client, counts), daemon=True).start()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
