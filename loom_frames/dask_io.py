"""Dask: a query as a Dask DataFrame, and Dask DataFrames written back (``dask`` extra).

Reading, ``query.to_dask(npartitions)``: the query is split with
:meth:`~loom_frames.query.Query.partitions` on the client (bounds computed by MongoDB),
and ``dd.from_map`` gets one small task description per partition: the compiled command
(plain data and an Arrow schema: no model class travels), the URI to connect with, and
``on_invalid``. A worker connects once per process and loads its partition with the same
loader as ``load_dataframe()``, so its dtypes are the ones ``load_dataframe()`` gives and
``meta`` is computed from the schema by that same conversion. The partition function
takes ``columns=``, so a column selection made in Dask (``ddf[["a", "b"]]``) narrows
the MongoDB projection.

Writing, ``Model.insert_dataframe(ddf)`` / ``upsert_dataframe(ddf, on=...)``: each
partition is written on its worker through the same validated path as a pandas frame
(the model class travels to the worker, pickled by value when it is not importable
there), and the results are combined into one :class:`~loom_frames.write.frames.WriteResult`
that counts every row once; a failed row says its partition and its row in it.

The core never imports dask; this module does, when it is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .errors import PlanError

if TYPE_CHECKING:
    import pandas as pd

    from .model import Persistable
    from .plan import Command
    from .query import Query
    from .write.frames import WriteResult

__all__ = ["ROWS_PER_PARTITION", "ReadPart", "is_dask_frame", "read_part", "to_dask",
           "write_dask"]

ROWS_PER_PARTITION = 100_000
"""``to_dask(npartitions=None)``: one partition per this many rows of the result."""


def _dask() -> Any:
    try:
        import dask.dataframe as dd
    except ImportError as exc:
        raise ImportError(
            "to_dask() and writing Dask frames need Dask. Hint: pip install "
            "'loom-frames[dask]'."
        ) from exc
    return dd


def _uri(uri: str | None, what: str) -> str:
    from .connection import session_uri

    found = uri or session_uri()
    if not found:
        raise PlanError(
            f"{what} needs a URI that worker processes can connect with, and this session "
            "was given a client object. Hint: lm.connect('mongodb://...') instead, or "
            "pass uri=."
        )
    return found


# ------------------------------------------------------------------ reading
@dataclass(frozen=True, slots=True)
class ReadPart:
    """One partition to load on a worker: everything it needs, as plain data."""

    uri: str
    command: Command
    on_invalid: str


def read_part(part: ReadPart, columns: list[str] | None = None) -> pd.DataFrame:
    """Load one partition (on a worker): the rows as ``load_dataframe()`` gives them."""
    from .connection import CODEC_OPTIONS, use_uri
    from .read.frames import load_table, to_frame

    client = use_uri(part.uri)
    command = part.command if columns is None else select(part.command, columns)
    coll = client[command.database].get_collection(command.collection,
                                                   codec_options=CODEC_OPTIONS)
    table = load_table(coll, command, on_invalid=part.on_invalid, progress=False)  # type: ignore[arg-type]
    return to_frame(table, "pandas")


def select(command: Command, columns: list[str]) -> Command:
    """``command`` returning only ``columns`` (its projection: their stored keys)."""
    from .schema import projection_of

    have = {col.name: col for col in command.columns or ()}
    missing = [c for c in columns if c not in have]
    if missing:
        raise PlanError(f"no column(s) {missing} in {command.namespace}'s result; it has "
                        f"{list(have)}")
    chosen = tuple(have[c] for c in columns)
    return replace(command, columns=chosen, projection=projection_of(chosen),
                   computed=tuple((k, v) for k, v in command.computed if k in columns))


def meta_of(command: Command) -> pd.DataFrame:
    """An empty frame with exactly the dtypes a partition has."""
    from .read.frames import to_frame

    if command.schema is None:
        raise PlanError(
            f"to_dask() needs the result's columns, and a raw pipeline's are unknown. "
            f"Hint: pass schema= to agg() for {command.namespace}."
        )
    return to_frame(command.schema.empty_table(), "pandas")


def to_dask(query: Query, npartitions: int | None, *, uri: str | None,
            on_invalid: str) -> Any:
    """See :meth:`loom_frames.query.Query.to_dask`."""
    dd = _dask()
    uri = _uri(uri, "to_dask()")
    if npartitions is None:
        npartitions = max(1, math.ceil(query.count() / ROWS_PER_PARTITION))
    parts = query.partitions(npartitions)
    commands = [part.compile() for part in parts]
    meta = meta_of(commands[0])
    import dask

    # Dask's "dataframe.convert-string" would turn pandas' own str columns into
    # string[pyarrow] (NA instead of NaN): decided here, once, so a partition's dtypes
    # are exactly load_dataframe()'s whatever the user's Dask configuration.
    with dask.config.set({"dataframe.convert-string": False}):
        return dd.from_map(
            read_part, [ReadPart(uri, command, on_invalid) for command in commands],
            meta=meta, label=f"loom-{query.source.name}", enforce_metadata=False,
        )


# ------------------------------------------------------------------ writing
def is_dask_frame(df: Any) -> bool:
    """True for a Dask DataFrame (without importing dask)."""
    return type(df).__module__.split(".", 1)[0] == "dask" and hasattr(df, "to_delayed")


def _write_part(model: type[Persistable], frame: pd.DataFrame, uri: str, verb: str,
                options: dict[str, Any]) -> WriteResult:
    """Write one partition (on a worker) through the pandas frame path."""
    from .connection import use_uri
    from .write import frames, upsert

    use_uri(uri)
    if verb == "insert":
        return frames.insert_dataframe(model, frame, **options)
    return upsert.upsert_dataframe(model, frame, **options)


def write_dask(model: type[Persistable], ddf: Any, verb: str, **options: Any) -> WriteResult:
    """Write every partition of ``ddf`` on its worker; one combined result.

    ``options`` are those of ``insert_dataframe`` / ``upsert_dataframe``; ``on_error``
    applies to the combined result (each partition reports, the whole raises).
    """
    import dask
    import pandas as pd

    from .errors import FrameWriteError
    from .write.frames import WriteResult, failure_message

    on_error = options.pop("on_error", "raise")
    options.pop("progress", None)
    uri = _uri(None, f"{model.__name__}.{verb}_dataframe(<dask frame>)")
    verb_options = {**options, "on_error": "report", "progress": False}
    tasks = [dask.delayed(_write_part)(model, part, uri, verb, verb_options)
             for part in ddf.to_delayed()]
    results: tuple[WriteResult, ...] = dask.compute(*tasks)
    failed = tuple(replace(f, partition=i) for i, result in enumerate(results)
                   for f in result.failed)
    ids = pd.concat([r.ids for r in results]) if results else pd.Series([], dtype="string")
    combined = WriteResult(sum(r.inserted for r in results), sum(r.updated for r in results),
                           sum(r.unchanged for r in results), ids, failed)
    if failed and on_error == "raise":
        raise FrameWriteError(failure_message(model, f"{verb}_dataframe", combined), combined)
    return combined
