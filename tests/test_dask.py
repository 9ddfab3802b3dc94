"""Dask: queries as Dask DataFrames and Dask DataFrames written back, on a real
``distributed.LocalCluster`` whose workers are separate processes (they connect to the
test server with the session's URI, credentials included)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import bson
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from bson import ObjectId

import loom_frames as lm
from loom_frames import Persistable, StrLower, declare_persist_db, dask_io
from loom_frames.plan import Source
from loom_frames.query import Query

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Two worker processes, one thread each; the default scheduler while it runs."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as local, \
            distributed.Client(local) as dask_client:
        yield dask_client


def user_model(db_name: str) -> Any:
    @declare_persist_db(db_name=db_name, collection_name="users", unique=["email"])
    class User(Persistable):
        name: str
        email: StrLower
        age: int
        score: float | None = None

    return User


def users(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({
        "name": [f"u{k}" for k in range(start, start + n)],
        "email": [f"U{k}@X.org" for k in range(start, start + n)],
        "age": [k % 90 for k in range(start, start + n)],
        "score": [None if k % 7 == 0 else k / 3 for k in range(start, start + n)],
    })


def rows(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    """A frame as a sorted list of rows (the order of partitions is not the order of one
    load), with missing values made comparable."""
    return sorted(tuple(None if pd.isna(v) else v for v in row)
                  for row in frame.itertuples(index=False))


def test_to_dask_equals_load_dataframe_on_worker_processes(cluster: Any, db_name: str) -> None:
    User = user_model(db_name)
    User.insert_dataframe(users(3000))
    query = User.filter(lm.fld["age"] >= 30)
    ddf = query.to_dask(npartitions=4)
    assert ddf.npartitions == 4
    whole = query.load_dataframe()
    got = ddf.compute()
    assert dict(got.dtypes) == dict(whole.dtypes) == dict(ddf.dtypes)  # meta too
    assert rows(got) == rows(whole) and len(got) == len(whole) == 1980  # 33 x 60 ages
    workers = cluster.run(lambda: __import__("os").getpid())
    assert len(set(workers.values())) == 2  # separate processes did the loading
    by_age = ddf.groupby("age").name.count().compute()
    assert int(by_age.sum()) == 1980


def test_a_column_selection_in_dask_reaches_the_projection(
    db_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    User = user_model(db_name)
    User.insert_dataframe(users(50))
    calls: list[Any] = []
    read = dask_io.read_part

    def watched(part: Any, columns: list[str] | None = None) -> Any:
        calls.append(columns)
        return read(part, columns=columns)

    monkeypatch.setattr(dask_io, "read_part", watched)
    ddf = User.filter().to_dask(npartitions=2)
    names = ddf[["name", "age"]].compute(scheduler="synchronous")
    assert list(names.columns) == ["name", "age"] and len(names) == 50
    assert calls and all(c == ["name", "age"] for c in calls)
    projected = dask_io.select(User.filter().compile(), ["name"]).to_dict()["projection"]
    assert projected == {"name": 1, "_id": 0}


def test_an_empty_collection_and_more_partitions_than_rows(cluster: Any, db_name: str) -> None:
    User = user_model(db_name)
    empty = User.filter().to_dask(npartitions=8)
    assert empty.npartitions == 1 and len(empty.compute()) == 0
    assert dict(empty.compute().dtypes) == dict(User.filter().load_dataframe().dtypes)
    User.insert_dataframe(users(3))
    few = User.filter().to_dask(npartitions=20)
    assert 1 <= few.npartitions <= 3 and rows(few.compute()) == rows(User.filter().load_dataframe())


def test_mixed_kinds_of_ids_lose_nothing(cluster: Any, db: Any) -> None:
    docs: list[dict[str, Any]] = [{"_id": ObjectId(), "v": k} for k in range(30)]
    docs += [{"_id": f"k{k}", "v": 100 + k} for k in range(20)]
    docs += [{"_id": k, "v": 200 + k} for k in range(10)] + [{"_id": 2.5, "v": 300}]
    docs += [{"_id": {"nested": 1}, "v": 400}, {"_id": bson.Binary(b"\x01"), "v": 401}]
    db.mixed.insert_many(docs)
    query = Query(Source.of_collection(db.name, "mixed", pa.schema({"v": pa.int64()})))
    ddf = query.to_dask(npartitions=5)
    assert ddf.npartitions == 5
    assert sorted(ddf.compute()["v"].tolist()) == sorted(d["v"] for d in docs)


def test_a_query_needing_the_whole_result_is_one_partition(cluster: Any, db_name: str) -> None:
    User = user_model(db_name)
    User.insert_dataframe(users(100))
    top = User.filter().sort("age", descending=True).limit(5)
    ddf = top.to_dask(npartitions=4)
    assert ddf.npartitions == 1
    assert ddf.compute()["age"].tolist() == top.load_dataframe()["age"].tolist()


def test_a_dask_frame_is_written_partition_by_partition_and_an_upsert_rerun_changes_nothing(
    cluster: Any, db_name: str
) -> None:
    User = user_model(db_name)
    ddf = dd.from_pandas(users(1200), npartitions=4)
    first = User.insert_dataframe(ddf)
    assert (first.inserted, first.rows, first.ok) == (1200, 1200, True)
    assert User.collection().count_documents({}) == 1200
    again = User.upsert_dataframe(ddf, on=["email"])
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 1200)
    changed = dd.from_pandas(users(1200).assign(age=lambda f: f.age + 1), npartitions=3)
    third = User.upsert_dataframe(changed, on="email")
    assert (third.updated, third.unchanged) == (1200, 0)
    assert User.collection().count_documents({}) == 1200  # no duplicates
    stored = User.filter().load_dataframe()
    assert sorted(stored.age.tolist()) == sorted((users(1200).age + 1).tolist())
    assert isinstance(first.ids, pd.Series) and first.ids.nunique() == 1200


def test_failed_rows_of_a_dask_write_say_their_partition(cluster: Any, db_name: str) -> None:
    User = user_model(db_name)
    User.insert_dataframe(users(1, start=250))  # u250 is in partition 2 (rows 200-299)
    ddf = dd.from_pandas(users(400), npartitions=4)
    with pytest.raises(lm.FrameWriteError) as info:
        User.insert_dataframe(ddf)
    result = info.value.result
    assert result.rows == 400 and result.inserted == 399
    (failed,) = result.failed
    assert (failed.partition, failed.row, failed.code) == (2, 50, 11000)
    assert "row 50 of partition 2" in str(info.value)


def test_to_dask_needs_a_uri_workers_can_use(db_name: str, mongo_uri: str, client: Any) -> None:
    import pymongo

    User = user_model(db_name)
    lm.connect(client=pymongo.MongoClient(mongo_uri))  # a client made elsewhere: no URI known
    try:
        with pytest.raises(lm.PlanError, match="worker processes can connect"):
            User.filter().to_dask(npartitions=2)
        ddf = User.filter().to_dask(npartitions=2, uri=mongo_uri)
        assert ddf.npartitions == 1  # an empty collection
    finally:
        lm.connect(client=client)  # made by lm.connect(uri): its URI is known again
    assert User.filter().to_dask(npartitions=2).npartitions == 1


def test_polars_frames_through_dask_partitions_match_one_load(cluster: Any, db_name: str) -> None:
    User = user_model(db_name)
    User.insert_dataframe(pl.from_pandas(users(500)))
    ddf = User.filter(lm.fld["score"].is_not_null()).to_dask(npartitions=3)
    assert rows(ddf.compute()) == rows(User.filter(lm.fld["score"].is_not_null()).load_dataframe())
