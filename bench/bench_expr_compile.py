"""How fast expressions compile: expressions per second and one 10-term filter.

Client-side CPU only (no server). Run: ``python bench/bench_expr_compile.py``.
Each figure is the median of several timed rounds.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from loom_frames.expr import Expr, FieldRef, Kind, SimpleResolver, fld

RESOLVER = SimpleResolver("Bench", {
    "id": FieldRef("_id", ("id",), Kind.OBJECTID),
    "age": Kind.INT, "score": Kind.FLOAT, "name": Kind.STR, "email": Kind.STR,
    "active": Kind.BOOL, "ts": Kind.DATETIME, "city": Kind.STR, "n": Kind.INT,
    "tags": FieldRef("tags", ("tags",), Kind.LIST, item=FieldRef("tags", ("tags",), Kind.STR)),
})
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

CORPUS: list[Expr] = [
    fld["age"] > 25,
    (fld["age"] > 25) & (fld["active"] == True),
    fld["city"].is_in(["Oslo", "Paris", "Rome", "Lima"]),
    fld["email"].ends_with("@example.com"),
    fld["name"].str.to_lower() == "bob",
    fld["score"] > fld["age"],
    (fld["score"] * 2 + 1) >= 10,
    fld["ts"].between(T0, T0 + dt.timedelta(days=7)),
    fld["ts"].dt.hour() == 9,
    fld["tags"].list.contains("new"),
    ~(fld["n"] != 3) | fld["name"].is_null(),
    fld["score"].between(0.5, 1.5, closed="left") & fld["city"].not_in(["X"]),
]


def ten_term_filter() -> Expr:
    return (
        (fld["age"] >= 18) & (fld["age"] < 65) & (fld["active"] == True)
        & fld["city"].is_in(["Oslo", "Paris", "Rome"]) & (fld["score"] > 0.5)
        & fld["email"].ends_with("@example.com") & fld["name"].is_not_null()
        & (fld["ts"] >= T0) & fld["tags"].list.contains("vip") & (fld["n"] != 0)
    )


def per_call_us(func: Callable[[], Any], rounds: int = 7, min_time: float = 0.2) -> float:
    """Median microseconds per call over ``rounds`` rounds of at least ``min_time`` s."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            func()
        if time.perf_counter() - start >= min_time / 4:
            break
        calls *= 2
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            func()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def corpus_rate(compile_one: Callable[[Expr], Any], corpus: list[Expr] = CORPUS) -> float:
    """Expressions compiled per second over the corpus."""
    us = per_call_us(lambda: [compile_one(e) for e in corpus])
    return len(corpus) / (us / 1e6)


def main() -> None:
    import polars as pl

    big = ten_term_filter()
    bound = big.bind(RESOLVER)
    bound_corpus = [e.bind(RESOLVER) for e in CORPUS]
    rows = [
        ("to_mongo (unbound)", corpus_rate(lambda e: e.to_mongo()),
         per_call_us(big.to_mongo)),
        ("to_mongo (bind + compile)", corpus_rate(lambda e: e.to_mongo(RESOLVER)),
         per_call_us(lambda: big.to_mongo(RESOLVER))),
        ("to_mongo_expr (unbound)", corpus_rate(lambda e: e.to_mongo_expr()),
         per_call_us(big.to_mongo_expr)),
        ("to_polars (unbound)", corpus_rate(lambda e: e.to_polars()),
         per_call_us(big.to_polars)),
        ("to_polars (bind + compile)", corpus_rate(lambda e: e.to_polars(RESOLVER)),
         per_call_us(lambda: big.to_polars(RESOLVER))),
        ("to_mongo (pre-bound)", corpus_rate(lambda e: e.to_mongo(), bound_corpus),
         per_call_us(bound.to_mongo)),
        ("to_polars (pre-bound)", corpus_rate(lambda e: e.to_polars(), bound_corpus),
         per_call_us(bound.to_polars)),
        ("build 10-term expression", float("nan"), per_call_us(ten_term_filter)),
        ("bind 10-term expression", float("nan"), per_call_us(lambda: big.bind(RESOLVER))),
    ]
    print(f"loom_frames.expr compile benchmark (polars {pl.__version__}; corpus of "
          f"{len(CORPUS)} expressions; median of 7 rounds)")
    print(f"{'operation':<28} {'expressions/s':>14} {'10-term filter (us)':>20}")
    print("-" * 64)
    for name, rate, us in rows:
        rate_text = "-" if math.isnan(rate) else f"{rate:,.0f}"
        print(f"{name:<28} {rate_text:>14} {us:>20.1f}")


if __name__ == "__main__":
    main()
