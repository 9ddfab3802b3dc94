"""Shared helpers for the expression tests: the differential model and frame.

A plain module (not a conftest) so tests can import it: ``from expr_harness import ...``.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import polars as pl
from bson import ObjectId
from pymongo.collection import Collection

from loom_frames.expr import Expr, FieldRef, Kind, Resolver, SimpleResolver

FRAME_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.String(),
    "a": pl.Int64(),
    "b": pl.Float64(),
    "s": pl.String(),
    "flag": pl.Boolean(),
    "t": pl.Datetime("ms", "UTC"),
    "tags": pl.List(pl.String()),
    "nums": pl.List(pl.Int64()),
}
"""The frame every differential test builds: ``id`` is the hex string of ``_id``."""


def _list_ref(name: str, item: Kind) -> FieldRef:
    return FieldRef(name, (name,), Kind.LIST, item=FieldRef(name, (name,), item))


RESOLVER = SimpleResolver("Doc", {
    "id": FieldRef("_id", ("id",), Kind.OBJECTID),
    "a": Kind.INT,
    "b": Kind.FLOAT,
    "s": Kind.STR,
    "flag": Kind.BOOL,
    "t": Kind.DATETIME,
    "tags": _list_ref("tags", Kind.STR),
    "nums": _list_ref("nums", Kind.INT),
})
"""The model the differential documents follow (one type per field)."""


def oid(i: int) -> ObjectId:
    """A deterministic ObjectId: ``oid(1)`` is ``000000000000000000000001``."""
    return ObjectId(f"{i:024x}")


def to_frame(docs: list[dict[str, Any]]) -> pl.DataFrame:
    """The documents as a typed frame (missing and null both become null)."""
    rows = [{"id": str(d["_id"]), **{k: d.get(k) for k in FRAME_SCHEMA if k != "id"}}
            for d in docs]
    return pl.DataFrame(rows, schema=FRAME_SCHEMA)


class Differential:
    """Runs one expression on MongoDB and on Polars over the same documents."""

    def __init__(self, collection: Collection[dict[str, Any]]) -> None:
        self.collection = collection

    def load(self, docs: list[dict[str, Any]]) -> None:
        self.collection.delete_many({})
        if docs:
            self.collection.insert_many([dict(d) for d in docs])
        self.docs = docs
        self.frame = to_frame(docs)

    def mongo_ids(self, expr: Expr, resolver: Resolver | None = RESOLVER) -> set[str]:
        return {str(d["_id"]) for d in self.collection.find(expr.to_mongo(resolver), {"_id": 1})}

    def polars_ids(self, expr: Expr, resolver: Resolver | None = RESOLVER) -> set[str]:
        return set(self.frame.filter(expr.to_polars(resolver))["id"].to_list())

    def assert_same(self, expr: Expr, resolver: Resolver | None = RESOLVER) -> set[str]:
        """Assert both engines keep the same ``_id`` set (of the loaded docs); return it."""
        mongo, polars = self.mongo_ids(expr, resolver), self.polars_ids(expr, resolver)
        assert mongo == polars, (
            f"\nexpr:    {expr!r}\nbound:   {resolver is not None}\n"
            f"query:   {expr.to_mongo(resolver)!r}\npolars:  {expr.to_polars(resolver)}\n"
            f"mongo only:  {sorted(mongo - polars)}\npolars only: {sorted(polars - mongo)}\n"
            f"docs: {[d for d in self.docs if str(d['_id']) in mongo ^ polars]!r}"
        )
        return mongo

    def mongo_values(self, expr: Expr, resolver: Resolver | None = RESOLVER) -> dict[str, Any]:
        pipeline = [{"$project": {"v": expr.to_mongo_expr(resolver)}}]
        return {str(d["_id"]): d.get("v") for d in self.collection.aggregate(pipeline)}

    def polars_values(self, expr: Expr, resolver: Resolver | None = RESOLVER) -> dict[str, Any]:
        out = self.frame.select("id", expr.to_polars(resolver).alias("v"))
        values = out["v"]
        if isinstance(values.dtype, pl.Datetime) and values.dtype.time_zone not in (None, "UTC"):
            # instants, as MongoDB returns them (Python compares ambiguous local times of
            # two zones by wall clock, so 01:30 EST would equal 01:30 EDT)
            values = values.dt.convert_time_zone("UTC")
        return dict(zip(out["id"].to_list(), values.to_list(), strict=True))

    def assert_same_values(self, expr: Expr, resolver: Resolver | None = RESOLVER) -> None:
        """Assert the computed column is equal in MongoDB and Polars, row by row."""
        mongo, polars = self.mongo_values(expr, resolver), self.polars_values(expr, resolver)
        assert mongo.keys() == polars.keys()
        wrong = {k: (mongo[k], polars[k]) for k in mongo if not same_value(mongo[k], polars[k])}
        assert not wrong, (
            f"\nexpr:  {expr!r}\nbound: {resolver is not None}\n"
            f"mongo: {expr.to_mongo_expr(resolver)!r}\npolars: {expr.to_polars(resolver)}\n"
            f"(mongo, polars) by id: {wrong!r}\n"
            f"docs: {[d for d in self.docs if str(d['_id']) in wrong]!r}"
        )

    def check(self, docs: list[dict[str, Any]], expr: Expr,
              resolver: Resolver | None = RESOLVER) -> set[str]:
        """Load ``docs``, then :meth:`assert_same`."""
        self.load(docs)
        return self.assert_same(expr, resolver)


def same_value(left: Any, right: Any) -> bool:
    """Equality of computed values: NaN equals NaN, 1 equals 1.0, -0.0 equals 0.0."""
    if left is None or right is None:
        return left is None and right is None
    if isinstance(right, dt.date) and not isinstance(right, dt.datetime):  # a Date: MongoDB
        right = dt.datetime(right.year, right.month, right.day, tzinfo=dt.UTC)  # has midnight
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
        return math.isnan(right)
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return bool(left == right)
