"""The read path beside its baselines, in one run: wall, client CPU, SERVER CPU, bytes.

Server: SecantusDB started as its own process (in memory); its CPU is read with psutil
on its pid, so work pushed onto the server is counted (client CPU alone hides it). Data:
N documents (default 100,000) of the 8-field ``User`` model of ``bench_load.py``, and a
copy in which 1% of the documents hold a value of the wrong type (a string or a double
with a fraction in ``age``, a string in ``score``, an unknown ``status``).

Pairs, each measured interleaved (baseline, ours, ours, baseline, ...; median of
``--repeat`` runs):

* clean: ``load_polars()`` vs ``pymongoarrow.api.find_polars_all``, ``load_table()``
  and ``iter_batches()`` vs ``find_arrow_all``, ``scan().collect()`` vs
  ``find_polars_all`` (same schema); ``load_many()`` vs pymongo + ``model_validate`` of a
  plain Pydantic ``BaseModel`` with the same fields (not our ``Persistable``);
* dirty (1% wrong types), ``on_invalid="null"``: the same frame loaders vs the
  pymongoarrow calls with ``allow_invalid=True`` (which null wrong types silently, and
  truncate 41.5 to 41: the baseline does less than we do).

Figures: wall seconds, client CPU seconds (``time.process_time``), server CPU seconds
(psutil ``cpu_times`` of the server process, user + system), documents and bytes the
server returned (counted from the replies in a separate, untimed run), and each as a
ratio to the pair's baseline. The issue's targets are printed beside them.

Run: ``.venv/bin/python bench/bench_read.py [--docs 100000] [--repeat 5] [--only load_polars]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import pymongo
from bench_load import Status, User, make_docs
from bench_query import Returned
from bson import ObjectId
from pydantic import BaseModel, ConfigDict, Field
from pymongoarrow.api import Schema, find_arrow_all, find_polars_all

import loom_frames as lm
from loom_frames import Persistable, declare_persist_db
from loom_frames.embedded import EmbeddedServer
from loom_frames.read.decode import storage_type


@declare_persist_db(db_name="bench", collection_name="users_dirty")
class DirtyUser(Persistable):
    """``User``'s fields, over the collection with 1% wrong-typed documents."""

    name: str
    age: int
    score: float
    is_active: bool
    status: Status


