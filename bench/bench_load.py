"""Client cost of loading frames: loom-frames' find_table vs pymongoarrow, same query.

Starts SecantusDB as its own process (``secantusd-py``, in-memory storage), inserts
N documents (default 100,000) of an 8-field model, then for a full scan and a
1%-selective filter measures, per method:

* client CPU seconds (``time.process_time`` of this process; the server is another
  process, so its work is not counted), median of the repetitions;
* wall seconds (includes the server's work, e.g. evaluating the report expression);
* documents and bytes returned (bytes: the raw BSON batches the same command returns);
* the ratio of client CPU to the pymongoarrow baseline measured in the same run, with
  the same filter and the same schema (target: <= 1.10).

The baseline reads the model's storage schema (ObjectId as pymongoarrow's extension
type); loom-frames additionally converts ``_id`` to a hex string column ``id`` and checks,
on the client, the cells that came back null and the doubles an integer column would
truncate (the same command: the user's query and the plain projection). The lines after
the table give the cost of the error path. ``bench_read.py`` adds wall time and the
server's CPU, and the other loaders.

Run: ``.venv/bin/python bench/bench_load.py [--docs 100000] [--repeat 7]``
"""

import argparse
import datetime as dt
import enum
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pymongo
from bson import ObjectId
from pymongoarrow.api import Schema, find_arrow_all, find_polars_all

import loom_frames as lm
from loom_frames import Persistable, declare_persist_db
from loom_frames.embedded import EmbeddedServer
from loom_frames.read.decode import storage_type
from loom_frames.read.frames import find_table, to_frame
from loom_frames.schema import arrow_schema, columns_from_arrow, projection_of


