"""``make demo`` (``python -m loom_frames demo``) runs the guide end to end, repeatably."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_demo(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loom_frames", "demo"], cwd=cwd, env=env, text=True,
        capture_output=True, timeout=120,
    )


def expect_the_guide(out: str) -> None:
    for section in ("Defining models", "Create", "Read", "Update", "Atomic increments",
                    "Querying", "Ledger models", "Time series models", "Dataframes",
                    "Inserting dataframes"):
        assert f"== {section}" in out, section
    assert "login_count after += 1: 11" in out
    assert "insert_dataframe: WriteResult(inserted=2, updated=0, unchanged=0, failed=0)" in out
    assert "WriteResult(inserted=0, updated=0, unchanged=2, failed=0)" in out
    assert "users now: 6" in out and out.rstrip().endswith("Done.")


def test_the_demo_runs_twice_on_the_same_server(
    mongo_uri: str, client: Any, tmp_path: Path
) -> None:
    env = {**os.environ, "MONGODB_URI": mongo_uri}
    try:
        for _ in range(2):  # it drops its own databases first: the same result again
            done = run_demo(env, tmp_path)
            assert done.returncode == 0, done.stderr
            expect_the_guide(done.stdout)
    finally:
        for name in ("loom_demo_app", "loom_demo_audit", "loom_demo_iot"):
            client.drop_database(name)


@pytest.mark.skipif("MONGODB_URI" in os.environ, reason="the embedded server is the default")
def test_the_demo_starts_the_embedded_server_without_mongodb_uri(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    env["LOOM_DATA_DIR"] = str(tmp_path / "data")
    done = run_demo(env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "started the embedded MongoDB server" in done.stderr
    expect_the_guide(done.stdout)
    assert any((tmp_path / "data").iterdir())  # its data stayed on disk
