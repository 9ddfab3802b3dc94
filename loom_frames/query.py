"""The fluent, immutable query: ``Model.filter(...).sort(...).limit(...).load_polars()``.

Every builder method returns a new :class:`Query`; nothing runs until a loader is
called, and then exactly one MongoDB command runs (see :mod:`loom_frames.plan`).
Expressions are bound when they are added, so a typo fails at once with the closest
names, not when the query runs.

>>> import loom_frames as lm
>>> from loom_frames import Persistable, declare_persist_db
>>> @declare_persist_db(db_name="app", collection_name="users")
... class User(Persistable):
...     name: str
...     age: int
>>> q = User.filter(lm.fld["age"] > 25).sort("age", descending=True).limit(10)
>>> q.compile().to_dict()["sort"], q.compile().to_dict()["limit"]
({'age': -1, '_id': 1}, 10)
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .errors import PlanError
from .expr import Expr, fld
from .expr import nodes as n
from .expr.literals import check_output_name
from .plan import (
    Command,
    Filter,
    GroupBy,
    Limit,
    Pipeline,
    Select,
    Skip,
    Sort,
    Source,
    Step,
    WithColumns,
    compile_plan,
    frame_after,
)

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl
    import pyarrow as pa

    from .model import Persistable
    from .progress import Progress

__all__ = ["Explain", "GroupedQuery", "Query", "summarised"]


@dataclass(frozen=True, slots=True, eq=False)
class Query:
    """A lazy plan over one collection; build it with ``Model.filter()``."""

    source: Source
    steps: tuple[Step, ...] = ()
    # A partition's range on _id, in front of the filter (see partition.py), and what
    # explain() says of the partition.
    restriction: Mapping[str, Any] | None = None
    note: str = ""
    # The compiled command, once asked for (a query is immutable; replace() starts afresh).
    _compiled: list[Command] = field(init=False, default_factory=list, repr=False)

    @classmethod
    def from_model(cls, model: type[Persistable]) -> Query:
        """A query over every document of ``model``'s collection."""
        return cls(Source.of_model(model))

    # ------------------------------------------------------------------ builders
    def _then(self, step: Step) -> Query:
        return replace(self, steps=(*self.steps, step))

    def _bind(self, expr: Any, what: str) -> Expr:
        if isinstance(expr, str):
            expr = fld[expr]
        if not isinstance(expr, Expr):
            raise PlanError(
                f"{what} takes lm.fld expressions or column names, got {expr!r}. Hint: "
                "write Model.filter(lm.fld['age'] > 25); for a raw MongoDB query use "
                "Model.agg(AggregationStages().match({...}))."
            )
        return expr.bind(frame_after(self.source, self.steps).resolver())

    def filter(self, *predicates: Expr) -> Query:
        """Keep the rows where every predicate holds (``&`` of them).

        >>> User.filter(lm.fld["age"] > 25, lm.fld["name"].starts_with("A")).compile().filter
        {'age': {'$gt': 25}, 'name': {'$regex': '^A'}}
        """
        if not predicates:
            return self
        bound = [self._bind(p, "filter()") for p in predicates]
        combined = bound[0]
        for extra in bound[1:]:
            combined = combined & extra
        return self._then(Filter(combined))

    def sort(self, *by: str | Sequence[str], descending: bool | Sequence[bool] = False) -> Query:
        """Order by one or more columns (MongoDB order: nulls and missing first ascending).

        Ties are broken by ``_id`` so a sort with a limit returns the same rows each time.
        """
        names: list[str] = []
        for item in by:
            names.extend([item] if isinstance(item, str) else list(item))
        if not names:
            raise PlanError("sort() needs at least one column name")
        flags = [descending] * len(names) if isinstance(descending, bool) else list(descending)
        if len(flags) != len(names):
            raise PlanError(f"sort() got {len(names)} columns but {len(flags)} descending flags")
        frame = frame_after(self.source, self.steps)
        if frame.columns is not None:
            for name in names:
                frame.column(name)  # a typo fails now, with a hint
        return self._then(Sort(tuple(zip(names, flags, strict=True))))

    def limit(self, n: int) -> Query:
        """At most ``n`` rows (``n >= 1``)."""
        return self._then(Limit(_positive(n, "limit", minimum=1)))

    head = limit

    def skip(self, n: int) -> Query:
        """Drop the first ``n`` rows."""
        return self._then(Skip(_positive(n, "skip", minimum=0)))

    def select(self, *columns: str | Expr, **named: Expr) -> Query:
        """Keep only these columns: names, expressions (``.alias()``-ed), or ``name=expr``.

        Selecting stored columns becomes the ``find`` projection; computed columns a
        ``$project`` stage.
        """
        items = self._named(columns, named, "select()")
        if not items:
            raise PlanError("select() needs at least one column")
        return self._then(Select(items))

    def with_columns(self, *columns: Expr, **named: Expr) -> Query:
        """Add (or replace) computed columns: ``.with_columns(total=fld['a'] * fld['b'])``."""
        items = self._named(columns, named, "with_columns()")
        if not items:
            raise PlanError("with_columns() needs at least one column")
        return self._then(WithColumns(items))

    def group_by(self, *keys: str | Expr, **named: Expr) -> GroupedQuery:
        """Group rows by keys (names or expressions, e.g. ``fld['ts'].dt.truncate('1h')``)."""
        return GroupedQuery(self, self._named(keys, named, "group_by()"))

    def agg(self, pipeline: Sequence[Mapping[str, Any]], *, schema: pa.Schema | None = None) -> Query:
        """Append a raw aggregation pipeline (``AggregationStages`` or a list of stages).

        Its output shape is the pipeline's own: ``load_many()`` returns dicts, and frames
        use ``schema`` when given (else pymongoarrow infers the types from the results).
        """
        if schema is not None:
            for name in schema.names:
                check_output_name(name, "agg(schema=...)")
        stages = tuple(dict(stage) for stage in pipeline)
        for stage in stages:
            if len(stage) != 1 or not next(iter(stage)).startswith("$"):
                raise PlanError(f"a pipeline stage is a one-key dict like {{'$match': ...}}, got {stage!r}")
        return self._then(Pipeline(stages, schema))

    def _named(
        self, items: Sequence[str | Expr], named: Mapping[str, Expr], what: str
    ) -> tuple[tuple[str, Expr], ...]:
        out: list[tuple[str, Expr]] = []
        for item in items:
            expr = self._bind(item, what)
            out.append((expr.output_name, expr))
        for name, item in named.items():
            out.append((check_output_name(name, what), self._bind(item, what)))
        seen: set[str] = set()
        for name, _ in out:
            if name in seen:
                raise PlanError(f"{what}: the column name {name!r} is used twice. Hint: .alias() one of them.")
            seen.add(name)
        return tuple(out)

    # ------------------------------------------------------------------ inspecting
    def compile(self) -> Command:
        """The one MongoDB command this query runs."""
        if not self._compiled:
            from .partition import restrict

            command = compile_plan(self.source, self.steps)
            self._compiled.append(restrict(command, self.restriction))
        return self._compiled[0]

    def explain(self) -> Explain:
        """What runs where: the exact MongoDB command, and what (if anything) runs locally."""
        return Explain(self.source.name, self.compile(), self.note)

    # ------------------------------------------------------------------ scaling out
    def partitions(self, n: int) -> list[Query]:
        """Up to ``n`` queries whose results are disjoint and together this query's result:
        ranges on ``_id`` computed by MongoDB, each in front of this query's filter.

        A query whose answer depends on the whole result (a sort, skip, limit,
        group-by or raw pipeline) is one partition; ``explain()`` of each says which
        (see :mod:`loom_frames.partition`).
        """
        from .partition import split

        return split(self, n)

    def to_dask(self, npartitions: int | None = None, *, uri: str | None = None,
                on_invalid: str = "raise") -> Any:
        """This query as a ``dask.dataframe.DataFrame`` (the ``dask`` extra): one partition
        per query of :meth:`partitions`, each loaded on a worker by the same loader as
        :meth:`load_dataframe` (same dtypes); column selections reach the projection.

        Workers connect with ``uri`` (default: this session's URI, credentials included,
        the embedded server's too). ``npartitions=None``: one per 100,000 rows.
        """
        from .dask_io import to_dask

        return to_dask(self, npartitions, uri=uri, on_invalid=on_invalid)

    def __repr__(self) -> str:
        return f"<Query {self.source.name}>\n{self.explain()}"

    def _repr_html_(self) -> str:
        return self.explain()._repr_html_()

    # ------------------------------------------------------------------ loaders
    def _model(self, what: str) -> type[Persistable]:
        model = self.source.model
        if model is None:
            raise PlanError(f"{what} needs a model; {self.source.name} has only a schema. "
                            "Hint: load_polars()/load_table() return its rows.")
        return model

    def _collection(self) -> Any:
        from .connection import CODEC_OPTIONS, driver_errors, get_client

        with driver_errors(f"opening {self.source.database}.{self.source.collection}"):
            if self.source.model is not None:
                return self.source.model.collection()
            return get_client()[self.source.database].get_collection(
                self.source.collection, codec_options=CODEC_OPTIONS
            )

    def load_many(self) -> list[Any]:
        """The matching documents as model objects (dicts for a raw ``agg`` pipeline)."""
        from . import execute

        command = self.compile()
        if any(isinstance(s, Pipeline) for s in self.steps):
            return list(execute.documents(self._collection(), command))
        model = self._model("load_many()")
        if not command.whole_documents:
            raise PlanError(
                f"load_many() builds {model.__name__} objects, but this query returns only "
                "some columns or computed rows. Hint: use load_polars() / load_dataframe() "
                "/ load_table() for projections and group-bys."
            )
        return execute.objects(model, self._collection(), command)

    def load_one(self) -> Any | None:
        """The first matching object (or dict), or None."""
        rows = self._first(1).load_many()
        return rows[0] if rows else None

    def load_latest(self) -> Any | None:
        """The matching object with the newest ``updated_time`` (then newest ``id``), or None."""
        self._model("load_latest()")
        return self.sort("updated_time", "id", descending=True).load_one()

    def _first(self, k: int) -> Query:
        if self.steps and isinstance(self.steps[-1], Limit):
            last = self.steps[-1]
            return replace(self, steps=(*self.steps[:-1], Limit(min(last.n, k))))
        return self.limit(k)

    def count(self) -> int:
        """How many rows the query returns (counted by MongoDB; nothing is loaded)."""
        from . import execute

        return execute.count(self._collection(), self.compile())

    def exists(self) -> bool:
        """True when at least one row matches (MongoDB returns at most one ``_id``)."""
        from . import execute

        return execute.count(self._collection(), self._first(1).compile()) > 0

    def load_table(self, *, on_invalid: str = "raise", progress: Progress = "auto",
                   partitions: int = 1) -> pa.Table:
        """The rows as a PyArrow table of the model's (or plan's) schema.

        ``on_invalid="null"`` loads values that do not fit the schema as null (default:
        raise, naming the model, field, ``_id`` and value). ``progress``: a bar of bytes
        received when the result spans several server batches in an interactive session
        (``"auto"``), ``True``/``False``, or a callable (see :mod:`loom_frames.progress`).
        ``partitions=k``: read :meth:`partitions` ``(k)`` on ``k`` connections in threads
        and concatenate them (the same rows; partition by partition, ``_id`` ranges
        ascending; no progress bar).
        """
        if partitions != 1:
            from .partition import load_split

            return load_split(self, partitions, on_invalid=on_invalid, progress=progress)
        from . import execute

        return execute.table(self._collection(), self.compile(), on_invalid=on_invalid,
                             progress=progress)

    def load_polars(self, *, on_invalid: str = "raise", progress: Progress = "auto",
                    partitions: int = 1) -> pl.DataFrame:
        """The rows as a Polars DataFrame (options as :meth:`load_table`)."""
        from .load import to_frame

        return to_frame(self.load_table(on_invalid=on_invalid, progress=progress,
                                        partitions=partitions), "polars")

    def load_dataframe(self, *, on_invalid: str = "raise", progress: Progress = "auto"
                       ) -> pd.DataFrame:
        """The rows as a pandas DataFrame (nullable dtypes, tz-aware UTC datetimes;
        options as :meth:`load_table`)."""
        from .load import to_frame

        return to_frame(self.load_table(on_invalid=on_invalid, progress=progress), "pandas")

    def scan(self) -> pl.LazyFrame:
        """This query as a Polars LazyFrame source with projection, predicate and limit
        pushdown (see :mod:`loom_frames.scan`); nothing is read until it is collected."""
        from .scan import scan_query

        return scan_query(self)

    def iter_batches(
        self, batch_size: int = 65_536, *, on_invalid: str = "raise", progress: Progress = "auto"
    ) -> Iterator[pa.RecordBatch]:
        """Stream the rows as Arrow record batches of at most ``batch_size`` rows."""
        from . import execute

        return execute.batches(self._collection(), self.compile(), batch_size=batch_size,
                               on_invalid=on_invalid, progress=progress)


