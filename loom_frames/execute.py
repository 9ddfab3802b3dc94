"""Running a compiled :class:`~loom_frames.plan.Command`: objects, dicts, counts, tables.

The one place where a plan meets the driver; Arrow materialisation itself is
:mod:`loom_frames.load`'s job.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

from .errors import PlanError
from .persist import hydrate, model_projection
from .plan import Command

if TYPE_CHECKING:
    import pyarrow as pa
    from pymongo.collection import Collection

    from .model import Persistable

__all__ = ["batches", "count", "documents", "objects", "table"]


def _cursor(collection: Collection[Any], command: Command, projection: Any) -> Any:
    if command.operation == "find":
        return collection.find(
            dict(command.filter or {}),
            projection=projection,
            sort=list(command.sort) or None,
            skip=command.skip,
            limit=command.limit,
        )
    stages = [dict(s) for s in command.pipeline]
    if projection is not None:
        stages.append({"$project": projection})
    return collection.aggregate(stages)


def _wrap(command: Command, exc: PyMongoError) -> PlanError:
    return PlanError(
        f"MongoDB rejected the {command.operation} on {command.namespace}: {exc}. "
        "Hint: see query.explain() for the exact command."
    )


def objects(model: type[Persistable], collection: Collection[Any], command: Command) -> list[Any]:
    """Whole documents hydrated into model objects (one ``model_validate`` each)."""
    try:
        docs = list(_cursor(collection, command, model_projection(model)))
    except PyMongoError as exc:
        raise _wrap(command, exc) from exc
    return [hydrate(model, doc) for doc in docs]


def documents(collection: Collection[Any], command: Command) -> Iterator[dict[str, Any]]:
    """The result documents as dicts (a raw pipeline's own shape)."""
    try:
        yield from _cursor(collection, command, None)
    except PyMongoError as exc:
        raise _wrap(command, exc) from exc


def count(collection: Collection[Any], command: Command) -> int:
    """The number of result rows, counted by the server."""
    try:
        if command.operation == "find":
            kwargs: dict[str, Any] = {}
            if command.skip:
                kwargs["skip"] = command.skip
            if command.limit:
                kwargs["limit"] = command.limit
            return int(collection.count_documents(dict(command.filter or {}), **kwargs))
        stages = [*(dict(s) for s in command.pipeline), {"$count": "n"}]
        found = next(iter(collection.aggregate(stages)), None)
    except PyMongoError as exc:
        raise _wrap(command, exc) from exc
    return int(found["n"]) if found else 0


def table(collection: Collection[Any], command: Command, *, on_invalid: str = "raise") -> pa.Table:
    """The result as an Arrow table of the command's schema."""
    from . import load

    if command.schema is None:
        from pymongoarrow.api import aggregate_arrow_all

        return aggregate_arrow_all(collection, [dict(s) for s in command.pipeline])
    if command.operation == "find":
        return load.find_table(
            collection, command.schema, filter=command.filter, sort=list(command.sort) or None,
            skip=command.skip, limit=command.limit, on_invalid=on_invalid,  # type: ignore[arg-type]
        )
    return load.aggregate_table(
        collection, list(command.pipeline), command.schema, on_invalid=on_invalid,  # type: ignore[arg-type]
    )


def batches(
    collection: Collection[Any], command: Command, *, batch_size: int, on_invalid: str = "raise"
) -> Iterator[pa.RecordBatch]:
    """The result as Arrow record batches of at most ``batch_size`` rows."""
    from . import load

    if command.schema is None:
        raise PlanError("iter_batches() needs known columns. Hint: pass schema= to agg().")
    if command.operation == "find":
        return load.iter_batches(
            collection, command.schema, filter=command.filter, sort=list(command.sort) or None,
            skip=command.skip, limit=command.limit, on_invalid=on_invalid,  # type: ignore[arg-type]
            batch_size=batch_size,
        )
    return load.iter_batches(
        collection, command.schema, pipeline=list(command.pipeline),
        on_invalid=on_invalid, batch_size=batch_size,  # type: ignore[arg-type]
    )
