"""LazyFrame scans: loom-frames ``scan_collection`` vs polars-mongo 0.3.1, same data/server.

Server: SecantusDB as its own process; both clients reach it through
``wire_counter.py`` (another process) that counts the documents and bytes MongoDB sends
back, whatever the driver (polars-mongo's is a Rust driver). N documents (default
100,000) with 8 fields. For each pipeline: client CPU seconds (``time.process_time`` of
this process, all threads, median of ``--repeat`` runs), rows in the result, documents
and bytes the server returned (one run), ratio of CPU to polars-mongo, and whether the
result equals the eager reference (``pymongo`` documents -> ``pl.DataFrame`` -> the
same pipeline).

Needs ``pip install polars-mongo==0.3.1`` (the ``bench`` extra).
Run: ``.venv/bin/python bench/bench_scan.py [--docs 100000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl  # noqa: E402
import pymongo  # noqa: E402
from wire_counter import read_counts  # noqa: E402

import loom_frames as lm  # noqa: E402
from loom_frames.embedded import EmbeddedServer  # noqa: E402


def free_port() -> int:
    """A port of 127.0.0.1 free a moment ago (for the byte-counting proxy)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SCHEMA = {
    "sensor": pl.String, "count": pl.Int64, "value": pl.Float64, "ok": pl.Boolean,
    "at": pl.Datetime("ms", "UTC"), "site": pl.String, "unit": pl.String, "note": pl.String,
}
PIPELINES: dict[str, Callable[[pl.LazyFrame], pl.LazyFrame]] = {
    "count > 95_000": lambda lf: lf.filter(pl.col("count") > 95_000),
    "sensor == 's7'": lambda lf: lf.filter(pl.col("sensor") == "s7"),
    "select 2 of 8": lambda lf: lf.select("sensor", "value"),
    "head(10)": lambda lf: lf.head(10),
    "select(pl.len())": lambda lf: lf.select(pl.len()),
}


def make_docs(n: int) -> list[dict[str, Any]]:
    rng = random.Random(3)
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    return [
        {"sensor": f"s{i % 100}", "count": i, "value": rng.random() * 100,
         "ok": rng.random() < 0.5, "at": t0 + dt.timedelta(seconds=i), "site": f"site-{i % 7}",
         "unit": "C", "note": "x" * rng.randrange(0, 20)}
        for i in range(n)
    ]


def cpu(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeat):
        start = time.process_time()
        result = fn()
        times.append(time.process_time() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    try:
        from polars_mongo import scan_mongo
    except ImportError:
        sys.exit("bench_scan needs polars-mongo: pip install 'loom-frames[bench]'")

    server = EmbeddedServer.ephemeral()
    counts_file = Path(tempfile.mkdtemp()) / "counts"
    port = free_port()
    proxy = subprocess.Popen([sys.executable, str(Path(__file__).with_name("wire_counter.py")),
                              str(port), str(server.port), str(counts_file)])
    try:
        time.sleep(1.0)
        direct: pymongo.MongoClient[Any] = pymongo.MongoClient(server.uri, tz_aware=True)
        coll = direct.bench.scan
        coll.drop()
        docs = make_docs(args.docs)
        for i in range(0, len(docs), 10_000):
            coll.insert_many(docs[i : i + 10_000], ordered=False)
        uri = server.uri.replace(f":{server.port}/", f":{port}/") + "&directConnection=true"
        lm.connect(uri)
        reference = pl.DataFrame(
            [{k: d.get(k) for k in SCHEMA} for d in coll.find({}, sort=[("_id", 1)])],
            schema=SCHEMA,
        )
        print(f"{args.docs:,} documents, 8 fields; server secantusd-py (own process), "
              "replies counted by wire_counter.py (own process)\n")
        header = (f"{'pipeline':<17} {'client':<14} {'cpu s':>8} {'ratio':>6} {'rows':>7} "
                  f"{'docs back':>10} {'bytes back':>12} {'correct':>8}")
        print(header)
        print("-" * len(header))
        sources = {
            "polars-mongo": lambda: scan_mongo(uri, "bench", "scan"),
            "loom-frames": lambda: lm.scan_collection("bench", "scan", schema=SCHEMA),
        }
        for label, pipeline in PIPELINES.items():
            want = pipeline(reference.lazy()).collect()
            base_cpu = None
            for name, source in sources.items():
                run = lambda: pipeline(source()).collect()  # noqa: E731
                try:
                    run()  # warm up
                    seconds, got = cpu(run, args.repeat)
                    before = read_counts(counts_file)
                    got = run()
                    time.sleep(0.2)
                    after = read_counts(counts_file)
                    back_docs, back_bytes = after[0] - before[0], after[1] - before[1]
                    correct = _same(got, want, ordered=label == "head(10)")
                except Exception as exc:  # noqa: BLE001 - the peer may crash; report it
                    print(f"{label:<17} {name:<14} failed: {type(exc).__name__}: "
                          f"{str(exc)[:60]}")
                    continue
                base_cpu = seconds if name == "polars-mongo" else base_cpu
                ratio = f"{seconds / base_cpu:.2f}" if base_cpu else "-"
                print(f"{label:<17} {name:<14} {seconds:>8.4f} {ratio:>6} {got.height:>7,} "
                      f"{back_docs:>10,} {back_bytes:>12,} {str(correct):>8}")
            print()
    finally:
        proxy.terminate()
        server.stop()


def _same(got: pl.DataFrame, want: pl.DataFrame, *, ordered: bool) -> bool:
    common = [c for c in want.columns if c in got.columns]
    if got.height != want.height or len(common) != len(want.columns):
        return False
    a, b = got.select(common), want.select(common)
    if not ordered:
        a, b = a.sort(common), b.sort(common)
    try:
        return a.cast(b.schema).equals(b)
    except Exception:  # noqa: BLE001
        return False


if __name__ == "__main__":
    main()
