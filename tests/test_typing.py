"""mypy passes on the package and on tests/typed_usage.py, whose ``assert_type`` checks
pin what the public API's types are (``User.filter()`` is a ``Query[User]``, ...)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_passes_on_the_package_and_the_typed_usage_file() -> None:
    api = pytest.importorskip("mypy.api")
    out, err, status = api.run(["--config-file", str(ROOT / "pyproject.toml"),
                                str(ROOT / "loom_frames"), str(ROOT / "loom"),
                                str(ROOT / "tests" / "typed_usage.py")])
    assert status == 0, out + err


def test_both_packages_ship_py_typed() -> None:
    assert (ROOT / "loom_frames" / "py.typed").exists()
    assert (ROOT / "loom" / "py.typed").exists()
