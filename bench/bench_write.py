"""Client cost of writing frames: insert_dataframe / upsert_dataframe vs the usual ways.

Starts SecantusDB as its own process (``EmbeddedServer.ephemeral()``), then runs
every measurement in a fresh child process (so peak RSS is the method's own):

* insert N rows (default 100,000 and 1,000,000) of a 6-column Polars frame with
  - ``Model.insert_dataframe(df)`` (loom-frames: validated, markers, ids, 9 fields/doc),
  - ``pymongoarrow.api.write(coll, df.to_arrow())`` (the baseline: 6 fields, server ids),
  - ``coll.insert_many(df.to_dicts())`` (plain pymongo);
* upsert 100,000 rows with 10% changed into a collection holding them (unique index on
  the key) with ``Model.upsert_dataframe(df, on=["sku"])`` (first run and an idempotent
  rerun) vs ``bulk_write([UpdateOne({"sku": ...}, {"$set": row}, upsert=True), ...])``.

Printed per method: client CPU seconds (``time.process_time`` of the child; the server is
another process, so its ~20 us/doc are not counted), wall seconds, the ratio of CPU to
the baseline of the same group in the same run, documents written, and peak RSS growth
(the peak resident set during the call minus the resident set just before it, the frame
already built: Linux ``/proc/self/clear_refs`` + ``VmHWM``).

Run: ``.venv/bin/python bench/bench_write.py [--rows 100000 1000000] [--upsert-rows 100000]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

INSERT_METHODS = ("loom insert_dataframe", "pymongoarrow.api.write", "insert_many(to_dicts)")
UPSERT_METHODS = ("loom upsert_dataframe", "loom upsert rerun", "bulk_write(UpdateOne upsert)")


def frame(rows: int, changed_every: int = 0) -> Any:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(7)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    price = np.round(rng.random(rows) * 100, 2)
    if changed_every:
        price[::changed_every] += 1.0
    return pl.DataFrame({
        "sku": [f"sku-{i:08d}" for i in range(rows)],
        "qty": rng.integers(0, 1000, rows),
        "price": price,
        "active": rng.random(rows) > 0.5,
        "at": pl.datetime_range(start, start + dt.timedelta(seconds=rows - 1), "1s",
                                eager=True, time_unit="ms"),
        "note": pl.Series([None if i % 7 == 0 else f"note {i % 100}" for i in range(rows)]),
    })


def model(db: str, collection: str) -> Any:
    from loom_frames import Persistable, declare_persist_db

    @declare_persist_db(db_name=db, collection_name=collection)
    class Row(Persistable):
        sku: str
        qty: int
        price: float
        active: bool
        at: dt.datetime
        note: str | None = None

    return Row


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def reset_peak() -> float:
    """Reset the peak-RSS mark (Linux: /proc/self/clear_refs) and return the current RSS.

    Without it, ``ru_maxrss`` keeps the peak of building the frame, which hides the
    call's own peak.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        current = _status_mb("VmRSS")
        if current is not None:
            return current
    except OSError:
        pass
    return rss_mb()