class Status(enum.Enum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    BANNED = "banned"


@declare_persist_db(db_name="bench", collection_name="users")
class User(Persistable):
    """8 fields: id, created_at, updated_time (inherited) + 5 declared here."""

    name: str
    age: int
    score: float
    is_active: bool
    status: Status


def make_docs(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    statuses = [s.value for s in Status]
    docs = []
    for i in range(n):
        when = base + dt.timedelta(seconds=rng.randrange(0, 365 * 86400), milliseconds=i % 1000)
        docs.append(
            {
                "_id": ObjectId(),
                "created_at": when,
                "updated_time": when + dt.timedelta(minutes=rng.randrange(0, 10_000)),
                "name": f"user-{i:07d}-{rng.randrange(10**6):06d}",
                "age": rng.randrange(0, 100),
                "score": rng.random() * 100,
                "is_active": rng.random() < 0.7,
                "status": rng.choice(statuses),
            }
        )
    return docs


def raw_bytes(coll: Any, filter: dict[str, Any], projection: dict[str, Any]) -> tuple[int, int]:
    """(documents, bytes) the command returns, counted from its raw batches."""
    import bson

    docs = size = 0
    for batch in coll.find_raw_batches(filter, projection=projection):
        size += len(batch)
        docs += len(bson.decode_all(batch))
    return docs, size


def measure(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    cpu, wall = [], []
    result = None
    for _ in range(repeat):
        gc.collect()
        c0, w0 = time.process_time(), time.perf_counter()
        result = fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        del result
    result = fn()
    return statistics.median(cpu), statistics.median(wall), result


def main(run: Callable[[str, int, int], None], doc: str, repeat: int) -> None:
    """Parse ``--docs``/``--repeat``, then ``run(uri, docs, repeat)`` against SecantusDB
    started as its own process (in memory), stopped afterwards."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=repeat)
    args = parser.parse_args()
    server = EmbeddedServer.ephemeral()
    try:
        run(server.uri, args.docs, args.repeat)
    finally:
        server.stop()


def run(uri: str, n: int, repeat: int) -> None:
    client: pymongo.MongoClient[Any] = lm.connect(uri)
    coll = User.collection()
    t0 = time.perf_counter()
    docs = make_docs(n)
    for i in range(0, n, 10_000):
        coll.insert_many(docs[i : i + 10_000], ordered=False)
    coll.create_index("age")  # the 1% filter is served by an index, as it would be
    print(
        f"inserted {coll.estimated_document_count():,} documents in "
        f"{time.perf_counter() - t0:.1f}s (server: secantusd-py, own process; index on age)"
    )
    del docs

    schema = arrow_schema(User)
    storage = Schema({c.key: storage_type(c) for c in columns_from_arrow(schema)})
    base_projection = storage._get_projection()
    loom_projection = projection_of(columns_from_arrow(schema))

    filters = {"all": ({}, repeat), "1%": ({"age": 7}, repeat * 6)}
    methods: dict[str, tuple[str, Callable[[dict[str, Any]], Any], dict[str, Any]]] = {
        "pymongoarrow find_arrow_all": (
            "arrow",
            lambda f: find_arrow_all(coll, f, schema=storage),
            base_projection,
        ),
        "loom find_table -> Arrow": (
            "arrow",
            lambda f: find_table(coll, schema, filter=f),
            loom_projection,
        ),
        "pymongoarrow find_polars_all": (
            "polars",
            lambda f: find_polars_all(coll, f, schema=storage),
            base_projection,
        ),
        "loom find_table -> Polars": (
            "polars",
            lambda f: to_frame(find_table(coll, schema, filter=f), "polars"),
            loom_projection,
        ),
        "loom find_table -> pandas": (
            "pandas",
            lambda f: to_frame(find_table(coll, schema, filter=f), "pandas"),
            loom_projection,
        ),
    }
    baseline = {"arrow": "pymongoarrow find_arrow_all", "polars": "pymongoarrow find_polars_all"}

    header = (
        f"{'filter':<6} {'method':<30} {'cpu s':>8} {'cpu s/100k':>11} {'wall s':>8} "
        f"{'docs':>8} {'bytes':>11} {'ratio':>6}"
    )
    print()
    print(f"client CPU: median of {repeat} runs (1%: {repeat * 6}), methods interleaved run by run")
    print(header)
    print("-" * len(header))
    for label, (filt, runs) in filters.items():
        for _, fn, _ in methods.values():  # warm up (imports, server caches)
            fn(filt)
        cpu: dict[str, list[float]] = {name: [] for name in methods}
        wall: dict[str, list[float]] = {name: [] for name in methods}
        rows: dict[str, int] = {}
        for _ in range(runs):
            for name, (_, fn, _) in methods.items():
                gc.collect()
                c0, w0 = time.process_time(), time.perf_counter()
                result = fn(filt)
                cpu[name].append(time.process_time() - c0)
                wall[name].append(time.perf_counter() - w0)
                rows[name] = len(result)
                del result
        med = {name: statistics.median(v) for name, v in cpu.items()}
        for name, (target, _, projection) in methods.items():
            ndocs, nbytes = raw_bytes(coll, filt, projection)
            assert rows[name] == ndocs, (name, rows[name], ndocs)
            base = baseline.get(target)
            ratio = f"{med[name] / med[base]:.2f}" if base is not None else "-"
            per_100k = med[name] / ndocs * 100_000 if ndocs else float("nan")
            print(
                f"{label:<6} {name:<30} {med[name]:>8.4f} {per_100k:>11.4f} "
                f"{statistics.median(wall[name]):>8.3f} {ndocs:>8,} {nbytes:>11,} {ratio:>6}"
            )
        print()

    # the cost of detection: one wrong-typed value in the last document
    bad_id = coll.find_one(sort=[("_id", -1)], projection={"_id": 1})["_id"]
    coll.update_one({"_id": bad_id}, {"$set": {"age": 41.5}})
    cpu, wall, _ = measure(lambda: _expect_error(lambda: find_table(coll, schema)), repeat)
    print(
        f"wrong type in 1 of {n:,} docs, on_invalid='raise': error after cpu {cpu:.4f}s, "
        f"wall {wall:.3f}s (found in the raw batch, no second query)"
    )
    cpu, wall, table = measure(lambda: find_table(coll, schema, on_invalid="null"), repeat)
    assert table["age"].null_count == 1
    print(f"wrong type in 1 of {n:,} docs, on_invalid='null':  cpu {cpu:.4f}s, wall {wall:.3f}s")
    coll.update_one({"_id": bad_id}, {"$set": {"age": 41}})
    client.close()


def _expect_error(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except lm.DocumentValidationError:
        return
    raise AssertionError("expected a DocumentValidationError")


if __name__ == "__main__":
    main(run, __doc__, repeat=7)
