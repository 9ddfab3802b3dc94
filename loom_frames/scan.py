"""Polars LazyFrame sources: ``Model.scan()``, ``query.scan()``, ``scan_collection()``.

Each is a Polars IO plugin (``polars.io.plugins.register_io_source``). When the
LazyFrame is collected, Polars hands the source the columns it needs, its predicate (a
``polars.Expr``), a row limit and a batch size. The source pushes into MongoDB:

* the projection: only the needed columns (plus those the predicate reads) are fetched;
* the predicate: every conjunct :func:`~loom_frames.expr.from_polars.translate` can
  express becomes the MongoDB filter; the rest is kept;
* the row limit (``lf.head(n)`` before any filter: Polars hands a source its limit only
  then, and means "the first n rows, then the predicate");
* a bare row count (``select(pl.len())``): MongoDB counts, no document is returned.
  Polars hands a source that needs no column its first one; the source's first column
  is a hidden null-typed ``__loom_rows`` (dropped from the LazyFrame at once), so asking
  for it alone means "rows, no values".

Polars does not re-apply a predicate it handed to a source, so the FULL predicate is
always applied locally to every batch: a partial (or even a wrong-by-superset)
translation can only cost transfer, never change the result.

>>> import polars as pl
>>> import loom_frames as lm
>>> from loom_frames import Persistable, declare_persist_db
>>> @declare_persist_db(db_name="app", collection_name="events")
... class Event(Persistable):
...     kind: str
...     count: int
>>> lf = Event.scan().filter(pl.col("count") > 95_000).select("kind")
>>> "MongoDB[app.events]" in lf.explain()
True
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from .errors import PlanError
from .expr.literals import check_output_name
from .plan import Source, frame_after

if TYPE_CHECKING:
    from .query import Query

__all__ = [
    "SORT_HINT",
    "ScanPushdown",
    "explain_detail",
    "last_pushdown",
    "pushdown",
    "scan_collection",
    "scan_query",
]

log = logging.getLogger("loom_frames.read")


@dataclass(frozen=True, slots=True)
class ScanPushdown:
    """What one collect of a scan sends to MongoDB, and what stays local."""

    query: Query
    columns: tuple[str, ...]  # columns fetched
    local_predicate: pl.Expr | None  # applied to every batch (the full predicate)
    limit_pushed: bool  # a row limit came with this collect (and went to MongoDB)
    kept: tuple[str, ...]  # conjuncts of the predicate MongoDB did not get

    @property
    def counted(self) -> bool:
        """No column is needed (``select(pl.len())``): MongoDB counts the rows."""
        return not self.columns

    @property
    def command(self) -> dict[str, Any]:
        """The MongoDB command sent, as a dict (the filter is ``command["filter"]``)."""
        command = self.query.compile()
        return command.counting() if self.counted else command.to_dict()

    def __str__(self) -> str:
        lines = [f"rows counted by MongoDB, no document returned: {self.command}"
                 if self.counted else str(self.query.explain())]
        lines.extend(f"kept in Polars only: {conjunct}" for conjunct in self.kept)
        if self.local_predicate is not None:
            lines.append(f"applied to every batch: {self.local_predicate}")
        return "\n".join(lines)


def pushdown(
    query: Query,
    with_columns: list[str] | None,
    predicate: pl.Expr | None,
    n_rows: int | None,
) -> ScanPushdown:
    """Decide what a collect pushes into MongoDB (pure: runs nothing).

    When Polars hands over both a row limit and a predicate, the limit comes first
    (``lf.head(10).filter(p)``: the first 10 rows, then filtered), so only the limit is
    pushed and the predicate runs locally on those rows. Without a limit, every
    translatable conjunct of the predicate is pushed.
    """
    from .expr.from_polars import translate

    frame = frame_after(query.source, query.steps)
    schema_names = [c.name for c in frame.columns or ()]
    kept: list[str] = []
    if n_rows is not None:
        query = query.limit(n_rows)
        if predicate is not None:
            kept.append(str(predicate))
    elif predicate is not None:
        zones = {c.name: str(c.type.tz) for c in frame.columns or ()  # Polars' date parts
                 if c.type is not None and pa.types.is_timestamp(c.type)
                 and c.type.tz not in (None, "UTC")}
        translated, kept = translate(predicate, frame.resolver(), zones)
        if translated is not None:
            query = query.filter(translated)
    needed = [c for c in with_columns if c != ROWS] if with_columns is not None \
        else list(schema_names)
    if predicate is not None:
        for name in predicate.meta.root_names():
            if name not in needed:
                needed.append(name)
    if frame.documents and needed and needed != schema_names:
        query = query.select(*needed)
    return ScanPushdown(query, tuple(needed), predicate, n_rows is not None, tuple(kept))


ROWS = "__loom_rows"  # the scan's hidden first column: rows without values (Null dtype)


def scan_query(query: Query, *, on_invalid: str = "raise") -> pl.LazyFrame:
    """A LazyFrame over a query's rows (nothing is read until it is collected).

    ``on_invalid="null"`` reads values that do not fit as null (default: raise, naming
    the model, field, ``_id`` and value). A raw pipeline without a schema is typed by a
    sample of its results, read now (see :func:`scan_collection`).
    """
    from .read.validity import check_on_invalid

    check_on_invalid(on_invalid)
    inferred = ""
    if query.compile().columns is None:
        query, inferred = _typed_by_sample(query)
    return _source(query, on_invalid, inferred)


def _source(query: Query, on_invalid: str, inferred: str) -> pl.LazyFrame:
    from polars.io.plugins import register_io_source

    from .read import cursor
    from .read.frames import load_tables, to_frame

    command = query.compile()
    assert command.schema is not None
    schema = pl.Schema({ROWS: pl.Null,
                        **to_frame(command.schema.empty_table(), "polars").schema})

    def source(
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        if n_rows == 0:
            return
        plan = pushdown(query, with_columns, predicate, n_rows)
        _last[:] = [plan]
        pushed = plan.query
        if plan.counted:  # select(pl.len()): MongoDB counts, no document is returned
            rows = cursor.count(pushed._collection(), pushed.compile())
            if rows:
                yield pl.repeat(None, rows, dtype=pl.Null, eager=True).alias(ROWS).to_frame()
            return
        tables = load_tables(pushed._collection(), pushed.compile(),
                             batch_size=batch_size, on_invalid=on_invalid)  # type: ignore[arg-type]
        for table in tables:
            df = pl.from_arrow(table)
            assert isinstance(df, pl.DataFrame)
            if predicate is not None:
                df = df.filter(predicate)  # Polars does not re-apply it
            df = df.with_columns(pl.lit(None, pl.Null).alias(ROWS))
            df = df.select(with_columns if with_columns is not None else schema.names())
            if df.height:
                yield df

    return register_io_source(
        source,
        schema=schema,
        is_pure=True,
        explain_name=f"MongoDB[{command.namespace}]",
        # Polars fixes this text now; each collect then pushes its own columns, filter
        # and limit into it (see pushdown()).
        explain_detail=explain_detail(query) + (f"; {inferred}" if inferred else ""),
    ).drop(ROWS)


def _typed_by_sample(query: Query) -> tuple[Query, str]:
    """A raw pipeline's query with the schema of a sample of its results (the last
    pipeline step gets it), and what was inferred."""
    from dataclasses import replace

    from .plan import Pipeline
    from .read import cursor
    from .read.infer import describe, infer_schema

    at = max(i for i, step in enumerate(query.steps) if isinstance(step, Pipeline))
    step = query.steps[at]
    assert isinstance(step, Pipeline)
    sampled = replace(query, steps=query.steps[: at + 1])
    docs = cursor.sample(sampled._collection(), sampled.compile(), step.infer_schema_length)
    schema, notes = infer_schema(docs)
    typed = replace(step, schema=schema)
    said = describe(len(docs), notes)
    log.info("%s: %s", query.source.name, said)
    return replace(query, steps=(*query.steps[:at], typed, *query.steps[at + 1:])), said


SORT_HINT = ("Polars hands a source no sort: push a top-k as "
             "Model.filter().sort().limit(k).scan()")


def explain_detail(query: Query) -> str:
    """What ``lazy.explain()`` shows for the source: the query's own steps (if any), what
    each collect pushes, and how to push a sort (Polars cannot hand one to a source).

    >>> explain_detail(Event.filter())
    'one MongoDB find per collect, with the columns, filter and row limit Polars hands over, or a $count when no column is needed (loom_frames.scan.last_pushdown() shows it); Polars hands a source no sort: push a top-k as Model.filter().sort().limit(k).scan()'
    """
    command = query.compile()
    steps = ""
    if query.steps:
        detail = command.to_dict()
        detail.pop(command.operation, None)
        detail.pop("projection", None)
        steps = f" over {_short(detail)}"
    return (f"one MongoDB {command.operation}{steps} per collect, with the columns, filter "
            "and row limit Polars hands over, or a $count when no column is needed "
            "(loom_frames.scan.last_pushdown() shows it); " + SORT_HINT)


_last: list[ScanPushdown] = []  # the latest collect's pushdown (any thread: Polars' own)


def last_pushdown() -> ScanPushdown | None:
    """What the most recent collect of a scan (in this process) sent to MongoDB.

    ``lazy.explain()`` can only show a scan's base command (Polars fixes that text when
    the source is registered); after ``collect()`` this shows the command actually sent
    and what stayed in Polars. None before any scan was collected.

    >>> lf = Event.scan().filter(pl.col("count") > 95_000).select("kind")  # doctest: +SKIP
    >>> _ = lf.collect()  # doctest: +SKIP
    >>> last_pushdown().command["filter"]  # doctest: +SKIP
    {'count': {'$gt': 95000}}
    """
    return _last[0] if _last else None


def scan_collection(
    db: str,
    collection: str,
    *,
    schema: pa.Schema | Mapping[str, Any] | None = None,
    infer_schema_length: int | None = 100,
    on_invalid: str = "raise",
) -> pl.LazyFrame:
    """A LazyFrame over any collection, typed by ``schema``, or else by its first
    ``infer_schema_length`` documents (None: all of them), as Polars' readers do.

    ``schema`` is a ``pyarrow.Schema`` or a dict of column -> Arrow or Polars type. An
    inferred schema types nested documents as structs, arrays as lists, widens int and
    double to double, and makes other mixed types (and types it cannot hold) Extended
    JSON text; ``lf.explain()`` says what it inferred, and so does the
    ``loom_frames.read`` logger. ``on_invalid="null"``: values that do not fit the schema
    are null (default: raise, naming the document).

    >>> lf = scan_collection("app", "raw", schema={"sensor": pl.String, "value": pl.Float64})
    >>> lf.collect_schema()
    Schema([('sensor', String), ('value', Float64)])
    """
    from .query import Query
    from .read.validity import check_on_invalid

    check_on_invalid(on_invalid)
    inferred = ""
    if schema is None:
        schema, inferred = _sampled_schema(db, collection, infer_schema_length)
    query: Query[Any] = Query(Source.of_collection(db, collection, _arrow_schema(schema)))
    return _source(query, on_invalid, inferred)


def _sampled_schema(db: str, collection: str, n: int | None) -> tuple[pa.Schema, str]:
    from .plan import Command
    from .read import cursor
    from .read.infer import describe, infer_schema

    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise PlanError(f"infer_schema_length must be an int >= 1 or None, got {n!r}")
    coll = cursor.open_collection(db, collection)
    docs = cursor.sample(coll, Command(db, collection, "find", None, limit=n or 0), n)
    if not docs:
        raise PlanError(
            f"{db}.{collection} holds no document to infer a schema from. Hint: pass "
            "schema={...} to scan_collection()."
        )
    schema, notes = infer_schema(docs)
    said = describe(len(docs), notes)
    log.info("%s.%s: %s", db, collection, said)
    return schema, said


def _arrow_schema(schema: pa.Schema | Mapping[str, Any]) -> pa.Schema:
    names = schema.names if isinstance(schema, pa.Schema) else list(schema or ())
    for name in names:
        check_output_name(name, "scan_collection(schema=...)")
    if isinstance(schema, pa.Schema):
        return schema
    if not isinstance(schema, Mapping) or not schema:
        raise PlanError(f"schema must be a pyarrow.Schema or a non-empty dict, got {schema!r}")
    fields = []
    for name, dtype in schema.items():
        arrow = dtype if isinstance(dtype, pa.DataType) else _arrow_of_polars(name, dtype)
        fields.append(pa.field(name, arrow))
    return pa.schema(fields)


def _arrow_of_polars(name: str, dtype: Any) -> pa.DataType:
    arrow = pl.Series(name, [], dtype=dtype).to_arrow().type
    if pa.types.is_large_string(arrow) or pa.types.is_string_view(arrow):
        return pa.string()  # what the loaders produce
    if pa.types.is_large_list(arrow) or pa.types.is_list_view(arrow):
        return pa.list_(arrow.value_type)
    return arrow


def _short(value: Any) -> str:
    from .plan import _json

    text = _json(value)
    return text if len(text) <= 300 else text[:297] + "..."