def peak_mb() -> float:
    """Peak RSS since :func:`reset_peak` (VmHWM), else the process' ``ru_maxrss``."""
    return _status_mb("VmHWM") or rss_mb()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(method: str, rows: int, uri: str) -> dict[str, Any]:
    """One measurement in this (fresh) process; returns its numbers."""
    import gc

    from pymongo import UpdateOne

    import loom_frames as lm

    client = lm.connect(uri)
    name = f"c{time.time_ns()}"
    Row = model("bench_write", name)
    coll = client["bench_write"].get_collection(name, codec_options=lm.CODEC_OPTIONS)
    upsert = method in UPSERT_METHODS
    if upsert:
        Row.insert_dataframe(frame(rows))
        coll.create_index("sku", unique=True)
        df = frame(rows, changed_every=10)
        if method == "loom upsert rerun":
            Row.upsert_dataframe(df, on=["sku"])
    else:
        df = frame(rows)
    count_before = coll.count_documents({})
    extra: dict[str, Any] = {}
    warm_up(method, client)  # imports and first-call costs stay out of the numbers
    gc.collect()
    rss_before = reset_peak()
    cpu, wall = time.process_time(), time.perf_counter()
    if method == "loom insert_dataframe":
        result = Row.insert_dataframe(df)
        written = result.inserted
    elif method == "pymongoarrow.api.write":
        from pymongoarrow.api import write

        written = write(coll, df.to_arrow()).raw_result["insertedCount"]
    elif method == "insert_many(to_dicts)":
        written = len(coll.insert_many(df.to_dicts(), ordered=False).inserted_ids)
    elif method in ("loom upsert_dataframe", "loom upsert rerun"):
        result = Row.upsert_dataframe(df, on=["sku"])
        written = result.written
        extra = {"inserted": result.inserted, "updated": result.updated,
                 "unchanged": result.unchanged}
    elif method == "bulk_write(UpdateOne upsert)":
        ops = [UpdateOne({"sku": r["sku"]}, {"$set": r}, upsert=True) for r in df.to_dicts()]
        res = coll.bulk_write(ops, ordered=False)
        written = res.upserted_count + res.modified_count
        extra = {"inserted": res.upserted_count, "updated": res.modified_count,
                 "unchanged": res.matched_count - res.modified_count}
    else:
        raise SystemExit(f"unknown method {method}")
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    rss_after = peak_mb()
    stored = coll.count_documents({})
    client.drop_database("bench_write")
    return {"method": method, "rows": rows, "cpu": cpu, "wall": wall, "written": written,
            "stored": stored - (0 if upsert else count_before),
            "rss_growth_mb": rss_after - rss_before, "rss_before_mb": rss_before,
            "frame_mb": df.estimated_size() / 2**20, **extra}


def warm_up(method: str, client: Any) -> None:
    """Run the method once on 10 rows (another collection) before measuring."""
    from pymongo import UpdateOne

    small = frame(10)
    Warm = model("bench_write", "warm")
    scratch = client["bench_write"]["warm_raw"]
    if method.startswith("loom"):
        Warm.insert_dataframe(small)
        Warm.upsert_dataframe(small, on=["sku"])
    elif method == "pymongoarrow.api.write":
        from pymongoarrow.api import write

        write(scratch, small.to_arrow())
    elif method == "insert_many(to_dicts)":
        scratch.insert_many(small.to_dicts())
    else:
        scratch.bulk_write([UpdateOne({"sku": r["sku"]}, {"$set": r}, upsert=True)
                            for r in small.to_dicts()])


def run_child(method: str, rows: int, uri: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", method, "--n", str(rows), "--uri", uri],
        capture_output=True, text=True, check=False,
    )
    if out.returncode:
        raise SystemExit(f"{method} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(title: str, results: list[dict[str, Any]], baseline: str) -> None:
    print(f"\n{title}")
    base = next(r["cpu"] for r in results if r["method"] == baseline)
    head = (f"| {'method':<30} | {'rows':>9} | {'client CPU s':>12} | {'vs ' + baseline[:22]:>26} "
            f"| {'wall s':>7} | {'docs written':>12} | {'peak RSS growth':>15} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in results:
        counts = (f" ({r['inserted']} ins/{r['updated']} upd/{r['unchanged']} same)"
                  if "inserted" in r else "")
        print(f"| {r['method']:<30} | {r['rows']:>9,} | {r['cpu']:>12.3f} | "
              f"{r['cpu'] / base:>25.2f}x | {r['wall']:>7.1f} | {r['written']:>12,} | "
              f"{r['rss_growth_mb']:>12.1f} MB |{counts}")
    print(f"(frame in memory: {results[0]['frame_mb']:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--upsert-rows", type=int, default=100_000)
    parser.add_argument("--child")
    parser.add_argument("--n", type=int)
    parser.add_argument("--uri")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n, args.uri)))
        return
    from loom_frames.embedded import EmbeddedServer

    server = EmbeddedServer.ephemeral()
    try:
        for rows in args.rows:
            results = [run_child(m, rows, server.uri) for m in INSERT_METHODS]
            table(f"insert {rows:,} rows x 6 columns", results, "pymongoarrow.api.write")
        if args.upsert_rows:
            results = [run_child(m, args.upsert_rows, server.uri) for m in UPSERT_METHODS]
            table(f"upsert {args.upsert_rows:,} rows, 10% changed, unique index on the key",
                  results, "bulk_write(UpdateOne upsert)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
