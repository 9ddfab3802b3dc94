"""Client cost of the public query API, each beside its baseline in the same run.

Server: SecantusDB as its own process (``secantusd-py``, in memory). N documents
(default 100,000) of the 8-field ``User`` model of ``bench_load.py``. Rows:

* ``load_table`` / ``load_polars`` vs ``pymongoarrow.api.find_arrow_all`` /
  ``find_polars_all`` with the same filter and the storage schema (target <= 1.10x);
* ``load_many`` vs pymongo dicts + ``User.model_validate`` per document (target <= 1.0x);
* a group-by over all documents: documents returned = groups;
* a 1%-selective filter: documents returned = 1% of the collection.

Figures: client CPU seconds (``time.process_time``, median of ``--repeat`` runs; each
method and its baseline run in turn, so a drift in the machine's speed hits both), per
100k documents scanned, documents and bytes the server returned (counted by a command
listener from the replies), ratio to the row's baseline.

Run: ``.venv/bin/python bench/bench_query.py [--docs 100000] [--repeat 5]``
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bson  # noqa: E402
import pymongo  # noqa: E402
from bench_load import User, main, make_docs  # noqa: E402
from pymongo import monitoring  # noqa: E402
from pymongoarrow.api import Schema, find_arrow_all, find_polars_all  # noqa: E402

import loom_frames as lm  # noqa: E402
from loom_frames import fld  # noqa: E402
from loom_frames.read.decode import storage_type  # noqa: E402
from loom_frames.schema import columns_from_arrow  # noqa: E402


class Returned(monitoring.CommandListener):
    """Documents and bytes in the server's replies (raw batches decoded)."""

    def __init__(self) -> None:
        self.docs = 0
        self.bytes = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor")
        if not cursor:
            return
        for item in cursor.get("firstBatch", cursor.get("nextBatch", [])):
            if isinstance(item, bytes):
                self.bytes += len(item)
                self.docs += len(bson.decode_all(item))
            else:
                self.bytes += len(bson.encode(item))
                self.docs += 1

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def reset(self) -> None:
        self.docs = self.bytes = 0


def interleaved(fns: list[Callable[[], Any]], repeat: int) -> list[float]:
    """Median client CPU seconds of each function, run in turn ``repeat`` times."""
    for fn in fns:
        fn()  # warm up
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            gc.collect()
            start = time.process_time()
            result = fn()
            cpu[i].append(time.process_time() - start)
            del result
    return [statistics.median(c) for c in cpu]


def run(uri: str, n: int, repeat: int) -> None:
    listener = Returned()
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        uri, event_listeners=[listener], tz_aware=True, uuidRepresentation="standard"
    )
    lm.connect(client=client)
    coll = User.collection()
    coll.drop()
    coll = User.collection()
    docs = make_docs(n)
    for i in range(0, n, 10_000):
        coll.insert_many(docs[i : i + 10_000], ordered=False)
    del docs
    print(f"{coll.estimated_document_count():,} documents in {coll.full_name} "
          "(server: secantusd-py, its own process)\n")

    storage = Schema({c.key: storage_type(c) for c in columns_from_arrow(User.arrow_schema())})
    selective = fld["age"] == 7  # ~1% of the documents
    selective_doc = {"age": 7}

    def validate_each() -> list[User]:
        return [User.model_validate(d) for d in coll.find(selective_doc)]

    group_by = User.filter().group_by("status", "is_active").agg(
        n=fld["age"].count(), mean_age=fld["age"].mean(), max_score=fld["score"].max(),
        first=fld["name"].first())
    # (rows, baseline name, baseline, ours name, ours): each pair is measured interleaved
    # (baseline, ours, baseline, ours, ...) so drift in the machine's speed hits both.
    pairs: list[tuple[str, str, Callable[[], Any], str, Callable[[], Any]]] = [
        ("1% filter", "pymongoarrow find_arrow_all",
         lambda: find_arrow_all(coll, selective_doc, schema=storage),
         "load_table", lambda: User.filter(selective).load_table()),
        ("1% filter", "pymongoarrow find_polars_all",
         lambda: find_polars_all(coll, selective_doc, schema=storage),
         "load_polars", lambda: User.filter(selective).load_polars()),
        ("1% filter", "pymongo + model_validate", validate_each,
         "load_many", lambda: User.filter(selective).load_many()),
        ("all", "pymongoarrow find_arrow_all", lambda: find_arrow_all(coll, {}, schema=storage),
         "load_table", lambda: User.filter().load_table()),
        ("all", "pymongoarrow find_polars_all",
         lambda: find_polars_all(coll, {}, schema=storage),
         "load_polars", lambda: User.filter().load_polars()),
        ("all", "pymongo + model_validate",
         lambda: [User.model_validate(d) for d in coll.find({})],
         "load_many", lambda: User.filter().load_many()),
    ]
    header = (f"{'rows':<10} {'method':<42} {'cpu s':>8} {'cpu s/100k':>10} {'docs back':>10} "
              f"{'bytes back':>12} {'ratio':>6}")
    print(header)
    print("-" * len(header))

    def row(label: str, name: str, cpu: float, fn: Callable[[], Any], ratio: str) -> None:
        listener.reset()
        fn()
        print(f"{label:<10} {name:<42} {cpu:>8.4f} {cpu / n * 100_000:>10.4f} "
              f"{listener.docs:>10,} {listener.bytes:>12,} {ratio:>6}")

    for label, base_name, base_fn, name, fn in pairs:
        base_cpu, cpu = interleaved([base_fn, fn], repeat)
        row(label, base_name, base_cpu, base_fn, "base")
        row(label, name, cpu, fn, f"{cpu / base_cpu:.2f}")
    (cpu,) = interleaved([group_by.load_polars], repeat)
    row("group-by", "group_by(status, is_active).agg(4 aggs)", cpu, group_by.load_polars, "-")
    time.sleep(0)
    client.close()


if __name__ == "__main__":
    main(run, __doc__, repeat=5)
