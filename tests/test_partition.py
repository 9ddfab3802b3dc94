"""Partitions on _id: disjoint, together exactly the query's result, any kind of _id."""

from __future__ import annotations

import datetime as dt
from typing import Any

import bson
import polars as pl
import pyarrow as pa
import pytest
from bson import Decimal128, Int64, ObjectId

import loom_frames as lm
from loom_frames import Persistable, declare_persist_db, partition
from loom_frames.plan import Source
from loom_frames.query import Query


def item_model(db_name: str) -> Any:
    @declare_persist_db(db_name=db_name, collection_name="items")
    class Item(Persistable):
        name: str
        n: int
        score: float | None = None

    return Item


@pytest.fixture
def Item(db_name: str) -> Any:
    model = item_model(db_name)
    model.insert_dataframe(pl.DataFrame({"name": [f"i{k}" for k in range(1000)],
                                         "n": list(range(1000)),
                                         "score": [k / 10 for k in range(1000)]}))
    return model


def ids_of(coll: Any, query: Query) -> list[Any]:
    """The _ids a partition query selects, asked of MongoDB with its compiled filter."""
    coll = coll.with_options(codec_options=bson.CodecOptions())  # ids as stored
    command = query.compile()
    if command.operation == "find":
        return [d["_id"] for d in coll.find(dict(command.filter or {}), {"_id": 1})]
    first = dict(command.pipeline[0].get("$match", {})) if command.pipeline else {}
    return [d["_id"] for d in coll.find(first, {"_id": 1})]


def assert_exact_cover(coll: Any, parts: list[Query], expected: list[Any]) -> None:
    seen = [i for part in parts for i in ids_of(coll, part)]
    assert len(seen) == len(set(map(repr, seen)))  # disjoint
    assert sorted(map(repr, seen)) == sorted(map(repr, expected))  # together: everything


