"""Upsert key lookups: documents read per row upserted, whatever the order of the key.

A flights-like collection (default 100,000 documents) keyed by the natural compound key
``(year, month, day, carrier, flight, origin)`` with a unique index on it; its first
field has ONE value, so a lookup by the first field alone reads the whole collection.
Then ``R`` stored rows (default 5,000) are upserted unchanged, and again with 10% changed:

* ``loom upsert_dataframe`` with ``on=`` in the index's order and reversed;
* the baseline, what a user writes without us: ``bulk_write`` of
  ``UpdateOne({key}, {"$set": row}, upsert=True)`` per row.

The server (SecantusDB) runs in its own process. Printed per method (median of
``--repeat``, methods interleaved): wall seconds, client CPU seconds, **server CPU
seconds** (psutil on the server's pid), documents and bytes the server returned to the
client (command monitoring on the client), documents returned per row, and the ratio to
the baseline in the same run.

Run: ``.venv/bin/python bench/bench_upsert.py [--docs 100000] [--rows 5000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEY = ["year", "month", "day", "carrier", "flight", "origin"]
CARRIERS = ["AA", "B6", "DL", "EV", "MQ", "UA", "US", "WN", "9E", "VX", "FL", "AS", "F9", "YV",
            "HA", "OO"]
ORIGINS = ["EWR", "JFK", "LGA"]


def flights(n: int) -> Any:
    """``n`` distinct natural keys, 2013 only, with a few value columns."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(7)
    i = np.arange(n)
    day_of_year = i % 336
    return pl.DataFrame({
        "year": np.full(n, 2013),
        "month": day_of_year // 28 + 1,
        "day": day_of_year % 28 + 1,
        "carrier": [CARRIERS[k] for k in (i // 336) % len(CARRIERS)],
        "flight": (i // (336 * len(CARRIERS))) % 4000 + 1,
        "origin": [ORIGINS[k] for k in (i // (336 * len(CARRIERS) * 4000)) % 3],
        "dep_delay": np.round(rng.normal(10, 30, n), 1),
        "distance": rng.integers(100, 3000, n),
        "tailnum": [f"N{k:05d}" for k in rng.integers(0, 40000, n)],
    })


def model(db: str) -> Any:
    from loom_frames import Persistable, declare_persist_db

    @declare_persist_db(db_name=db, collection_name="flights", unique=[tuple(KEY)])
    class Flight(Persistable):
        year: int
        month: int
        day: int
        carrier: str
        flight: int
        origin: str
        dep_delay: float | None = None
        distance: int
        tailnum: str | None = None

    return Flight


def replies_listener() -> Any:
    """A pymongo command listener counting the documents and bytes reads returned."""
    from pymongo import monitoring

    class Replies(monitoring.CommandListener):
        """Documents and bytes the server returned for reads (find / getMore / aggregate)."""

        def __init__(self) -> None:
            self.docs = 0
            self.bytes = 0

        def started(self, event: Any) -> None:
            pass

        def succeeded(self, event: Any) -> None:
            import bson

            cursor = event.reply.get("cursor")
            if cursor:
                batch = cursor.get("firstBatch", cursor.get("nextBatch", []))
                self.docs += len(batch)
                self.bytes += sum(len(bson.encode(d)) for d in batch)

        def failed(self, event: Any) -> None:
            pass

    return Replies()


def server_cpu(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def measure(name: str, fn: Any, replies: Any, pid: int) -> dict[str, Any]:
    replies.docs = replies.bytes = 0
    s0, c0, w0 = server_cpu(pid), time.process_time(), time.perf_counter()
    result = fn()
    wall, cpu, scpu = time.perf_counter() - w0, time.process_time() - c0, server_cpu(pid) - s0
    return {"method": name, "wall": wall, "cpu": cpu, "server": scpu, "docs": replies.docs,
            "bytes": replies.bytes, "result": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import polars as pl
    import pymongo
    from pymongo import UpdateOne

    import loom_frames as lm
    from loom_frames.embedded import EmbeddedServer

    server = EmbeddedServer.ephemeral()
    replies = replies_listener()
    client = pymongo.MongoClient(server.uri, event_listeners=[replies], tz_aware=True,
                                 tzinfo=dt.UTC, uuidRepresentation="standard")
    lm.connect(client=client)
    try:
        Flight = model("bench_upsert")
        stored = flights(args.docs)
        Flight.insert_dataframe(stored)
        coll = Flight.collection()
        sample = stored.sample(args.rows, seed=3)
        changed = sample.with_columns(
            dep_delay=pl.when(pl.int_range(pl.len()) % 10 == 0).then(pl.col("dep_delay") + 1)
            .otherwise(pl.col("dep_delay")))
        reverse = list(reversed(KEY))

        def baseline(df: Any) -> Any:
            ops = [UpdateOne({k: r[k] for k in KEY}, {"$set": r}, upsert=True)
                   for r in df.to_dicts()]
            res = coll.bulk_write(ops, ordered=False)
            return f"{res.upserted_count} ins / {res.modified_count} upd"

        def ours(df: Any, on: list[str]) -> Any:
            r = Flight.upsert_dataframe(df, on=on)
            return f"{r.inserted} ins / {r.updated} upd / {r.unchanged} same"

        methods = [
            ("bulk_write(UpdateOne upsert), unchanged", lambda: baseline(sample)),
            ("loom upsert, key in index order, unchanged", lambda: ours(sample, KEY)),
            ("loom upsert, key reversed, unchanged", lambda: ours(sample, reverse)),
            ("bulk_write(UpdateOne upsert), 10% changed", lambda: baseline(changed)),
            ("loom upsert, key in index order, 10% changed", lambda: ours(changed, KEY)),
        ]
        for _, fn in methods:  # warm up (imports, first calls)
            fn()
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in methods}
        for _ in range(args.repeat):
            for name, fn in methods:
                ours(sample, KEY)  # every method starts from the stored values
                runs[name].append(measure(name, fn, replies, server.pid))
    finally:
        lm.disconnect()
        server.stop()

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    print(f"\nupsert {args.rows:,} rows into {args.docs:,} documents, unique index on "
          f"({', '.join(KEY)}); median of {args.repeat}")
    head = (f"| {'method':<46} | {'wall s':>7} | {'client CPU s':>12} | {'server CPU s':>12} "
            f"| {'docs back':>9} | {'bytes back':>11} | {'docs/row':>8} | {'wall':>5} "
            f"| {'srv CPU':>7} | result")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:]) )
    for name, _ in methods:
        base = ("bulk_write(UpdateOne upsert), unchanged" if "unchanged" in name
                else "bulk_write(UpdateOne upsert), 10% changed")
        print(f"| {name:<46} | {med(name, 'wall'):>7.3f} | {med(name, 'cpu'):>12.3f} | "
              f"{med(name, 'server'):>12.3f} | {med(name, 'docs'):>9,.0f} | "
              f"{med(name, 'bytes'):>11,.0f} | {med(name, 'docs') / args.rows:>8.3f} | "
              f"{med(name, 'wall') / med(base, 'wall'):>4.2f}x | "
              f"{med(name, 'server') / med(base, 'server'):>6.2f}x | {runs[name][-1]['result']}")


if __name__ == "__main__":
    main()
