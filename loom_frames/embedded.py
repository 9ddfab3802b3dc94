"""The embedded server: start, identify, share, protect, stop.

Without ``MONGODB_URI``, loom-frames stores data in a SecantusDB server (the ``embedded``
extra) of its own, in ``./.loom`` (``LOOM_DATA_DIR`` moves it). It is a development
server for one user on one machine:

* **Lifetime.** It runs while at least one process uses its folder and stops when the
  last one exits, even by ``kill -9`` (each user process holds ``loom-users.lock``
  shared; the kernel releases it when the process dies, whichever thread started the
  server; the server checks five times a second). A server that dies is noticed at the
  next call and started again (:meth:`EmbeddedServer.alive`).
* **Sharing.** A second process in the same folder (a notebook beside a script) attaches
  to the running server: ``loom-server.json`` names its port and pid. Starting and
  attaching are serialised by ``loom-start.lock``, so two processes never start two
  servers on one folder.
* **Identity.** The client talks only to a server that proves it knows this folder's
  credentials (SCRAM authenticates the server to the client too) and reports the pid
  that was started or recorded. The server binds port 0 itself, so no other program
  can take its port between a choice and the bind.
* **Protection.** The folder is 0700 and its files 0600; authentication is required,
  with a user and a random password generated per folder, stored in
  ``loom-credentials.json`` (0600). It listens on 127.0.0.1 only.
* **Explicit configuration.** Every setting is passed by loom-frames;
  ``secantusd.toml`` files (current folder, ``~/.secantus``, ``/etc/secantus``) and
  ``SECANTUS_*`` variables are not read (see :mod:`loom_frames._serve_embedded`).

POSIX only (Linux, macOS): the lifetime and sharing rest on ``flock``.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from .errors import EmbeddedServerError

__all__ = ["EmbeddedServer"]

USER = "loom"
CREDENTIALS = "loom-credentials.json"
PORT_FILE = "loom-server.json"
START_LOCK = "loom-start.lock"
USERS_LOCK = "loom-users.lock"
SERVER_LOCK = "loom-server.lock"
LOG = "secantusd.log"
_CHILD = Path(__file__).with_name("_serve_embedded.py")
_EXIT_BUSY = 3  # _serve_embedded: another server holds the folder
_MARKERS = (CREDENTIALS, PORT_FILE, START_LOCK, USERS_LOCK, SERVER_LOCK, LOG, "WiredTiger")
_HINT = ("Hint: set LOOM_DATA_DIR to a directory of yours that you can write (it is made "
         "private, mode 0700), or set MONGODB_URI to use another MongoDB server.")


class EmbeddedServer:
    """This process's handle on an embedded server: started here, or attached to.

    >>> server = EmbeddedServer.open(".loom")  # doctest: +SKIP
    >>> server  # doctest: +SKIP
    <EmbeddedServer pid=4242 mongodb://loom:***@127.0.0.1:40123/ data=/work/.loom>
    """

    def __init__(
        self, runtime: Path, data_dir: Path | None, port: int, pid: int,
        credentials: dict[str, str], process: subprocess.Popen[bytes] | None,
        users_fd: int, *, ephemeral: bool,
    ) -> None:
        self.runtime = runtime
        self.data_dir = data_dir  # None: in memory (its runtime folder is removed at stop)
        self.port = port
        self.pid = pid
        self.user = credentials["user"]
        self._password = credentials["password"]
        self.process = process  # set when this process started it
        self.started = process is not None
        self._users_fd = users_fd
        self._probe_fd = _open_lock(runtime, SERVER_LOCK)
        self._port_file_id = _file_id(runtime / PORT_FILE)
        self._ephemeral = ephemeral
        self._owner_pid = os.getpid()
        self._stopped = False

    # ------------------------------------------------------------------ views
    @property
    def uri(self) -> str:
        """The URI with this folder's credentials (keep it private)."""
        return (f"mongodb://{USER}:{quote_plus(self._password)}@127.0.0.1:{self.port}/"
                "?authSource=admin&authMechanism=SCRAM-SHA-256")

    @property
    def address(self) -> str:
        """Where it listens, as shown in messages (no credentials)."""
        return f"mongodb://127.0.0.1:{self.port}/"

    @property
    def log(self) -> Path:
        """The server's log file."""
        return self.runtime / LOG

    def describe(self) -> str:
        """``"the embedded server (pid N, data in DIR)"``, for messages."""
        where = f"data in {self.data_dir}" if self.data_dir else "in memory"
        return f"the embedded server (pid {self.pid}, {where})"

    def __repr__(self) -> str:
        where = self.data_dir if self.data_dir is not None else ":memory:"
        return (f"<EmbeddedServer pid={self.pid} mongodb://{USER}:***@127.0.0.1:{self.port}/"
                f" data={where}>")

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, data_dir: Path | str, *, timeout: float = 60.0) -> EmbeddedServer:
        """Attach to the running server of ``data_dir``, or start it (shared, on disk)."""
        path = Path(data_dir).absolute()
        _require_platform()
        _prepare_dir(path)
        return cls._attach_or_start(path, str(path), data_dir=path, test_commands=False,
                                    timeout=timeout)

    @classmethod
    def ephemeral(cls, *, test_commands: bool = False, timeout: float = 60.0
                  ) -> EmbeddedServer:
        """A private in-memory server for tests and benchmarks, gone after :meth:`stop`.

        ``test_commands=True`` enables ``configureFailPoint`` (fault injection).
        """
        _require_platform()
        runtime = Path(tempfile.mkdtemp(prefix="loom-embedded-"))  # mode 0700
        try:
            return cls._attach_or_start(runtime, ":memory:", data_dir=None,
                                        test_commands=test_commands, timeout=timeout)
        except BaseException:
            shutil.rmtree(runtime, ignore_errors=True)
            raise

    @classmethod
    def _attach_or_start(
        cls, runtime: Path, storage: str, *, data_dir: Path | None, test_commands: bool,
        timeout: float,
    ) -> EmbeddedServer:
        deadline = time.monotonic() + timeout
        where = str(data_dir or runtime)
        start_fd = _open_lock(runtime, START_LOCK)
        try:
            _flock(start_fd, "LOCK_EX", deadline,
                   f"another process was starting the embedded server of {where}")
            credentials = _credentials(runtime)
            users_fd = _open_lock(runtime, USERS_LOCK)
            try:
                _flock(users_fd, "LOCK_SH", deadline,
                       f"the embedded server of {where} was stopping")
                server = cls._attach(runtime, data_dir, credentials, users_fd, deadline)
                if server is None:
                    server = cls._spawn(runtime, storage, data_dir, credentials, users_fd,
                                        test_commands, deadline, timeout)
            except BaseException:
                os.close(users_fd)
                raise
        finally:
            os.close(start_fd)
        atexit.register(server.stop)
        return server

    @classmethod
    def _attach(
        cls, runtime: Path, data_dir: Path | None, credentials: dict[str, str], users_fd: int,
        deadline: float,
    ) -> EmbeddedServer | None:
        recorded = _read_port_file(runtime)
        if not _server_running(runtime):
            with contextlib.suppress(FileNotFoundError):
                (runtime / PORT_FILE).unlink()  # left by a server that died
            return None
        if recorded is None:
            raise EmbeddedServerError(
                f"a server process holds the embedded server's folder {data_dir or runtime} "
                f"but did not record its port in {PORT_FILE}. Hint: stop it (see "
                f"{runtime / LOG}), or set MONGODB_URI to use another server."
            )
        port, pid = recorded
        return cls(runtime, data_dir, port, pid, credentials, None, users_fd,
                   ephemeral=False)._checked(deadline)

    @classmethod
    def _spawn(
        cls, runtime: Path, storage: str, data_dir: Path | None, credentials: dict[str, str],
        users_fd: int, test_commands: bool, deadline: float, timeout: float,
    ) -> EmbeddedServer:
        _require_installed()
        args = [sys.executable, "-P", str(_CHILD), str(runtime), storage]
        if test_commands:
            args.append("--test-commands")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SECANTUS_")}
        log_fd = os.open(runtime / LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_fd,
                cwd=runtime, env=env, start_new_session=True,  # no terminal Ctrl-C
            )
        finally:
            os.close(log_fd)
        try:
            port = _wait_ready(process, deadline, timeout, runtime, data_dir)
            server = cls(runtime, data_dir, port, process.pid, credentials, process, users_fd,
                         ephemeral=data_dir is None)._checked(deadline)
        except BaseException:
            _terminate(process)
            raise
        return server

    # ------------------------------------------------------------------ identity
    def _verify(self, deadline: float) -> None:
        """Fail unless 127.0.0.1:port is this folder's server: it must complete SCRAM with
        the folder's credentials (proving it knows them) and report the expected pid."""
        import pymongo
        from pymongo.errors import OperationFailure, PyMongoError

        budget = max(deadline - time.monotonic(), 2.0)
        client: pymongo.MongoClient[Any] = pymongo.MongoClient(
            host="127.0.0.1", port=self.port, username=self.user, password=self._password,
            authSource="admin", authMechanism="SCRAM-SHA-256", directConnection=True,
            serverSelectionTimeoutMS=int(budget * 1000), appname="loom-frames identity check",
        )
        folder = self.data_dir or self.runtime
        try:
            with pymongo.timeout(budget):
                reported = client.admin.command("serverStatus").get("pid")
        except OperationFailure as exc:
            raise EmbeddedServerError(
                f"127.0.0.1:{self.port} is answered by a server that does not know the "
                f"credentials of {folder} (code {exc.code}): it is not the embedded server "
                f"of that folder, so nothing was sent to it. Hint: {self._stop_hint()}"
            ) from None
        except PyMongoError as exc:
            raise EmbeddedServerError(
                f"{self.describe()} does not answer at 127.0.0.1:{self.port} "
                f"({type(exc).__name__}; its log: {self.log}). Hint: {self._stop_hint()}"
            ) from None
        finally:
            client.close()
        if reported != self.pid:
            raise EmbeddedServerError(
                f"127.0.0.1:{self.port} is answered by process {reported}, not by "
                f"{self.describe()}; nothing was sent to it. Hint: {self._stop_hint()}"
            )

    def _stop_hint(self) -> str:
        return (f"stop process {self.pid} (recorded in {self.runtime / PORT_FILE}), then "
                "retry; or set MONGODB_URI to use another server.")

    def _checked(self, deadline: float) -> EmbeddedServer:
        """This handle once :meth:`_verify` passed; else its lock probe is closed."""
        try:
            self._verify(deadline)
        except BaseException:
            os.close(self._probe_fd)
            raise
        return self

    # ------------------------------------------------------------------ lifetime
    def alive(self) -> bool:
        """True while the server this handle talks to still runs (cheap: two syscalls)."""
        if self._stopped:
            return False
        if self.process is not None and self.process.poll() is not None:
            return False
        if _file_id(self.runtime / PORT_FILE) != self._port_file_id:
            return False  # gone, or another server recorded since
        return _held(self._probe_fd)

    def stop(self) -> None:
        """Stop using the server; the last user stops it (and waits until it is gone).

        Called at interpreter exit. An ephemeral server is always stopped and its folder
        removed.
        """
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        if os.getpid() != self._owner_pid:  # a forked child: the parent keeps the locks
            return
        try:
            last = self._ephemeral or _try_flock(self._users_fd, "LOCK_EX")
            if last and _held(self._probe_fd):
                self._signal(signal.SIGTERM)
                if not _wait_released(self._probe_fd, 15.0):
                    self._signal(signal.SIGKILL)
                    _wait_released(self._probe_fd, 5.0)
            if self.process is not None and last:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(5)
        finally:
            os.close(self._users_fd)
            os.close(self._probe_fd)
            if self._ephemeral:
                shutil.rmtree(self.runtime, ignore_errors=True)

    def _signal(self, signum: int) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)


