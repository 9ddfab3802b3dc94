"""The embedded server's own process: ``python -P _serve_embedded.py RUNTIME STORAGE``.

Started by :mod:`loom_frames.embedded`, run by path (``-P``: neither this folder nor the
working directory is put on ``sys.path``), importing only the standard library and
SecantusDB: never the ``loom_frames`` package.

* **Explicit configuration only.** ``secantus.server.SecantusDBServer`` is built with
  every setting spelled out here; SecantusDB's launcher (which reads ``./secantusd.toml``,
  ``~/.secantus/secantusd.toml`` and ``/etc/secantus/secantusd.toml``) is never run.
* **Private.** umask 077 (the data and log files are 0600), authentication required,
  the one user's SCRAM credentials written into the user table before the port opens
  (so there is no moment without authentication); the password comes from
  ``RUNTIME/loom-credentials.json`` (0600), never from the command line.
* **No port race.** The server binds port 0 itself and reports the port it got (a line
  ``READY <port>`` on stdout, and the port file ``RUNTIME/loom-server.json``).
* **Lifetime.** It holds ``loom-server.lock`` exclusively while it runs (how others tell
  it is alive), and stops when no process holds ``loom-users.lock`` any more (each user
  process holds it shared, from attach to exit: the kernel releases it when a user dies,
  even by ``kill -9``), or on SIGTERM.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

USER_DB = "admin"
POLL_S = 0.2
EXIT_BUSY = 3  # another server holds this directory


def main(argv: list[str]) -> int:
    """Serve until the last user is gone; the exit code says why it stopped early."""
    os.umask(0o077)
    runtime, storage = Path(argv[0]), argv[1]
    test_commands = "--test-commands" in argv[2:]
    server_lock = os.open(runtime / "loom-server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(server_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another embedded server already runs for this directory", file=sys.stderr)
        return EXIT_BUSY
    credentials = json.loads((runtime / "loom-credentials.json").read_text())
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from secantus.server import SecantusDBServer

    server = SecantusDBServer(
        host="127.0.0.1",
        port=0,
        storage_path=storage,
        replica_set_name="secantus",
        require_auth=True,
        enable_test_commands=test_commands,
        noop_heartbeat_seconds=0.0,
        durable=None if storage == ":memory:" else True,
    )
    server.storage.add_user(USER_DB, credentials["user"],
                            _user_record(credentials["user"], credentials["password"]),
                            replace=True)
    del credentials
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    _write_port_file(runtime, server.port)
    try:
        print(f"READY {server.port}", flush=True)
    except BrokenPipeError:  # the starter died meanwhile: the users lock decides below
        pass
    os.dup2(2, 1)  # the pipe to the starter closes; later output goes to the log
    users = os.open(runtime / "loom-users.lock", os.O_RDWR | os.O_CREAT, 0o600)
    while not stop.wait(POLL_S):
        try:  # held exclusively until exit: nobody attaches while this server stops
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            continue
    _remove_port_file(runtime)
    _stop(server)
    return 0


def _stop(server: Any) -> None:
    """``server.stop()``, without its 2 s wait for the accept thread: closing a listening
    socket does not wake a blocked ``accept()`` on Linux, a connection does."""
    port = server.port
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    while stopper.is_alive():
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        stopper.join(0.05)


def _user_record(user: str, password: str) -> dict[str, Any]:
    """The user table entry ``createUser`` would write: SCRAM-SHA-256, role root."""
    from secantus.auth import SCRAM_SHA_256, derive_credentials

    return {
        "_id": f"{USER_DB}.{user}",
        "user": user,
        "db": USER_DB,
        "credentials": derive_credentials(password, mechanism=SCRAM_SHA_256).to_doc(),
        "roles": [{"role": "root", "db": USER_DB}],
        "mechanisms": [SCRAM_SHA_256],
    }


def _write_port_file(runtime: Path, port: int) -> None:
    tmp = runtime / f"loom-server.json.{os.getpid()}"
    tmp.write_text(json.dumps({"pid": os.getpid(), "port": port, "host": "127.0.0.1"}))
    os.replace(tmp, runtime / "loom-server.json")


def _remove_port_file(runtime: Path) -> None:
    path = runtime / "loom-server.json"
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
