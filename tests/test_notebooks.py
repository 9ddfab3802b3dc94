"""The notebooks in ``notebooks/`` run, and their committed outputs are current.

Each notebook is executed with nbclient in a ``python3`` kernel of this interpreter (the
same code as ``scripts/run_notebooks.py``, which regenerates the committed outputs): in a
fresh temporary working directory, with ``LOOM_DATA_DIR`` there, so the kernel starts its
own embedded server; ``MONGODB_URI`` reaches the kernel only when this session has it.

A cell error fails the test. The committed file must have been executed top to bottom with
no error output, and each code cell's text outputs must equal the fresh ones once volatile
parts (ObjectIds, datetimes, addresses, timings, ports, temporary paths, the embedded
server's start-up notice, progress bars) are normalised. A cell tagged ``volatile`` is executed but its
outputs are not compared.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SESSION_MONGODB_URI = os.environ.get("MONGODB_URI")


def _load_runner() -> Any:
    spec = importlib.util.spec_from_file_location(
        "run_notebooks", ROOT / "scripts" / "run_notebooks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()
NOTEBOOKS = runner.notebook_paths()

_DATE, _TIME = r"\d{4}-\d{2}-\d{2}", r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
_TMP = re.escape(os.path.realpath(tempfile.gettempdir()))
_VOLATILE: list[tuple[re.Pattern[str], str]] = [
    # printed only when no MONGODB_URI is set; Matplotlib's note on a first import
    (re.compile(r"loom-frames: started the embedded MongoDB server[^\n]*\n?"), ""),
    (re.compile(r"Matplotlib is building the font cache[^\n]*\n?"), ""),
    # progress bars (progress="auto" shows one for work longer than a second)
    (re.compile(r"[^\r\n]*\|[^\r\n]*/s\][\r\n]*"), ""),
    (re.compile(r"\b[0-9a-f]{24}\b"), "<oid>"),
    (re.compile(r"datetime\.datetime\([^()]*(?:\([^()]*\)[^()]*)*\)"), "<datetime>"),
    (re.compile(rf"{_DATE}[ T]{_TIME}(?:Z| ?UTC|[+-]\d{{2}}:?\d{{2}})?"), "<datetime>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "0x<addr>"),
    (re.compile(r"\b(127\.0\.0\.1|localhost|\[::1\]):\d+"), r"\1:<port>"),
    (re.compile(rf"(?:{_TMP}|/tmp|/var/folders)/[^\s'\",)]*"), "<tmp>"),
    (re.compile(r"\b\d+(?:\.\d+)?\s?(?:ns|µs|us|ms|s)\b"), "<time>"),
    (re.compile(r"[ \t]+$", re.MULTILINE), ""),
]


def normalise(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def text_outputs(cell: Any) -> list[str]:
    """A code cell's outputs as text: streams (adjacent chunks joined), text/plain results."""
    parts: list[tuple[str, str]] = []
    for output in cell.get("outputs", []):
        kind = output["output_type"]
        if kind == "stream":
            label, text = f"[{output['name']}]", output["text"]
            if parts and parts[-1][0] == label:
                parts[-1] = (label, parts[-1][1] + text)
                continue
        elif kind in ("execute_result", "display_data"):
            label, text = f"[{kind}]", output.get("data", {}).get("text/plain", "")
        else:
            label, text = "[error]", f"{output.get('ename')}: {output.get('evalue')}"
        parts.append((label, text))
    normalised = [(label, normalise(text)) for label, text in parts]
    return [f"{label}\n{text}" for label, text in normalised if text.strip()]


def _code_cells(nb: Any) -> list[Any]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


PROBE = "import sys\nprint(sys.prefix)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_committed_outputs_are_current(path: Path, tmp_path: Path) -> None:
    committed = nbformat.read(path, as_version=4)
    nbformat.validate(committed)
    assert committed.metadata.get("kernelspec", {}).get("name") == runner.KERNEL

    # the committed file was executed top to bottom, without an error
    cells = _code_cells(committed)
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), (
        f"{path.name} is not freshly executed: run scripts/run_notebooks.py"
    )
    for number, cell in enumerate(cells, 1):
        assert all(o["output_type"] != "error" for o in cell.outputs), (
            f"{path.name} cell [{number}] has a committed error output"
        )

    # run it again (one extra cell checks the kernel is this interpreter's environment)
    fresh = copy.deepcopy(committed)
    fresh.cells.append(nbformat.v4.new_code_cell(PROBE))
    runner.execute(fresh, tmp_path / "work", mongodb_uri=SESSION_MONGODB_URI)
    probe = fresh.cells.pop()
    assert [o.get("text", "").strip() for o in probe.outputs] == [sys.prefix]

    mismatches = []
    for number, (old, new) in enumerate(zip(cells, _code_cells(fresh), strict=True), 1):
        if "volatile" in old.metadata.get("tags", []):
            continue
        want, got = text_outputs(old), text_outputs(new)
        if want != got:
            lines = ("\n".join(want).splitlines(), "\n".join(got).splitlines())
            diff = difflib.unified_diff(*lines, "committed", "executed", lineterm="")
            mismatches.append(f"cell [{number}]:\n" + "\n".join(diff))
    assert not mismatches, (
        f"{path.name}: outputs differ from the committed ones (regenerate them with "
        "scripts/run_notebooks.py, or tag a cell 'volatile'):\n" + "\n\n".join(mismatches)
    )