@dataclass(frozen=True, slots=True, eq=False)
class GroupedQuery:
    """``query.group_by(...)``: finish it with ``.agg(name=fld['x'].mean(), ...)``."""

    query: Query
    keys: tuple[tuple[str, Expr], ...]

    def agg(self, *aggregations: Expr, **named: Expr) -> Query:
        """One row per group: the keys, then one column per aggregation.

        >>> q = User.filter().group_by("name").agg(avg_age=lm.fld["age"].mean())
        >>> q.compile().pipeline[0]
        {'$group': {'_id': {'name': {'$ifNull': ['$name', None]}}, 'avg_age': {'$avg': '$age'}}}
        """
        items = self.query._named(aggregations, named, "agg()")
        if not items:
            raise PlanError("agg() needs at least one aggregation, e.g. n=lm.fld['x'].count()")
        for name, expr in items:
            node = expr.node
            while isinstance(node, n.Alias):
                node = node.arg
            if not isinstance(node, n.Aggregation):
                raise PlanError(
                    f"agg(): {name}={expr!r} is not an aggregation. Hint: e.g. "
                    f"{expr!r}.mean(), .sum(), .count(), .first()."
                )
        names = [k for k, _ in self.keys] + [k for k, _ in items]
        if len(set(names)) != len(names):
            raise PlanError(f"agg(): a column name is used twice in {names}")
        return self.query._then(GroupBy(self.keys, items))


