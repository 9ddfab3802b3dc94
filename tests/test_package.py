"""The package's surface: clean import, locked exports, the seed's alias imports."""

from __future__ import annotations

import subprocess
import sys

import loom_frames


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                          text=True, timeout=120)


def test_import_emits_no_warning() -> None:
    # pyarrow must match pymongoarrow's build, or every import warns (pyproject pins it).
    result = _python("import loom_frames, loom, loom.info; import pymongoarrow.api")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_import_pulls_in_no_frame_library() -> None:
    result = _python(
        "import sys, loom_frames, loom.info\n"
        "heavy = [m for m in ('polars', 'pandas', 'pyarrow', 'pymongoarrow', 'narwhals')"
        " if m in sys.modules]\n"
        "print(heavy)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_all_is_sorted_and_complete() -> None:
    names = loom_frames.__all__
    # isort-style, as ruff keeps it: CONSTANTS, then Classes, then functions
    assert list(names) == sorted(names, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    for name in names:
        assert hasattr(loom_frames, name), name
    public = {n for n in vars(loom_frames) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(loom_frames, n)).__name__ == "module"}
    assert public - modules - {"annotations"} == set(names)


def test_seed_imports_work_verbatim() -> None:
    import loom as lm
    from loom.info import (  # noqa: F401
        AggregationStages,
        IncrCounter,
        LedgerModel,
        Persistable,
        StrLower,
        TimeInserted,
        TimeSeriesLedgerModel,
        TimeUpdated,
        declare_persist_db,
        declare_timeseries,
    )

    assert lm.Persistable is loom_frames.Persistable
    assert lm.fld is loom_frames.fld


def test_alias_package_holds_no_logic() -> None:
    import inspect

    import loom
    import loom.info

    for module in (loom, loom.info):
        source = inspect.getsource(module)
        assert "def " not in source and "class " not in source