# ---------------------------------------------------------------------- folder
def _require_platform() -> None:
    if os.name != "posix":
        raise EmbeddedServerError(
            "the embedded server needs Linux or macOS (its lifetime and sharing rest on "
            "POSIX file locks). Hint: set MONGODB_URI to your MongoDB server."
        )


def _require_installed() -> None:
    if importlib.util.find_spec("secantus") is None:
        raise EmbeddedServerError(
            "no MONGODB_URI is set and the embedded server is not installed. "
            "Hint: pip install 'loom-frames[embedded]', or set MONGODB_URI to your "
            "MongoDB server (e.g. export MONGODB_URI=mongodb://localhost:27017)."
        )


def _prepare_dir(path: Path) -> None:
    """Create the folder 0700, or check an existing one is ours; tighten old modes."""
    what = f"the embedded server's data directory {path}"
    try:
        found = path.stat()
    except FileNotFoundError:
        found = None
    except OSError as exc:
        raise EmbeddedServerError(f"{what} cannot be used: {exc.strerror}. {_HINT}") from None
    if found is None:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedServerError(
                f"cannot create {what}: {exc.strerror or exc}. {_HINT}"
            ) from None
        return
    if not stat.S_ISDIR(found.st_mode):
        raise EmbeddedServerError(f"{what} is a file, not a directory. {_HINT}")
    if found.st_uid != os.geteuid():
        raise EmbeddedServerError(
            f"{what} belongs to another user (uid {found.st_uid}); the embedded server's "
            f"data must be private to the user running it. {_HINT}"
        )
    try:
        names = os.listdir(path)
    except OSError as exc:
        raise EmbeddedServerError(f"{what} cannot be read: {exc.strerror}. {_HINT}") from None
    if names and not any(marker in names for marker in _MARKERS):
        raise EmbeddedServerError(
            f"{what} already holds other files ({', '.join(sorted(names)[:3])}, ...) and is "
            f"not an embedded server's folder. {_HINT}"
        )
    if found.st_mode & 0o077:
        _make_private(path)


