"""``AggregationStages``: an immutable builder for raw MongoDB aggregation pipelines.

For analytics the typed plan (``Model.filter(...).group_by(...).agg(...)``) is the first
choice; this builder is the guide's escape hatch to any pipeline MongoDB runs::

    >>> from loom_frames import AggregationStages
    >>> pipeline = AggregationStages().match({"age": {"$gt": 25}}).group(
    ...     {"_id": "$is_active", "avg_age": {"$avg": "$age"}}
    ... )
    >>> pipeline.to_list()
    [{'$match': {'age': {'$gt': 25}}}, {'$group': {'_id': '$is_active', 'avg_age': {'$avg': '$age'}}}]

Every method returns a new builder; the one it was called on is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["AggregationStages"]


class AggregationStages(Sequence[dict[str, Any]]):
    """An immutable sequence of aggregation stages (a pipeline)."""

    __slots__ = ("_stages",)

    def __init__(self, stages: Sequence[Mapping[str, Any]] = ()) -> None:
        checked = []
        for stage in stages:
            if not (isinstance(stage, Mapping) and len(stage) == 1):
                raise TypeError(f"a pipeline stage is a one-key dict like {{'$match': ...}}, got {stage!r}")
            (name,) = stage
            if not (isinstance(name, str) and name.startswith("$")):
                raise TypeError(f"a stage name starts with '$', got {name!r}")
            checked.append(dict(stage))
        self._stages: tuple[dict[str, Any], ...] = tuple(checked)

    # ------------------------------------------------------------ sequence protocol
    def __getitem__(self, index: Any) -> Any:
        return self._stages[index]

    def __len__(self) -> int:
        return len(self._stages)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._stages)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AggregationStages):
            return self._stages == other._stages
        if isinstance(other, list):
            return list(self._stages) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(repr(self._stages))

    def __repr__(self) -> str:
        return f"AggregationStages({list(self._stages)!r})"

    def to_list(self) -> list[dict[str, Any]]:
        """The pipeline as the list ``collection.aggregate`` takes."""
        return [dict(stage) for stage in self._stages]

    def stage(self, name: str, spec: Any) -> AggregationStages:
        """Append any stage: ``.stage("$facet", {...})``."""
        if not name.startswith("$"):
            name = "$" + name
        return AggregationStages((*self._stages, {name: spec}))

    # ------------------------------------------------------------ the usual stages
    def match(self, query: Any) -> AggregationStages:
        """``$match``: a query document or a field expression (``lm.fld['a'] > 1``)."""
        to_mongo = getattr(query, "to_mongo", None)
        return self.stage("$match", to_mongo() if callable(to_mongo) else dict(query))

    def group(self, spec: Mapping[str, Any]) -> AggregationStages:
        """``$group``: ``{"_id": <key expression>, "<name>": {<accumulator>}, ...}``."""
        if "_id" not in spec:
            raise ValueError("a $group stage needs an '_id' (use None to group everything)")
        return self.stage("$group", dict(spec))

    def project(self, spec: Mapping[str, Any]) -> AggregationStages:
        """``$project``: include, exclude or compute fields."""
        return self.stage("$project", dict(spec))

    def add_fields(self, spec: Mapping[str, Any]) -> AggregationStages:
        """``$addFields``: add computed fields, keep the rest."""
        return self.stage("$addFields", dict(spec))

    def sort(self, spec: Mapping[str, int]) -> AggregationStages:
        """``$sort``: ``{"field": 1 | -1, ...}``."""
        for key, direction in spec.items():
            if direction not in (1, -1):
                raise ValueError(f"sort direction of {key!r} must be 1 or -1, got {direction!r}")
        return self.stage("$sort", dict(spec))

    def limit(self, n: int) -> AggregationStages:
        """``$limit``: at most ``n`` documents."""
        return self.stage("$limit", _count(n, "limit"))

    def skip(self, n: int) -> AggregationStages:
        """``$skip``: drop the first ``n`` documents."""
        return self.stage("$skip", _count(n, "skip"))

    def unwind(
        self, path: str, *, preserve_null_and_empty_arrays: bool = False
    ) -> AggregationStages:
        """``$unwind``: one document per element of an array field."""
        field = path if path.startswith("$") else "$" + path
        if preserve_null_and_empty_arrays:
            return self.stage(
                "$unwind", {"path": field, "preserveNullAndEmptyArrays": True}
            )
        return self.stage("$unwind", field)

    def lookup(
        self, *, from_: str, local_field: str, foreign_field: str, as_: str
    ) -> AggregationStages:
        """``$lookup``: a left outer join with another collection of the same database."""
        return self.stage(
            "$lookup",
            {"from": from_, "localField": local_field, "foreignField": foreign_field, "as": as_},
        )

    def count(self, field: str = "count") -> AggregationStages:  # type: ignore[override]
        """``$count``: one document ``{field: <number of documents>}``."""
        return self.stage("$count", field)

    def sample(self, size: int) -> AggregationStages:
        """``$sample``: ``size`` random documents."""
        return self.stage("$sample", {"size": _count(size, "sample size")})

    def replace_root(self, new_root: Any) -> AggregationStages:
        """``$replaceRoot``: promote an embedded document (``"$address"``) to the top."""
        return self.stage("$replaceRoot", {"newRoot": new_root})


def _count(n: int, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{what} must be a non-negative int, got {n!r}")
    return n
