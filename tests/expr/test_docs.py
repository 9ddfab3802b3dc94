"""Every docstring example in loom_frames.expr runs and prints what it claims."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys

import pytest

import loom_frames.expr

MODULES = ["api", "bind", "dtypes", "from_polars", "literals", "mongo", "namespaces", "nodes",
           "polars", "render"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"loom_frames.expr.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


def test_package_docstring_example() -> None:
    result = doctest.testmod(loom_frames.expr)
    assert result.attempted > 0 and result.failed == 0


def test_public_callables_have_examples() -> None:
    missing = []
    for name in loom_frames.expr.__all__:
        obj = getattr(loom_frames.expr, name)
        members = [obj] + [v for k, v in vars(obj).items() if not k.startswith("_")
                           and callable(v)] if isinstance(obj, type) else [obj]
        for member in members:
            doc = getattr(member, "__doc__", "") or ""
            if callable(member) and ">>>" not in doc and not isinstance(member, type):
                missing.append(f"{name}.{getattr(member, '__name__', member)}")
    assert missing == []


def test_all_is_sorted_and_explicit() -> None:
    names = loom_frames.expr.__all__
    assert list(names) == sorted(names)
    assert {"fld", "Expr", "col", "FieldRef", "Kind", "Resolver", "SimpleResolver"} <= set(names)
    for name in names:
        assert hasattr(loom_frames.expr, name)


def test_importing_the_expression_package_does_not_import_polars() -> None:
    code = ("import sys, loom_frames.expr as e; e.fld['a'] > 1; (e.fld['a'] > 1).to_mongo(); "
            "print('polars' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.strip() == "False"