@dataclass(frozen=True, slots=True)
class Explain:
    """A query's plan: prints as text, shows as HTML in a notebook."""

    name: str
    command: Command
    note: str = ""  # a partition's: which one, or why the query is not split

    def lines(self) -> list[str]:
        """The plan as text lines; the report field's expression is summarised (the full
        command is ``self.command.to_dict()``)."""
        from .plan import _json

        cmd = self.command
        out = [f"{self.name}: one MongoDB {cmd.operation} on {cmd.namespace}"
               + (f" ({self.note})" if self.note else "")]
        for key, value in summarised(cmd.to_dict()).items():
            if key in (cmd.operation, "find", "aggregate"):
                continue
            if key == "pipeline":
                out.append("  pipeline:")
                out.extend(f"    {_json(stage)}" for stage in value)
            else:
                out.append(f"  {key}: {_json(value)}")
        if cmd.schema is not None:
            cols = ", ".join(f"{f.name}: {f.type}" for f in cmd.schema)
            out.append(f"  columns: {cols}")
            out.append("locally: type conversion of the returned columns only "
                       "(ObjectId -> hex string, ...)")
        else:
            out.append("locally: nothing (column types inferred from the results)")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return "<pre>" + html.escape(str(self)) + "</pre>"


def summarised(value: Any) -> Any:
    """``value`` with each wrong-type report expression replaced by a one-line summary."""
    from ._validity import REPORT_KEY

    if isinstance(value, Mapping):
        return {
            k: _report_summary(v) if k == REPORT_KEY else summarised(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [summarised(v) for v in value]
    return value


def _report_summary(expr: Any) -> str:
    from .plan import _json

    fields = sorted(set(re.findall(r'"[a-z]:([^"]+)"', _json(expr))))
    return (f"<server-side type check of {', '.join(fields)}: absent when the document "
            "fits>")


def _positive(value: int, what: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PlanError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value