def _make_private(path: Path) -> None:
    """Folders 0700, files 0600 (a folder made by an older loom-frames was 0755)."""
    try:
        path.chmod(0o700)
        for root, dirs, files in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o700)
            for name in files:
                os.chmod(os.path.join(root, name), 0o600)
    except OSError as exc:
        raise EmbeddedServerError(
            f"cannot make the embedded server's data directory {path} private: "
            f"{exc.strerror}. {_HINT}"
        ) from None


def _credentials(runtime: Path) -> dict[str, str]:
    """The folder's user and password: generated once, kept in a 0600 file."""
    path = runtime / CREDENTIALS
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        found = json.loads(path.read_text())
        if isinstance(found, dict) and found.get("user") == USER and found.get("password"):
            return {"user": USER, "password": str(found["password"])}
    except (FileNotFoundError, ValueError):
        pass
    except OSError as exc:
        raise EmbeddedServerError(f"cannot read {path}: {exc.strerror}. {_HINT}") from None
    created = {"user": USER, "password": secrets.token_urlsafe(32)}
    _write_private(path, json.dumps(created))
    return created


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise EmbeddedServerError(
            f"the embedded server's data directory {path.parent} is not writable "
            f"({exc.strerror}). {_HINT}"
        ) from None


def _read_port_file(runtime: Path) -> tuple[int, int] | None:
    try:
        found = json.loads((runtime / PORT_FILE).read_text())
        return int(found["port"]), int(found["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns


# ---------------------------------------------------------------------- locks
def _open_lock(runtime: Path, name: str) -> int:
    try:
        return os.open(runtime / name, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise EmbeddedServerError(
            f"the embedded server's data directory {runtime} is not writable "
            f"({exc.strerror}). {_HINT}"
        ) from None


def _try_flock(fd: int, mode: str) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, getattr(fcntl, mode) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _flock(fd: int, mode: str, deadline: float, waiting_for: str) -> None:
    while not _try_flock(fd, mode):
        if time.monotonic() > deadline:
            raise EmbeddedServerError(
                f"timed out: {waiting_for} and did not finish. Hint: retry; if it stays, "
                "look for a hung process using that folder."
            )
        time.sleep(0.02)


def _held(probe_fd: int) -> bool:
    """True while some process (the server) holds ``loom-server.lock`` exclusively."""
    import fcntl

    if _try_flock(probe_fd, "LOCK_SH"):
        fcntl.flock(probe_fd, fcntl.LOCK_UN)
        return False
    return True


def _server_running(runtime: Path) -> bool:
    fd = _open_lock(runtime, SERVER_LOCK)
    try:
        return _held(fd)
    finally:
        os.close(fd)


def _wait_released(probe_fd: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _held(probe_fd):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ---------------------------------------------------------------------- start
def _wait_ready(
    process: subprocess.Popen[bytes], deadline: float, timeout: float, runtime: Path,
    data_dir: Path | None,
) -> int:
    """The port from the child's ``READY <port>`` line; a clear error if it never comes."""
    assert process.stdout is not None
    received = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmbeddedServerError(
                    f"the embedded server did not start within {timeout:g}s; see "
                    f"{runtime / LOG}. Hint: set MONGODB_URI to use another server."
                )
            if selector.select(min(remaining, 0.5)):
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    break
                received += chunk
    process.stdout.close()
    line = received.split(b"\n")[0].decode(errors="replace")
    if line.startswith("READY "):
        return int(line.split()[1])
    code = process.wait(10)
    tail = _tail(runtime / LOG)
    if code == _EXIT_BUSY or "resource busy" in tail.lower() or "WT_BUSY" in tail:
        raise EmbeddedServerError(
            f"the embedded server's folder {data_dir or runtime} is in use by another "
            "process that is not a loom-frames server of this version (e.g. a "
            "secantusd-py started by hand, or an older loom-frames). Hint: stop that "
            "process, or set LOOM_DATA_DIR to another folder."
        )
    raise EmbeddedServerError(
        f"the embedded server exited with code {code} before it was ready. The end of "
        f"its log {runtime / LOG}:\n{tail}\nHint: set MONGODB_URI to use another server."
    )


def _tail(log: Path, lines: int = 8) -> str:
    try:
        with open(log, "rb") as found:
            found.seek(max(found.seek(0, os.SEEK_END) - 4096, 0))
            text = found.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