def test_partitions_cover_a_filtered_query_exactly_once(Item: Any) -> None:
    query = Item.filter(lm.fld["n"] % 3 == 0)
    parts = query.partitions(4)
    assert len(parts) == 4
    expected = [ObjectId(i) for i in query.select("id").load_polars()["id"]]
    assert_exact_cover(Item.collection(), parts, expected)
    assert sum(p.count() for p in parts) == query.count() == 334
    assert all(200 // 4 <= p.count() <= 334 for p in parts)  # sizes from $bucketAuto
    text = str(parts[1].explain())
    assert "partition 2 of 4" in text and '"$gte": {"$oid"' in text and "$type" in text


def test_computed_columns_split_and_load_the_same_rows(Item: Any) -> None:
    query = Item.filter(lm.fld["n"] < 500).with_columns(twice=lm.fld["n"] * 2).select(
        "name", "twice")
    whole = query.load_polars().sort("name")
    for k in (2, 3, 7):
        split = query.load_polars(partitions=k).sort("name")
        assert split.equals(whole) and split.schema == whole.schema
    assert query.load_table(partitions=5).num_rows == 500


@pytest.mark.parametrize("n", [1, 2, 50])
def test_mixed_kinds_of_ids_are_all_kept(db: Any, n: int) -> None:
    coll = db.mixed
    docs: list[dict[str, Any]] = [{"_id": ObjectId(), "v": k} for k in range(40)]
    docs += [{"_id": f"s{k:02d}", "v": 100 + k} for k in range(15)]
    docs += [{"_id": k, "v": 200 + k} for k in range(10)]  # int32
    docs += [{"_id": Int64(10_000_000_000 + k), "v": 300 + k} for k in range(3)]
    docs += [{"_id": 0.5, "v": 400}, {"_id": Decimal128("7.25"), "v": 401}]  # numbers too
    docs += [{"_id": dt.datetime(2024, 1, k + 1), "v": 500 + k} for k in range(4)]
    docs += [{"_id": {"a": 1}, "v": 600}, {"_id": None, "v": 601}, {"_id": True, "v": 602}]
    docs += [{"_id": bson.Binary(b"xy"), "v": 603}]
    coll.insert_many(docs)
    query = Query(Source.of_collection(db.name, "mixed", pa.schema({"v": pa.int64()})))
    parts = query.partitions(n)
    assert 1 <= len(parts) <= n
    plain = coll.with_options(codec_options=bson.CodecOptions())
    assert_exact_cover(coll, parts, [d["_id"] for d in plain.find({}, {"_id": 1})])
    assert plain.count_documents({}) == len(docs)
    values = sorted(query.load_polars(partitions=n)["v"].to_list())
    assert values == sorted(d["v"] for d in docs)
    # A filter applies inside every kind's ranges.
    some = Query(Source.of_collection(db.name, "mixed", pa.schema({"v": pa.int64()}))).filter(
        lm.fld["v"] >= 200)
    assert sorted(some.load_polars(partitions=n)["v"].to_list()) == sorted(
        d["v"] for d in docs if d["v"] >= 200)


def test_an_empty_result_is_one_partition_and_a_typed_empty_frame(db_name: str) -> None:
    Item = item_model(db_name)
    parts = Item.filter(lm.fld["n"] > 5).partitions(8)
    assert len(parts) == 1 and "one partition" in str(parts[0].explain())
    frame = Item.filter().load_polars(partitions=8)
    assert frame.height == 0 and frame.schema == Item.polars_schema()


def test_more_partitions_than_documents(db_name: str) -> None:
    Item = item_model(db_name)
    Item.insert_dataframe(pl.DataFrame({"name": ["a", "b", "c"], "n": [1, 2, 3]}))
    parts = Item.filter().partitions(50)
    assert 1 <= len(parts) <= 3
    assert_exact_cover(Item.collection(), parts, [d["_id"] for d in Item.collection().find()])
    assert sorted(Item.filter().load_polars(partitions=50)["n"].to_list()) == [1, 2, 3]


@pytest.mark.parametrize(("build", "why"), [
    (lambda q: q.sort("n"), "a sort orders the whole result"),
    (lambda q: q.limit(10), "a limit keeps the first rows"),
    (lambda q: q.sort("n").limit(10), "a sort orders the whole result"),
    (lambda q: q.skip(3), "a skip drops the first rows"),
    (lambda q: q.group_by("name").agg(total=lm.fld["n"].sum()), "group-by"),
    (lambda q: q.unique(), "group-by"),
    (lambda q: q.top_k(3, by="n"), "a sort orders the whole result"),
    (lambda q: q.sample(5), "a sample draws from the whole result"),
])
def test_a_query_needing_the_whole_result_is_one_partition_and_says_why(
    Item: Any, build: Any, why: str
) -> None:
    query = build(Item.filter(lm.fld["n"] < 100))
    (only,) = query.partitions(4)
    text = str(only.explain())
    assert "one partition: not split, because" in text and why in text
    assert only.compile() == query.compile()  # nothing added to the command
    if "sample" not in why:
        assert query.load_polars(partitions=4).equals(query.load_polars())


def test_above_the_sampling_threshold_bounds_come_from_a_sample(
    Item: Any, monkeypatch: pytest.MonkeyPatch, commands: Any
) -> None:
    monkeypatch.setattr(partition, "SAMPLE_ABOVE", 100)
    monkeypatch.setattr(partition, "SAMPLES_PER_PARTITION", 5)
    parts = Item.filter().partitions(6)
    stages = [s for c in commands.named("aggregate") for s in c["pipeline"]]
    assert {"$sample": {"size": 30}} in stages
    assert_exact_cover(Item.collection(), parts, [d["_id"] for d in Item.collection().find()])


def test_partitions_takes_a_positive_int(Item: Any) -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="int >= 1"):
            Item.filter().partitions(bad)


def test_joins_and_explodes_split_row_by_row(db_name: str) -> None:
    @declare_persist_db(db_name=db_name, collection_name="orders")
    class Order(Persistable):
        customer: str
        items: list[str] = []

    @declare_persist_db(db_name=db_name, collection_name="customers")
    class Customer(Persistable):
        code: str
        city: str

    Customer.insert_dataframe(pl.DataFrame({"code": [f"c{i}" for i in range(20)],
                                            "city": [f"city{i % 4}" for i in range(20)]}))
    Order.insert_dataframe(pl.DataFrame({"customer": [f"c{i % 25}" for i in range(300)],
                                         "items": [[f"x{j}" for j in range(i % 3)]
                                                   for i in range(300)]}))
    joined = Order.filter().join(Customer, left_on="customer", right_on="code")
    exploded = Order.filter().explode("items")
    for query in (joined, exploded):
        parts = query.partitions(3)
        assert len(parts) == 3
        whole = query.load_polars().sort(pl.all())
        assert query.load_polars(partitions=3).sort(pl.all()).equals(whole)
        assert sum(p.count() for p in parts) == whole.height
