"""Partitioned reads: one cursor vs k threads vs Dask worker processes, same rows.

A collection of ``--docs`` (default 200,000) six-field documents. Measured (median of
``--repeat``, methods interleaved), all reading the whole collection:

* baseline: ``pymongoarrow.api.find_pandas_all`` with the same schema, the model's
  ``created_at`` / ``updated_time`` included (what a user writes without us);
* ``load_dataframe()`` (one cursor);
* ``load_table(partitions=2)`` and ``load_table(partitions=4)`` (threads, one connection
  each);
* ``to_dask(npartitions=4).compute()`` on a ``distributed.LocalCluster`` of 2 worker
  processes x 1 thread (started before measuring).

Printed: wall seconds, client CPU (this process), worker CPU (the Dask worker processes,
psutil), server CPU (psutil on the server's pid), documents and bytes the server sent
(counted on the wire by ``wire_counter.py``, its own process, in front of the server,
so the workers' reads are counted too), and wall time relative to the baseline.

The server (SecantusDB) is a single Python process: it serves one request at a time,
so partitions cannot make it faster here; what this shows is what partitioning costs
(the bounds, more commands) and that every row is read once.

Run: ``.venv/bin/python bench/bench_dask.py [--docs 200000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from wire_counter import read_counts  # noqa: E402


def frame(n: int) -> Any:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(11)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return pl.DataFrame({
        "sensor": [f"s{k % 500:03d}" for k in range(n)],
        "value": np.round(rng.normal(20, 5, n), 3),
        "count": rng.integers(0, 1000, n),
        "ok": rng.random(n) > 0.1,
        "at": pl.datetime_range(start, start + dt.timedelta(seconds=n - 1), "1s",
                                eager=True, time_unit="ms"),
    })


def model() -> Any:
    from loom_frames import Persistable, declare_persist_db

    @declare_persist_db(db_name="bench_dask", collection_name="readings")
    class Reading(Persistable):
        sensor: str
        value: float
        count: int
        ok: bool
        at: dt.datetime

    return Reading


def cpu_of(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import distributed
    from pymongoarrow.api import find_pandas_all

    import loom_frames as lm
    from loom_frames.embedded import EmbeddedServer
    from loom_frames.schema import arrow_schema

    server = EmbeddedServer.ephemeral()
    counts = Path(tempfile.mkdtemp()) / "counts"
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    proxy = subprocess.Popen([sys.executable, str(Path(__file__).with_name("wire_counter.py")),
                              str(port), str(server.port), str(counts)])
    time.sleep(1.0)
    uri = server.uri.replace(f"127.0.0.1:{server.port}", f"127.0.0.1:{port}")
    uri += ("&" if "?" in uri else "?") + "directConnection=true"
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    dask_client = distributed.Client(cluster)
    try:
        lm.connect(uri)
        Reading = model()
        Reading.collection().drop()
        Reading.insert_dataframe(frame(args.docs))
        coll = Reading.collection()
        from pymongoarrow.api import Schema

        # the model's columns: Persistable's created_at / updated_time included
        storage = Schema({"_id": __import__("bson").ObjectId, "created_at": dt.datetime,
                          "updated_time": dt.datetime, "sensor": str, "value": float,
                          "count": int, "ok": bool, "at": dt.datetime})
        workers = [w["pid"] for w in dask_client.run(lambda: {"pid": __import__("os").getpid()}
                                                      ).values()]
        query = Reading.filter()
        methods = {
            "pymongoarrow find_pandas_all": lambda: find_pandas_all(coll, {}, schema=storage),
            "load_dataframe()": lambda: query.load_dataframe(),
            "load_table(partitions=2)": lambda: query.load_table(partitions=2),
            "load_table(partitions=4)": lambda: query.load_table(partitions=4),
            "to_dask(npartitions=4).compute()": lambda: query.to_dask(npartitions=4).compute(),
        }
        for fn in methods.values():  # warm up: imports, first connections, worker imports
            fn()
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in methods}
        for _ in range(args.repeat):
            for name, fn in methods.items():
                d0, b0 = read_counts(counts)
                s0, w0 = cpu_of([server.pid]), cpu_of(workers)
                c0, t0 = time.process_time(), time.perf_counter()
                result = fn()
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                time.sleep(0.3)  # the proxy's last counts reach its file
                d1, b1 = read_counts(counts)
                runs[name].append({
                    "wall": wall, "cpu": cpu, "workers": cpu_of(workers) - w0,
                    "server": cpu_of([server.pid]) - s0, "docs": d1 - d0, "bytes": b1 - b0,
                    "rows": float(len(result)),
                })
        assert arrow_schema(Reading) is not None
    finally:
        lm.disconnect()
        dask_client.close()
        cluster.close()
        proxy.kill()
        server.stop()

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    base = med("pymongoarrow find_pandas_all", "wall")
    print(f"\nreading {args.docs:,} documents x 5 fields; median of {args.repeat}; "
          "2 Dask worker processes")
    head = (f"| {'method':<34} | {'wall s':>7} | {'client CPU s':>12} | {'worker CPU s':>12} "
            f"| {'server CPU s':>12} | {'docs sent':>9} | {'bytes sent':>12} | {'rows':>8} "
            f"| {'wall vs base':>12} |")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for name in methods:
        print(f"| {name:<34} | {med(name, 'wall'):>7.3f} | {med(name, 'cpu'):>12.3f} | "
              f"{med(name, 'workers'):>12.3f} | {med(name, 'server'):>12.3f} | "
              f"{med(name, 'docs'):>9,.0f} | {med(name, 'bytes'):>12,.0f} | "
              f"{med(name, 'rows'):>8,.0f} | {med(name, 'wall') / base:>11.2f}x |")


if __name__ == "__main__":
    main()
