"""Every ```python block of the README runs, in order, in one namespace: docs cannot drift."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
GUIDE_DATABASES = ("my_app", "audit", "iot", "shop")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_has_python_blocks() -> None:
    assert len(python_blocks(README.read_text())) >= 5


def test_readme_code_blocks_run(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Twice in a row, as a reader runs them again (the second time on the first run's
    data): every example must still hold."""
    for name in GUIDE_DATABASES:
        client.drop_database(name)
    try:
        for run in (1, 2):
            namespace: dict[str, Any] = {"__name__": "readme"}
            for number, block in enumerate(python_blocks(README.read_text()), start=1):
                try:
                    exec(compile(block, f"README.md block {number}", "exec"), namespace)
                except Exception as exc:
                    raise AssertionError(
                        f"README block {number} failed on run {run}:\n{block}") from exc
    finally:
        for name in GUIDE_DATABASES:
            client.drop_database(name)
    assert "User ID:" in capsys.readouterr().out
