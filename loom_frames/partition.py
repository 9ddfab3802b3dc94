"""Splitting a query into partitions on ``_id``: disjoint, together exactly its result.

``query.partitions(n)`` asks MongoDB for ``_id`` bounds over the query's own filter and
returns up to ``n`` queries, each the original one with a range on ``_id`` in front of
its filter, the way Spark's MongoDB connector and Ray Data's Mongo source split a
collection:

* bounds come from ``$bucketAuto`` on ``_id`` over the matching documents, or, in a
  collection of more than :data:`SAMPLE_ABOVE` documents, over a ``$sample`` of them
  (exact bounds would sort every ``_id``). Bounds only decide the sizes: the first range is open below
  and the last open above, so every document falls in exactly one partition whatever
  the bounds, including documents written after they were computed;
* MongoDB compares ``_id`` ranges only within one kind of value ("type bracketing": an
  ObjectId range never matches a string id), so each kind present gets ranges of its
  own, counted by the server (all numbers are one kind), and every range names its kind
  with ``$type``: a collection holding ObjectId, string and integer ids loses nothing;
* a query whose answer depends on the whole result is never split: a sort (the order
  is over all rows), a skip or limit, a group-by, a raw pipeline. It is one partition,
  and its ``explain()`` says why. What can be split: filters, selections, computed
  columns, explodes and joins (each row on its own).

>>> Query.partitions(User.filter().limit(5), 4)  # doctest: +SKIP
[<Query User> ... one partition: not split, a limit keeps the first rows of the whole result]
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .connection import driver_errors
from .plan import Command, Explode, Filter, Join, Select, WithColumns, _and

if TYPE_CHECKING:
    import pyarrow as pa
    from pymongo.collection import Collection

    from .query import Query

__all__ = ["SAMPLE_ABOVE", "load_split", "restrict", "split", "unsplittable"]

SAMPLE_ABOVE = 200_000
"""Above this many documents in the collection (its metadata count), bounds come from a
``$sample`` of the matching documents: exact bounds would sort every ``_id``."""

SAMPLES_PER_PARTITION = 200
"""Sampled ``_id`` values per partition (Spark's sample partitioner uses 10-100)."""

# Kinds of _id values MongoDB compares with one another ($type aliases); the rest (null,
# a sub-document, a regex, ...) is one more kind, "other", never split.
_BRACKETS: dict[str, tuple[str, ...]] = {
    "number": ("int", "long", "double", "decimal"),
    "string": ("string", "symbol"),
    "objectId": ("objectId",),
    "date": ("date",),
    "binData": ("binData",),
    "timestamp": ("timestamp",),
    "bool": ("bool",),
}
_BRACKET_OF = {alias: name for name, aliases in _BRACKETS.items() for alias in aliases}
_SPLITTABLE = (Filter, Select, WithColumns, Explode, Join)  # each row on its own


def unsplittable(query: Query) -> str | None:
    """Why ``query`` cannot be split into partitions, or None when it can."""
    from .placement import decided
    from .plan import GroupBy, Limit, Pipeline, Sample, Skip, Sort

    reasons = {
        Sort: "a sort orders the whole result",
        Limit: "a limit keeps the first rows of the whole result",
        Skip: "a skip drops the first rows of the whole result",
        GroupBy: "a group-by's groups span every partition (MongoDB runs it in one "
                 "command, on every shard of a cluster)",
        Pipeline: "a raw pipeline's stages may need the whole result",
        Sample: "a sample draws from the whole result",
    }
    for step in query.steps:
        if not isinstance(step, _SPLITTABLE):
            return reasons.get(type(step), f"its {type(step).__name__} step needs the "
                               "whole result")
        if isinstance(step, (Select, WithColumns)) and decided(step):
            return ("a window (or an aggregate broadcast to every row) is computed over "
                    "the whole result")
    return None


def split(query: Query, n: int) -> list[Query]:
    """Up to ``n`` queries whose results are disjoint and together ``query``'s result."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"partitions(n) takes an int >= 1, got {n!r}")
    reason = unsplittable(query)
    if reason is not None:
        return [_partition(query, None, f"one partition: not split, because {reason}")]
    command = query.compile()
    coll = query._collection()
    bounds = id_ranges(coll, _leading_filter(command), n)
    if len(bounds) == 1:
        return [_partition(query, bounds[0], "one partition"
                           + ("" if n == 1 else ": the result is too small to split"))]
    return [_partition(query, bound, f"partition {i + 1} of {len(bounds)} (on _id ranges "
                       "computed by MongoDB)") for i, bound in enumerate(bounds)]


def _partition(query: Query, bound: Mapping[str, Any] | None, note: str) -> Query:
    return dataclasses.replace(query, restriction=bound, note=note)


def restrict(command: Command, bound: Mapping[str, Any] | None) -> Command:
    """``command`` with ``bound`` (a filter on ``_id``) in front of its own filter."""
    if not bound:
        return command
    if command.operation == "find":
        return dataclasses.replace(command, filter=_and(bound, command.filter or {}))
    stages = list(command.pipeline)
    if stages and "$match" in stages[0]:
        stages[0] = {"$match": _and(bound, stages[0]["$match"])}
    else:
        stages.insert(0, {"$match": dict(bound)})
    return dataclasses.replace(command, pipeline=tuple(stages))


def _leading_filter(command: Command) -> dict[str, Any]:
    """The filter a splittable command applies first (all of its row selection)."""
    if command.operation == "find":
        return dict(command.filter or {})
    first = command.pipeline[0] if command.pipeline else {}
    return dict(first.get("$match", {}))


# ------------------------------------------------------------------ bounds
def id_ranges(coll: Collection[Any], filter: Mapping[str, Any], n: int
              ) -> list[dict[str, Any] | None]:
    """Up to ``n`` filters on ``_id`` covering the documents matching ``filter`` exactly
    once (``[None]``: one partition, no filter needed)."""
    if n <= 1:
        return [None]
    with driver_errors(f"computing _id ranges of {coll.full_name}"):
        kinds = _kinds(coll, filter)
        if not kinds:
            return [None]
        shares = {next(iter(kinds)): n} if len(kinds) == 1 else _shares(kinds, n)
        sample = coll.estimated_document_count() > SAMPLE_ABOVE  # from metadata: O(1)
        pieces: list[dict[str, Any]] = []
        for kind, k in shares.items():
            pieces.extend(_ranges(coll, filter, kind, k, sample))
    if len(pieces) == 1:
        return [None]
    if len(pieces) > n:  # more kinds of ids than partitions: some share one
        groups = [pieces[i::n] for i in range(n)]
        return [g[0] if len(g) == 1 else {"$or": g} for g in groups if g]
    return list(pieces)


def _kinds(coll: Collection[Any], filter: Mapping[str, Any]) -> dict[str, int]:
    """``{kind of _id: documents}`` of the matching documents (``{}``: none).

    Two ``_id``-ordered lookups first (on the ``_id`` index): when the smallest and the
    largest ``_id`` are of one kind, every ``_id`` between them is too (BSON orders
    kinds as blocks), and nothing needs counting (the count is then 0: unknown, unused).
    Else the server counts the documents of each kind.
    """
    ends = []
    for direction in (1, -1):
        doc = next(iter(coll.find(dict(filter), {"_id": 1}).sort("_id", direction).limit(1)),
                   None)
        if doc is None:
            return {}
        ends.append(_kind(doc["_id"]))
    if ends[0] == ends[1]:
        return {ends[0]: 0}
    counted: dict[str, int] = {}
    for row in coll.aggregate([{"$match": dict(filter)},
                               {"$group": {"_id": {"$type": "$_id"}, "n": {"$sum": 1}}}]):
        kind = _BRACKET_OF.get(row["_id"], "other")
        counted[kind] = counted.get(kind, 0) + int(row["n"])
    return counted


def _kind(value: Any) -> str:
    import datetime as dt

    from bson import Binary, Decimal128, Int64, ObjectId, Timestamp

    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float, Int64, Decimal128)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, ObjectId):
        return "objectId"
    if isinstance(value, dt.datetime):
        return "date"
    if isinstance(value, (bytes, Binary)):
        return "binData"
    if isinstance(value, Timestamp):
        return "timestamp"
    return "other"  # null, a sub-document, a regex, ...: one kind, never split


def _shares(kinds: Mapping[str, int], n: int) -> dict[str, int]:
    """Partitions per kind, proportional to its documents, at least one each."""
    total = sum(kinds.values())
    shares = {k: max(1, math.floor(n * count / total)) for k, count in kinds.items()}
    order = sorted(kinds, key=lambda k: kinds[k] / shares[k], reverse=True)
    spare = n - sum(shares.values())
    for k in order:
        if spare <= 0:
            break
        shares[k] += 1
        spare -= 1
    return shares


def _type_filter(kind: str) -> dict[str, Any]:
    aliases = _BRACKETS.get(kind)
    if aliases is None:  # "other": every _id of no kind above
        return {"$not": {"$type": [a for names in _BRACKETS.values() for a in names]}}
    return {"$type": list(aliases)}


def _ranges(coll: Collection[Any], filter: Mapping[str, Any], kind: str, k: int,
            sample: bool) -> list[dict[str, Any]]:
    """``k`` (or fewer) ``_id`` ranges of one kind: open below and above. Bounds from
    ``$bucketAuto`` over the matching ``_id`` values, or over a ``$sample`` of them."""
    of_kind = _type_filter(kind)
    if k <= 1 or kind not in _BRACKETS or kind == "bool":
        return [{"_id": of_kind}]
    match: dict[str, Any] = {"$and": [dict(filter), {"_id": of_kind}]} if filter else {
        "_id": of_kind}
    stages: list[dict[str, Any]] = [{"$match": match}]
    if sample:
        stages.append({"$sample": {"size": SAMPLES_PER_PARTITION * k}})
    stages += [{"$bucketAuto": {"groupBy": "$_id", "buckets": k}}]
    buckets = list(coll.aggregate(stages, allowDiskUse=True))
    cuts = [b["_id"]["min"] for b in buckets[1:]]
    cuts = [c for i, c in enumerate(cuts) if i == 0 or c != cuts[i - 1]]
    if not cuts:
        return [{"_id": of_kind}]
    out = [{"_id": {**of_kind, "$lt": cuts[0]}}]
    out += [{"_id": {**of_kind, "$gte": lo, "$lt": hi}} for lo, hi in zip(cuts, cuts[1:])]
    out.append({"_id": {**of_kind, "$gte": cuts[-1]}})
    return out


# ------------------------------------------------------------------ threads
def load_split(query: Query, k: int, *, on_invalid: str, progress: Any) -> pa.Table:
    """``query``'s rows read as ``k`` partitions on ``k`` connections in threads and
    concatenated in partition order (``_id`` ranges ascending, kind by kind)."""
    import pyarrow as pa

    parts = split(query, k)
    if len(parts) == 1:
        return parts[0].load_table(on_invalid=on_invalid, progress=progress)
    with concurrent.futures.ThreadPoolExecutor(len(parts), "loom-partition") as pool:
        tables = list(pool.map(
            lambda part: part.load_table(on_invalid=on_invalid, progress=False), parts))
    return pa.concat_tables(tables)

