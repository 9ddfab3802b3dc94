"""Running a compiled :class:`~loom_frames.plan.Command`: objects, dicts, counts, tables.

The one place where a plan meets the driver; Arrow materialisation itself is
:mod:`loom_frames.load`'s job.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .connection import driver_errors
from .errors import PlanError
from .codec import document_projection, hydrate
from .plan import Command
from .progress import Progress

if TYPE_CHECKING:
    import pyarrow as pa
    from pymongo.collection import Collection

    from .model import Persistable

__all__ = ["WHOLE_RESULT_BATCH", "batches", "count", "documents", "objects", "table"]

WHOLE_RESULT_BATCH = 100_000
"""Batch size of a read that keeps everything anyway (``load_many``, ``load_table``): the
server's default 101-document first batch would cost a round trip more for no benefit;
a reply is still capped at 16 MiB by the server."""


def _cursor(collection: Collection[Any], command: Command, projection: Any) -> Any:
    """A cursor over the whole result (read in full: large batches, few round trips)."""
    if command.operation == "find":
        return collection.find(
            dict(command.filter or {}),
            projection=projection,
            sort=list(command.sort) or None,
            skip=command.skip,
            limit=command.limit,
            batch_size=WHOLE_RESULT_BATCH,
        )
    stages = [dict(s) for s in command.pipeline]
    if projection is not None:
        stages.append({"$project": projection})
    return collection.aggregate(stages, batchSize=WHOLE_RESULT_BATCH)


def _reading(command: Command, operation: str | None = None) -> str:
    """What a read is doing, for its errors: the command that actually runs."""
    return f"reading {command.namespace} ({operation or command.operation})"


def objects(model: type[Persistable], collection: Collection[Any], command: Command) -> list[Any]:
    """Whole documents hydrated into model objects (one ``model_validate`` each)."""
    with _gc_paused():
        with driver_errors(f"loading {model.__name__} objects: " + _reading(command)):
            docs = list(_cursor(collection, command, document_projection(model)))
        return [hydrate(model, doc) for doc in docs]


_gc_lock = threading.Lock()
_gc_pauses = 0  # loads in progress that paused the collector (over all threads)
_gc_resume = False  # whether the first of them found it enabled


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause CPython's cyclic garbage collector while a load builds its objects.

    A load keeps every object it builds (the model object, its ``__dict__``, the stored
    document as its snapshot): the collector's generations then fill up and it re-scans
    the growing heap again and again, which measured about as long as decoding and
    validating themselves (``bench/bench_query.py``). Nothing a load builds is cyclic
    garbage, reference counting still frees everything else at once, and the collector
    resumes (if it was on) when the last concurrent load ends.
    """
    global _gc_pauses, _gc_resume
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_resume:
                gc.enable()


def documents(collection: Collection[Any], command: Command) -> Iterator[dict[str, Any]]:
    """The result documents as dicts (a raw pipeline's own shape)."""
    with driver_errors(_reading(command)):
        yield from _cursor(collection, command, None)


def count(collection: Collection[Any], command: Command) -> int:
    """The number of result rows, counted by the server (one ``aggregate``: a find's
    filter/skip/limit become ``$match``/``$skip``/``$limit`` then a count)."""
    with driver_errors("counting: " + _reading(command, "aggregate")):
        if command.operation == "find":
            kwargs: dict[str, Any] = {}
            if command.skip:
                kwargs["skip"] = command.skip
            if command.limit:
                kwargs["limit"] = command.limit
            return int(collection.count_documents(dict(command.filter or {}), **kwargs))
        stages = [*(dict(s) for s in command.pipeline), {"$count": "n"}]
        found = next(iter(collection.aggregate(stages)), None)
    return int(found["n"]) if found else 0


def table(
    collection: Collection[Any], command: Command, *, on_invalid: str = "raise",
    progress: Progress = "auto",
) -> pa.Table:
    """The result as an Arrow table of the command's schema."""
    from . import load

    if command.schema is None:
        from pymongoarrow.api import aggregate_arrow_all

        with driver_errors(_reading(command)):
            return aggregate_arrow_all(collection, [dict(s) for s in command.pipeline])
    if command.operation == "find":
        return load.find_table(
            collection, command.schema, filter=command.filter, sort=list(command.sort) or None,
            skip=command.skip, limit=command.limit, on_invalid=on_invalid,  # type: ignore[arg-type]
            progress=progress,
        )
    return load.aggregate_table(
        collection, list(command.pipeline), command.schema, on_invalid=on_invalid,  # type: ignore[arg-type]
        progress=progress,
    )


def batches(
    collection: Collection[Any], command: Command, *, batch_size: int, on_invalid: str = "raise",
    progress: Progress = "auto",
) -> Iterator[pa.RecordBatch]:
    """The result as Arrow record batches of at most ``batch_size`` rows."""
    from . import load

    if command.schema is None:
        raise PlanError("iter_batches() needs known columns. Hint: pass schema= to agg().")
    if command.operation == "find":
        return load.iter_batches(
            collection, command.schema, filter=command.filter, sort=list(command.sort) or None,
            skip=command.skip, limit=command.limit, on_invalid=on_invalid,  # type: ignore[arg-type]
            batch_size=batch_size, progress=progress,
        )
    return load.iter_batches(
        collection, command.schema, pipeline=list(command.pipeline),
        on_invalid=on_invalid, batch_size=batch_size, progress=progress,  # type: ignore[arg-type]
    )