class PlainUser(BaseModel):
    """The baseline's model: the same fields in a plain Pydantic ``BaseModel``."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)
    id: ObjectId = Field(alias="_id")
    created_at: dt.datetime | None = None
    updated_time: dt.datetime | None = None
    name: str
    age: int
    score: float
    is_active: bool
    status: Status


def dirty(docs: list[dict[str, Any]], seed: int = 11) -> list[dict[str, Any]]:
    """The documents with 1% of them holding one value of the wrong type."""
    rng = random.Random(seed)
    spoil = [lambda d: d.update(age="old"), lambda d: d.update(age=d["age"] + 0.5),
             lambda d: d.update(score="high"), lambda d: d.update(status="unknown")]
    out = [dict(d) for d in docs]
    for i in rng.sample(range(len(out)), len(out) // 100):
        rng.choice(spoil)(out[i])
    return out


def run_once(fn: Callable[[], Any], server: psutil.Process) -> tuple[float, float, float]:
    gc.collect()
    s0 = server.cpu_times()
    c0, w0 = time.process_time(), time.perf_counter()
    result = fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    s1 = server.cpu_times()
    del result
    return wall, cpu, (s1.user - s0.user) + (s1.system - s0.system)


def main() -> None:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated words: measure only "
                        "the pairs whose loader contains one (e.g. load_polars,scan)")
    args = parser.parse_args()
    server = EmbeddedServer.ephemeral()
    try:
        bench(server, args.docs, args.repeat, [w for w in args.only.split(",") if w])
    finally:
        server.stop()


def bench(server: EmbeddedServer, n: int, repeat: int, only: list[str]) -> None:
    proc = psutil.Process(server.pid)
    client: pymongo.MongoClient[Any] = lm.connect(server.uri)
    listener = Returned()
    counting: pymongo.MongoClient[Any] = pymongo.MongoClient(
        server.uri, event_listeners=[listener], tz_aware=True, tzinfo=dt.UTC,
        uuidRepresentation="standard")
    docs = make_docs(n)
    for model, batch in ((User, docs), (DirtyUser, dirty(docs))):
        coll = model.collection()
        for i in range(0, n, 10_000):
            coll.insert_many(batch[i: i + 10_000], ordered=False)
    del docs
    storage = Schema({c.key: storage_type(c) for c in User.filter().compile().columns or ()})

    def pairs(db: Any) -> list[tuple[str, str, Callable[[], Any], str, Callable[[], Any], str]]:
        clean, spoilt = db["users"], db["users_dirty"]
        q, d = User.filter(), DirtyUser.filter()
        projection = q.compile().projection
        return [
            ("clean", "find_polars_all", lambda: find_polars_all(clean, {}, schema=storage),
             "load_polars()", q.load_polars, "wall,server <= 1.05; cpu <= 1.10"),
            ("clean", "find_arrow_all", lambda: find_arrow_all(clean, {}, schema=storage),
             "load_table()", q.load_table, "wall,server <= 1.05; cpu <= 1.10"),
            ("clean", "find_arrow_all", lambda: find_arrow_all(clean, {}, schema=storage),
             "iter_batches()", lambda: list(q.iter_batches()), "wall,server <= 1.05; cpu <= 1.10"),
            ("clean", "find_polars_all", lambda: find_polars_all(clean, {}, schema=storage),
             "scan().collect()", lambda: User.scan().collect(), "wall,server <= 1.05; cpu <= 1.10"),
            ("clean", "pymongo + BaseModel.model_validate",
             lambda: [PlainUser.model_validate(x) for x in clean.find({})],
             "load_many()", q.load_many, "cpu <= 1.0"),
            ("clean", "  the same, with load_many's projection",
             lambda: [PlainUser.model_validate(x) for x in clean.find({}, projection)],
             "load_many()", q.load_many, "(reference)"),
            ("1% wrong", "find_polars_all(allow_invalid)",
             lambda: find_polars_all(spoilt, {}, schema=storage, allow_invalid=True),
             "load_polars(on_invalid='null')", lambda: d.load_polars(on_invalid="null"),
             "wall,server <= 1.05; cpu <= 1.5"),
            ("1% wrong", "find_arrow_all(allow_invalid)",
             lambda: find_arrow_all(spoilt, {}, schema=storage, allow_invalid=True),
             "iter_batches(on_invalid='null')",
             lambda: list(d.iter_batches(on_invalid="null")), "wall,server <= 1.05; cpu <= 1.5"),
            ("1% wrong", "find_polars_all(allow_invalid)",
             lambda: find_polars_all(spoilt, {}, schema=storage, allow_invalid=True),
             "scan(on_invalid='null').collect()",
             lambda: DirtyUser.scan(on_invalid="null").collect(),
             "wall,server <= 1.05; cpu <= 1.5"),
        ]

    timed = pairs(client["bench"])
    print(f"{n:,} documents per collection (SecantusDB, its own process, pid {server.pid}); "
          f"median of {repeat} interleaved runs; machine: {psutil.cpu_count()} cores, "
          f"load average {', '.join(f'{x:.2f}' for x in psutil.getloadavg())}\n")
    header = (f"{'data':<9} {'method':<36} {'wall s':>7} {'cpu s':>7} {'server s':>8} "
              f"{'docs':>8} {'bytes':>11} {'wall x':>6} {'cpu x':>6} {'srv x':>6}  target")
    print(header)
    print("-" * len(header))
    for index, (label, base_name, base, name, ours, target) in enumerate(timed):
        if only and not any(word in name for word in only):
            continue
        base(), ours()  # warm up
        runs: dict[str, list[tuple[float, float, float]]] = {"base": [], "ours": []}
        for r in range(repeat):
            order = [("base", base), ("ours", ours)]
            for key, fn in order if r % 2 == 0 else reversed(order):
                runs[key].append(run_once(fn, proc))
        med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3))
               for k, v in runs.items()}
        lm.connect(client=counting)  # untimed: what the server returned
        counted = pairs(counting["bench"])[index]
        sizes = {}
        for key, fn in (("base", counted[2]), ("ours", counted[4])):
            listener.docs = listener.bytes = 0
            fn()
            sizes[key] = (listener.docs, listener.bytes)
        lm.connect(client=client)
        for key, shown in (("base", base_name), ("ours", name)):
            wall, cpu, srv = med[key]
            bw, bc, bs = med["base"]
            ratios = (f"{'base':>6} {'':>6} {'':>6}" if key == "base" else
                      f"{wall / bw:>6.2f} {cpu / bc:>6.2f} {srv / bs:>6.2f}")
            print(f"{label:<9} {shown:<36} {wall:>7.3f} {cpu:>7.3f} {srv:>8.3f} "
                  f"{sizes[key][0]:>8,} {sizes[key][1]:>11,} {ratios}"
                  + (f"  {target}" if key == "ours" else ""))
    if only:
        counting.close()
        return
    # n_unique: two $group stages (was $addToSet: the whole set in one document)
    query = User.filter().group_by("status").agg(names=lm.fld["name"].n_unique(),
                                                 ages=lm.fld["age"].n_unique())
    wall, cpu, srv = run_once(query.load_polars, proc)
    print(f"\ngroup_by('status').agg(n_unique of name, n_unique of age) over {n:,} documents:"
          f" wall {wall:.2f}s, client cpu {cpu:.3f}s, server cpu {srv:.2f}s")
    counting.close()


if __name__ == "__main__":
    main()
