"""Counters and partial updates under real concurrency (several processes)."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

from loom_frames import IncrCounter, Persistable, declare_persist_db

N_PROCESSES = 4
K_INCREMENTS = 25


def _model(db_name: str) -> type[Persistable]:
    @declare_persist_db(db_name=db_name, collection_name="counters")
    class Hits(Persistable):
        name: str
        hits: IncrCounter = 0
        touched_by: list[int] = []

    return Hits


def _worker(uri: str, db_name: str, oid: str, k: int) -> None:
    import loom_frames as lm

    lm.connect(uri)
    Hits = _model(db_name)
    obj = Hits.from_id(oid)
    assert obj is not None
    for _ in range(k):
        obj.hits += 1
        obj.persist()


def test_processes_incrementing_one_counter_lose_nothing(mongo_uri: str, db_name: str, db: Any) -> None:
    Hits = _model(db_name)
    obj = Hits(name="page").persist()
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(mongo_uri, db_name, str(obj.id), K_INCREMENTS))
        for _ in range(N_PROCESSES)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert db.counters.find_one({"_id": obj.id})["hits"] == N_PROCESSES * K_INCREMENTS
    assert Hits.from_id(obj.id).hits == N_PROCESSES * K_INCREMENTS


def _bulk_worker(uri: str, db_name: str, oids: list[str], k: int) -> None:
    import loom_frames as lm

    lm.connect(uri)
    Hits = _model(db_name)
    objs = [Hits.from_id(oid) for oid in oids]
    for _ in range(k):
        for obj in objs:
            obj.hits += 1  # type: ignore[union-attr]
        Hits.persist_many(objs)  # type: ignore[arg-type]


def test_processes_bulk_incrementing_many_counters_lose_nothing(
    mongo_uri: str, db_name: str, db: Any
) -> None:
    Hits = _model(db_name)
    objs = [Hits(name=f"page{i}").persist() for i in range(5)]
    ctx = mp.get_context("spawn")
    oids = [str(o.id) for o in objs]
    procs = [ctx.Process(target=_bulk_worker, args=(mongo_uri, db_name, oids, 10))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert [d["hits"] for d in db.counters.find(sort=[("_id", 1)])] == [30] * 5
