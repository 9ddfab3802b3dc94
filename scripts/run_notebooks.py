"""Re-execute ``notebooks/*.ipynb`` in place and save their outputs.

    .venv/bin/python scripts/run_notebooks.py                  # every notebook
    .venv/bin/python scripts/run_notebooks.py notebooks/02_polars_pipelines.ipynb

Each notebook runs in a ``python3`` kernel of this interpreter (ipykernel's own kernelspec,
launched with ``sys.executable``), in a fresh temporary working directory, with
``LOOM_DATA_DIR`` in that directory: the embedded server starts empty and is gone afterwards.
``MONGODB_URI`` is passed to the kernel only when it is set here (then the notebooks run
against that server; they drop their own ``nb_*`` databases first). A cell error stops with
a non-zero exit and leaves the notebook file unchanged.

``tests/test_notebooks.py`` executes the notebooks with :func:`execute` too, and compares
the outputs with the committed ones.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import nbformat
import zmq
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "python3"
TIMEOUT = 180  # seconds per cell


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def kernel_env(data_dir: Path, mongodb_uri: str | None) -> dict[str, str]:
    """The kernel's environment: ours, with LOOM_DATA_DIR set and MONGODB_URI only if given."""
    env = dict(os.environ)
    env.pop("MONGODB_URI", None)
    if mongodb_uri:
        env["MONGODB_URI"] = mongodb_uri
    env["LOOM_DATA_DIR"] = str(data_dir)
    env.pop("MPLBACKEND", None)  # the notebooks use the inline backend
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # debugpy's frozen-modules warning
    return env


def execute(
    nb: nbformat.NotebookNode,
    workdir: Path,
    *,
    mongodb_uri: str | None = None,
    timeout: int = TIMEOUT,
) -> nbformat.NotebookNode:
    """Run every cell of ``nb`` (in place) with ``workdir`` as the kernel's working directory.

    Raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=timeout,
        record_timing=False,  # no timestamps in the saved files
        resources={"metadata": {"path": str(workdir)}},
    )
    launch: dict[str, object] = {"env": kernel_env(workdir / "loom-data", mongodb_uri)}
    if hasattr(client.kernel_manager_class, "transport_encryption") and zmq.has("curve"):
        # jupyter_client >= 8.10: CurveZMQ between client and kernel (else ipykernel warns
        # "Kernel is running over TCP without encryption" on every start)
        launch["transport_encryption"] = "auto"
    client.execute(**launch)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = parser.parse_args(argv)
    paths = args.notebooks or notebook_paths()
    uri = os.environ.get("MONGODB_URI")
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        with tempfile.TemporaryDirectory(prefix="loom-nb-") as tmp:
            execute(nb, Path(tmp), mongodb_uri=uri)
        nb.metadata.pop("widgets", None)  # progress bars' widget state: noise, not output
        nbformat.validate(nb)
        nbformat.write(nb, path)
        print(f"executed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
