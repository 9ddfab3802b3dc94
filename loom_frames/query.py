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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from .errors import PlanError
from .expr import Expr, fld
from .expr import nodes as n
from .expr.bind import Kind
from .expr.literals import check_output_name
from .plan import (
    Command,
    Explode,
    Filter,
    GroupBy,
    Join,
    Limit,
    Pipeline,
    Sample,
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
    from .placement import Engine, Placement
    from .progress import Progress

__all__ = ["Explain", "GroupedQuery", "Query"]

M = TypeVar("M", bound="Persistable")
"""The model a query loads (``User.filter()`` is a ``Query[User]``)."""


@dataclass(frozen=True, slots=True, eq=False)
class Query(Generic[M]):
    """A lazy plan over one collection; build it with ``Model.filter()`` (a ``Query`` of
    that model: ``load_one()`` gives one of its objects)."""

    source: Source
    steps: tuple[Step, ...] = ()
    # A partition's range on _id, in front of the filter (see partition.py), and what
    # explain() says of the partition.
    restriction: Mapping[str, Any] | None = None
    note: str = ""
    # The compiled command, once asked for (a query is immutable; replace() starts afresh).
    _compiled: list[Command] = field(init=False, default_factory=list, repr=False)

    @classmethod
    def from_model(cls, model: type[M]) -> Query[M]:
        """A query over every document of ``model``'s collection."""
        return cls(Source.of_model(model))

    # ------------------------------------------------------------------ builders
    def _then(self, step: Step) -> Query[M]:
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

    def filter(self, *predicates: Expr) -> Query[M]:
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

    def sort(
        self,
        by: str | Expr | Sequence[str | Expr],
        *more_by: str | Expr,
        descending: bool | Sequence[bool] = False,
        nulls_last: bool | Sequence[bool] = False,
    ) -> Query[M]:
        """Order by columns or expressions, as Polars does: nulls first unless
        ``nulls_last`` (in both directions).

        Ties are broken by ``_id`` so a sort with a limit returns the same rows each time.
        A nullable column sorted with nulls where MongoDB does not put them (descending
        with nulls first, ascending with nulls last) sorts on a null flag first, in an
        aggregate; non-Optional model fields hold no nulls and sort in a plain ``find``.

        >>> Item.filter().sort("price", descending=True).compile().sort
        (('price', -1), ('_id', 1))
        >>> Item.filter().sort(lm.fld["price"] * -1).compile().pipeline[1]
        {'$sort': {'__loom_s0': 1, '_id': 1}}
        """
        items: list[str | Expr] = []
        for item in (by, *more_by):
            items.extend([item] if isinstance(item, (str, Expr)) else list(item))
        if not items:
            raise PlanError("sort() needs at least one column name or expression")
        flags = _flags(descending, len(items), "descending")
        lasts = _flags(nulls_last, len(items), "nulls_last")
        frame = frame_after(self.source, self.steps)
        names: list[str] = []
        computed: list[tuple[str, Expr]] = []
        for index, item in enumerate(items):
            plain = item if isinstance(item, str) else (
                item.node.name if isinstance(item.node, n.Field) and "." not in item.node.name
                else None)
            if plain is not None:
                if frame.columns is not None:
                    frame.column(plain)  # a typo fails now, with a hint
                names.append(plain)
            else:
                temp = f"__loom_s{index}"
                computed.append((temp, self._bind(item, "sort()")))
                names.append(temp)
        return self._then(Sort(tuple(zip(names, flags, strict=True)), tuple(lasts),
                               tuple(computed)))

    def limit(self, n: int = 5) -> Query[M]:
        """At most ``n`` rows (``n >= 1``; Polars' default 5)."""
        return self._then(Limit(_positive(n, "limit", minimum=1)))

    def head(self, n: int = 5) -> Query[M]:
        """The first ``n`` rows (Polars' default 5): a ``limit``.

        >>> Item.filter().head().compile().limit
        5
        """
        return self.limit(n)

    def top_k(self, k: int, *, by: str | Expr | Sequence[str | Expr],
              reverse: bool | Sequence[bool] = False) -> Query[M]:
        """The ``k`` rows with the largest ``by`` values (nulls last), as Polars' ``top_k``.

        >>> Item.filter().top_k(3, by="price").compile().sort
        (('price', -1), ('_id', 1))
        """
        return self._k(k, by, reverse, largest=True)

    def bottom_k(self, k: int, *, by: str | Expr | Sequence[str | Expr],
                 reverse: bool | Sequence[bool] = False) -> Query[M]:
        """The ``k`` rows with the smallest ``by`` values (nulls last).

        >>> Item.filter().bottom_k(2, by="price").compile().limit
        2
        """
        return self._k(k, by, reverse, largest=False)

    def _k(self, k: int, by: Any, reverse: Any, *, largest: bool) -> Query[M]:
        keys = [by] if isinstance(by, (str, Expr)) else list(by)
        flips = _flags(reverse, len(keys), "reverse")
        return self.sort(keys, descending=[largest != r for r in flips],
                         nulls_last=True).limit(k)

    def drop(self, *columns: str | Sequence[str], strict: bool = True) -> Query[M]:
        """Every column but these (a projection).

        >>> Item.filter().drop("created_at", "updated_time").collect_schema().names()
        ['id', 'sku', 'price']
        """
        names = _names(columns)
        frame = frame_after(self.source, self.steps)
        gone = {frame.column(name).name for name in names} if strict else {
            c.name for c in frame.columns or () if c.name in names}
        keep = [c.name for c in frame.columns or () if c.name not in gone]
        if not keep:
            raise PlanError("drop() would leave no column")
        return self.select(*keep)

    def rename(self, mapping: Mapping[str, str], *, strict: bool = True) -> Query[M]:
        """Rename columns: ``rename({"price": "unit_price"})`` (stored keys unchanged).

        >>> Item.filter().rename({"price": "unit_price"}).collect_schema().names()[-1]
        'unit_price'
        """
        frame = frame_after(self.source, self.steps)
        if strict:
            for name in mapping:
                frame.column(name)
        names = [c.name for c in frame.columns or ()]
        new = {name: check_output_name(mapping.get(name, name), "rename()") for name in names}
        return self._then(Select(tuple((new[name], self._bind(name, "rename()"))
                                       for name in names)))

    def unique(self, subset: str | Sequence[str] | None = None, *, keep: str = "any",
               maintain_order: bool = False) -> Query[M]:
        """One row per distinct ``subset`` (default: all columns): one ``$group``.

        ``keep``: ``'any'``/``'first'``/``'last'`` row of each group (in the current row
        order), or ``'none'`` (drop every duplicated row). Rows come in no set order
        (``maintain_order=True`` is not supported: sort afterwards).

        >>> Item.filter().select("sku").unique().compile().pipeline[0]
        {'$group': {'_id': {'sku': {'$ifNull': ['$sku', None]}}}}
        """
        if keep not in ("any", "first", "last", "none"):
            raise PlanError(f"unique(keep=...) is 'any', 'first', 'last' or 'none', got {keep!r}")
        if maintain_order:
            raise PlanError("unique(maintain_order=True): MongoDB's $group keeps no order. "
                            "Hint: .unique().sort(...).")
        frame = frame_after(self.source, self.steps)
        names = [c.name for c in frame.columns or ()]
        keys = names if subset is None else [frame.column(k).name for k in _names((subset,))]
        pick = (lambda e: e.last()) if keep == "last" else (lambda e: e.first())
        aggs = tuple((name, pick(self._bind(name, "unique()"))) for name in names
                     if name not in keys)
        if keep == "none":
            aggs += (("__loom_n", Expr(n.Len())),)
        query = self._then(GroupBy(tuple((k, self._bind(k, "unique()")) for k in keys), aggs))
        if keep == "none":
            query = query._then(Filter(query._bind(fld["__loom_n"] == 1, "unique()")))
        return query._then(Select(tuple((name, query._bind(name, "unique()")) for name in names)))

    def explode(self, columns: str | Sequence[str], *more_columns: str,
                empty_as_null: bool = False, keep_nulls: bool = True) -> Query[M]:
        """One row per element of a list column (``$unwind``), as Polars explodes: an empty
        list gives no row (one null row with ``empty_as_null=True``), a null list one null
        row (none with ``keep_nulls=False``).

        >>> Order.filter().explode("tags").compile().pipeline
        ({'$match': {'tags': {'$ne': []}}}, {'$unwind': {'path': '$tags', 'preserveNullAndEmptyArrays': True}})
        """
        query = self
        for name in _names((columns, *more_columns)):
            col = frame_after(query.source, query.steps).column(name)
            if col.item is None:
                raise PlanError(f"explode({name!r}): {name!r} is a {col.kind.value} column, "
                                "not a list.")
            query = query._then(Explode(col.name, bool(empty_as_null), bool(keep_nulls)))
        return query

    def sample(self, n: int | None = None, *, fraction: float | None = None,
               with_replacement: bool = False, shuffle: bool = False,
               seed: int | None = None) -> Query[M]:
        """``n`` rows drawn at random by MongoDB (``$sample``; without replacement).

        ``fraction``, ``with_replacement`` and ``seed`` have no ``$sample`` equivalent.

        >>> Item.filter().sample(2).compile().pipeline
        ({'$sample': {'size': 2}},)
        """
        if fraction is not None or with_replacement or seed is not None:
            raise PlanError("sample(): MongoDB's $sample draws n rows without replacement "
                            "and takes no seed. Hint: sample(n).")
        if n is None:
            raise PlanError("sample() needs n, e.g. sample(100)")
        return self._then(Sample(_positive(n, "sample", minimum=1)))

    def join(
        self,
        other: Any,
        on: str | Sequence[str] | None = None,
        how: str = "inner",
        *,
        left_on: str | Sequence[str] | None = None,
        right_on: str | Sequence[str] | None = None,
        suffix: str = "_right",
    ) -> Query[M]:
        """Join the rows of another model's collection (``other``: the model, or a query
        over it; its filters run inside the lookup): one ``$lookup`` + ``$unwind``.

        ``how``: ``'inner'`` or ``'left'`` (unmatched rows kept, the other side's columns
        null). Null keys match nothing, as in Polars. Columns of the other side whose
        names are taken get ``suffix``; its key columns are dropped (Polars coalesces
        them). Column types come from both models.

        >>> q = Order.filter().join(Item, left_on="sku", right_on="sku")
        >>> q.compile().pipeline[0]["$lookup"]["from"], q.collect_schema().names()[-1]
        ('items', 'price')
        """
        from .model import Persistable

        if how not in ("inner", "left"):
            raise PlanError(f"join(how=...) is 'inner' or 'left', got {how!r} (MongoDB's "
                            "$lookup starts from this collection's rows).")
        if isinstance(other, type) and issubclass(other, Persistable):
            other = Query.from_model(other)
        if not isinstance(other, Query):
            raise PlanError(f"join() takes a model or a query over one, got {other!r}")
        if other.source.database != self.source.database:
            raise PlanError(f"join(): {other.source.name} lives in database "
                            f"{other.source.database!r}, this query in "
                            f"{self.source.database!r}; $lookup joins within one database.")
        if on is not None:
            left, right = _names((on,)), _names((on,))
        elif left_on is not None and right_on is not None:
            left, right = _names((left_on,)), _names((right_on,))
        else:
            raise PlanError("join() needs on=... or both left_on=... and right_on=...")
        if len(left) != len(right):
            raise PlanError(f"join(): {len(left)} left keys but {len(right)} right keys")
        mine = frame_after(self.source, self.steps)
        theirs = frame_after(other.source, other.steps)
        for a, b in zip(left, right, strict=True):
            ka, kb = mine.column(a).kind, theirs.column(b).kind
            numbers = {Kind.INT, Kind.FLOAT}
            if ka is not kb and not {ka, kb} <= numbers:
                raise PlanError(f"join(): {a!r} ({ka.value}) and {b!r} ({kb.value}) hold "
                                "values of different types, which never match.")
        kind: Literal["inner", "left"] = "left" if how == "left" else "inner"
        joined = self._then(Join(other.source, other.steps, tuple(left), tuple(right),
                                 kind, check_output_name(f"x{suffix}", "join(suffix)")[1:]))
        frame_after(joined.source, joined.steps)  # a name taken twice fails now
        return joined

    def skip(self, n: int) -> Query[M]:
        """Drop the first ``n`` rows."""
        return self._then(Skip(_positive(n, "skip", minimum=0)))

    def select(self, *columns: str | Expr | Sequence[str | Expr], **named: Expr) -> Query[M]:
        """Keep only these columns: names, expressions (``.alias()``-ed), or ``name=expr``.

        Selecting stored columns becomes the ``find`` projection; computed columns a
        ``$project`` stage. As in Polars, aggregations alone give one row (a ``$group`` of
        the whole result), and beside other columns are broadcast to every row.

        >>> Item.filter().select(lm.fld["price"].mean()).compile().pipeline[0]["$facet"]
        {'__loom_rows': [{'$group': {'_id': None, 'price': {'$avg': '$price'}}}, {'$project': {'_id': 0, 'price': '$price'}}]}
        """
        items = self._named(columns, named, "select()")
        if not items:
            raise PlanError("select() needs at least one column")
        if all(_aggregate(e) for _, e in items):  # one row, as in Polars
            return self._then(GroupBy((), items))
        return self._then(Select(_broadcast(items, "select()")))

    def with_columns(self, *columns: Expr | Sequence[Expr], **named: Expr) -> Query[M]:
        """Add (or replace) computed columns: ``.with_columns(total=fld['a'] * fld['b'])``.

        An aggregation is broadcast to every row, as in Polars (a window over the whole
        result). To combine it with other values, compute it in one ``with_columns`` and
        use the column in the next.

        >>> q = Item.filter().with_columns(avg=lm.fld["price"].mean())
        >>> q.compile().pipeline[0]["$setWindowFields"]
        {'output': {'__loom_w0': {'$avg': '$price'}}}
        """
        items = self._named(columns, named, "with_columns()")
        if not items:
            raise PlanError("with_columns() needs at least one column")
        return self._then(WithColumns(_broadcast(items, "with_columns()")))

    def group_by(self, *keys: str | Expr | Sequence[str | Expr], **named: Expr
                 ) -> GroupedQuery[M]:
        """Group rows by keys (names or expressions, e.g. ``fld['ts'].dt.truncate('1h')``)."""
        return GroupedQuery(self, self._named(keys, named, "group_by()"))

    def agg(
        self,
        pipeline: Sequence[Mapping[str, Any]],
        *,
        schema: pa.Schema | None = None,
        infer_schema_length: int | None = 100,
    ) -> Query[M]:
        """Append a raw aggregation pipeline (``AggregationStages`` or a list of stages).

        Its output shape is the pipeline's own: ``load_many()`` returns dicts, and frames
        use ``schema`` when given, else a schema inferred from the first
        ``infer_schema_length`` result rows (None: all of them), as Polars' readers do:
        nested documents become structs, int and double widen to double, other mixed
        types are Extended JSON text.
        """
        if schema is not None:
            for name in schema.names:
                check_output_name(name, "agg(schema=...)")
        if infer_schema_length is not None and (
            isinstance(infer_schema_length, bool) or not isinstance(infer_schema_length, int)
            or infer_schema_length < 1
        ):
            raise PlanError(f"infer_schema_length must be an int >= 1 or None, got "
                            f"{infer_schema_length!r}")
        stages = tuple(dict(stage) for stage in pipeline)
        for stage in stages:
            if len(stage) != 1 or not next(iter(stage)).startswith("$"):
                raise PlanError(f"a pipeline stage is a one-key dict like {{'$match': ...}}, got {stage!r}")
        return self._then(Pipeline(stages, schema, infer_schema_length))

    def _named(
        self, items: Sequence[Any], named: Mapping[str, Expr], what: str
    ) -> tuple[tuple[str, Expr], ...]:
        out: list[tuple[str, Expr]] = []
        flat: list[Any] = []
        for item in items:  # lists as Polars takes them: select(["a", "b"])
            flat.extend(item if isinstance(item, (list, tuple)) else [item])
        for item in flat:
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
        """The one MongoDB command that runs this whole query in MongoDB: what
        ``engine="mongodb"`` sends. With ``engine="auto"`` (the loaders' default) a join,
        group-by or window may run in Polars over the rows MongoDB sends instead:
        :meth:`explain` shows where each part runs."""
        if not self._compiled:
            from .partition import restrict

            command = compile_plan(self.source, self.steps)
            self._compiled.append(restrict(command, self.restriction))
        return self._compiled[0]

    def explain(self, engine: Engine = "auto") -> Explain:
        """What runs where: the exact MongoDB command, what (if anything) runs in Polars
        after it, and why (the figures the placement used; see
        :mod:`loom_frames.placement`). Asks the server which kind it is, and for joins its
        collections' sizes (metadata, no scan)."""
        return self._explain(self._placement(engine), engine)

    def _explain(self, placement: Placement | None, engine: Engine = "auto") -> Explain:
        if placement is None or not placement.local:
            reasons = () if placement is None else tuple(map(str, placement.reasons))
            return Explain(self.source.name, self.compile(), self.note, reasons=reasons)
        from .local import describe_step
        from .plan import Join

        sides = []
        for step in placement.local:
            if isinstance(step, Join):
                other = replace(self, source=step.other, steps=step.other_steps,
                                restriction=None, note="")
                sides.append(other._explain(other._placement(engine), engine))
        pushed = replace(self, steps=placement.pushed)
        return Explain(self.source.name, pushed.compile(), self.note,
                       local=tuple(describe_step(s) for s in placement.local),
                       reasons=tuple(map(str, placement.reasons)), sides=tuple(sides))

    def _placement(self, engine: str) -> Placement:
        """Where each step runs (see :mod:`loom_frames.placement`): no I/O when nothing
        is to be decided, else the server's kind (asked once) and, for joins, sizes."""
        from .placement import check_engine, decided, place

        engine = check_engine(engine)
        if engine == "mongodb" or not any(decided(s) for s in self.steps):
            return place(self.source, self.steps, "mongodb", None)
        from .read import cursor

        costs = cursor.server_costs(self._collection())

        def rows(source: Source, steps: tuple[Step, ...]) -> tuple[int, int]:
            """(all, filtered) documents: metadata, and the filters counted where the
            server's counts are cheap (a real mongod; see ServerCosts.counts)."""
            coll = cursor.open_collection(source.database, source.collection, source.model)
            total = cursor.estimated_rows(coll)
            filters = tuple(s for s in steps if isinstance(s, Filter))
            if not costs.counts or not filters:
                return total, total
            return total, cursor.count(coll, compile_plan(source, filters))

        return place(self.source, self.steps, engine, costs, rows)

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
        return f"<Query {self.source.name}>\n{self._shown()}"

    def _repr_html_(self) -> str:
        return self._shown()._repr_html_()

    def _shown(self) -> Explain:
        """The plan as a repr shows it: no I/O, so the all-in-MongoDB command, with a
        note where the placement of joins, group-bys or windows is still to decide."""
        from .placement import decided

        shown = self._explain(None)
        if any(decided(s) for s in self.steps):
            shown = replace(shown, reasons=("joins, group-bys and windows run where they "
                                            "cost least (engine='auto'): .explain() shows "
                                            "where",))
        return shown

    # ------------------------------------------------------------------ loaders
    def _model(self, what: str) -> type[M]:
        model = self.source.model
        if model is None:
            raise PlanError(f"{what} needs a model; {self.source.name} has only a schema. "
                            "Hint: load_polars()/load_table() return its rows.")
        return model  # type: ignore[return-value]  # the source was made from type[M]

    def _collection(self) -> Any:
        from .read.cursor import open_collection

        return open_collection(self.source.database, self.source.collection, self.source.model)

    def load_many(self) -> list[M]:
        """The matching documents as model objects (dicts for a raw ``agg`` pipeline).

        Every stored value is held to the model (see "Stored values" in
        :mod:`loom_frames.codec`); one that does not fit raises
        :class:`~loom_frames.errors.DocumentValidationError`.
        """
        from .read import objects

        command = self.compile()
        if any(isinstance(s, Pipeline) for s in self.steps):
            return list(objects.documents(self._collection(), command))  # type: ignore[arg-type]
        model = self._model("load_many()")
        if not command.whole_documents:
            raise PlanError(
                f"load_many() builds {model.__name__} objects, but this query returns only "
                "some columns or computed rows. Hint: use load_polars() / load_dataframe() "
                "/ load_table() for projections and group-bys."
            )
        return objects.load_objects(model, self._collection(), command)

    def load_one(self) -> M | None:
        """The first matching object (or dict), or None."""
        rows = self._first(1).load_many()
        return rows[0] if rows else None

    def load_latest(self) -> M | None:
        """The matching object with the newest ``updated_time`` (then newest ``id``), or None."""
        self._model("load_latest()")
        return self.sort("updated_time", "id", descending=True).load_one()

    def _first(self, k: int) -> Query[M]:
        if self.steps and isinstance(self.steps[-1], Limit):
            last = self.steps[-1]
            return replace(self, steps=(*self.steps[:-1], Limit(min(last.n, k))))
        return self.limit(k)

    def count(self, *, engine: Engine = "auto") -> int:
        """How many rows the query returns, counted by MongoDB (nothing is loaded); when
        part of the plan runs in Polars (``engine``, see :meth:`load_table`), Polars
        counts the rows of that part, reading only the columns it needs."""
        placement = self._placement(engine)
        if placement.local:
            import polars as pl

            from .local import lazy

            rows = lazy(self, placement, on_invalid="raise", engine=engine)
            return int(rows.select(pl.len()).collect().item())
        from .read import cursor

        return cursor.count(self._collection(), self.compile())

    def exists(self, *, engine: Engine = "auto") -> bool:
        """True when at least one row matches (MongoDB returns at most one ``_id``)."""
        return self._first(1).count(engine=engine) > 0

    def load_table(self, *, on_invalid: str = "raise", progress: Progress = "auto",
                   partitions: int = 1, engine: Engine = "auto") -> pa.Table:
        """The rows as a PyArrow table of the model's (or plan's) schema.

        ``on_invalid="null"`` loads values that do not fit the schema as null (default:
        raise, naming the model, field, ``_id`` and value). ``progress``: a bar of bytes
        received in an interactive session when the result spans several server batches
        (``"auto"``), ``True``/``False``, or a callable (see :mod:`loom_frames.progress`).
        ``partitions=k``: read :meth:`partitions` ``(k)`` on ``k`` connections in threads
        and concatenate them (the same rows; partition by partition, ``_id`` ranges
        ascending; no progress bar).

        ``engine``: where joins, group-bys and windows run. ``"auto"`` prices each both
        ways (MongoDB, or Polars over the rows MongoDB sends: see
        :mod:`loom_frames.placement` and :meth:`explain`), ``"mongodb"`` runs the whole
        query as one MongoDB command (:meth:`compile`), ``"polars"`` runs every join,
        group-by and window in Polars. Filters and projections always run in MongoDB.
        The result's columns and types are the same either way. A plan with a Polars
        part reads through scans (no progress bar; ``partitions`` is not used).
        """
        placement = self._placement(engine)
        if placement.local:
            from .local import collect

            return collect(self, placement, on_invalid=on_invalid, engine=engine)
        if partitions != 1:
            from .partition import load_split

            return load_split(self, partitions, on_invalid=on_invalid, progress=progress)
        from .read import frames

        return frames.load_table(self._collection(), self.compile(),
                                 on_invalid=on_invalid, progress=progress)  # type: ignore[arg-type]

    def load_polars(self, *, on_invalid: str = "raise", progress: Progress = "auto",
                    partitions: int = 1, engine: Engine = "auto") -> pl.DataFrame:
        """The rows as a Polars DataFrame (options as :meth:`load_table`)."""
        from .read.frames import to_frame

        return to_frame(self.load_table(on_invalid=on_invalid, progress=progress,
                                        partitions=partitions, engine=engine), "polars")

    def load_dataframe(self, *, on_invalid: str = "raise", progress: Progress = "auto",
                       engine: Engine = "auto") -> pd.DataFrame:
        """The rows as a pandas DataFrame (nullable dtypes, tz-aware UTC datetimes;
        options as :meth:`load_table`)."""
        from .read.frames import to_frame

        return to_frame(self.load_table(on_invalid=on_invalid, progress=progress,
                                        engine=engine), "pandas")

    def collect(self, *, on_invalid: str = "raise", progress: Progress = "auto",
                engine: Engine = "auto") -> pl.DataFrame:
        """Polars' name for :meth:`load_polars`: run the query, return a DataFrame."""
        return self.load_polars(on_invalid=on_invalid, progress=progress, engine=engine)

    def collect_schema(self) -> pl.Schema:
        """The result's Polars schema, without running anything.

        >>> Item.filter().select("sku", dear=lm.fld["price"] > 10).collect_schema()
        Schema([('sku', String), ('dear', Boolean)])
        """
        from .read.frames import to_frame

        schema = self.compile().schema
        if schema is None:
            raise PlanError("collect_schema(): the columns of a raw pipeline are unknown. "
                            "Hint: pass schema= to agg().")
        return to_frame(schema.empty_table(), "polars").schema  # type: ignore[no-any-return]

    def describe(self, percentiles: Sequence[float] | float | None = (0.25, 0.5, 0.75), *,
                 interpolation: str = "equiprobable") -> pl.DataFrame:
        """Summary statistics of every column, computed by ONE MongoDB aggregate, shaped
        like Polars' ``DataFrame.describe()`` (count, null_count, mean, std, min,
        percentiles, max).

        Percentiles are MongoDB's discrete ``$percentile`` (the ceil(q*n)-th value), which
        is Polars' ``interpolation="equiprobable"``; Polars' default ``"nearest"`` has no
        MongoDB equivalent.
        """
        from .describe import describe

        if interpolation != "equiprobable":
            raise PlanError(f"describe(interpolation={interpolation!r}): MongoDB's "
                            "$percentile is discrete, Polars' 'equiprobable'.")
        return describe(self, percentiles)

    def scan(self, *, on_invalid: str = "raise", engine: Engine = "auto") -> pl.LazyFrame:
        """This query as a Polars LazyFrame source with projection, predicate and limit
        pushdown (see :mod:`loom_frames.scan`); nothing is read until it is collected.
        ``on_invalid="null"`` reads values that do not fit as null, as the loaders do.
        A join, group-by or window placed in Polars (``engine``, see :meth:`load_table`)
        is part of the LazyFrame, over scans of what MongoDB runs."""
        placement = self._placement(engine)
        if placement.local:
            from .local import lazy

            return lazy(self, placement, on_invalid=on_invalid, engine=engine)
        from .scan import scan_query

        return scan_query(self, on_invalid=on_invalid)

    def iter_batches(
        self, batch_size: int = 65_536, *, on_invalid: str = "raise",
        progress: Progress = "auto", engine: Engine = "auto",
    ) -> Iterator[pa.RecordBatch]:
        """Stream the rows as Arrow record batches of at most ``batch_size`` rows (a plan
        with a Polars part, see :meth:`load_table`, is computed whole, then cut)."""
        from .read import frames

        placement = self._placement(engine)
        if placement.local:
            from .local import collect

            table = collect(self, placement, on_invalid=on_invalid, engine=engine)
            return iter(table.to_batches(max_chunksize=batch_size))

        command = self.compile()  # a raw pipeline without a schema: inferred, as loads do
        return frames.load_batches(self._collection(), command, batch_size=batch_size,
                                   on_invalid=on_invalid, progress=progress)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, eq=False)
class GroupedQuery(Generic[M]):
    """``query.group_by(...)``: finish it with ``.agg(name=fld['x'].mean(), ...)``."""

    query: Query[M]
    keys: tuple[tuple[str, Expr], ...]

    def len(self, name: str = "len") -> Query[M]:
        """The number of rows of each group (value counts): ``group_by("k").len()``.

        >>> Item.filter().group_by("sku").len().compile().pipeline[0]["$group"]["len"]
        {'$sum': 1}
        """
        return self.agg(Expr(n.Len()).alias(name))

    def agg(self, *aggregations: Expr | Sequence[Expr], **named: Expr) -> Query[M]:
        """One row per group: the keys, then one column per aggregation.

        >>> q = User.filter().group_by("name").agg(avg_age=lm.fld["age"].mean())
        >>> q.compile().pipeline[0]
        {'$group': {'_id': {'name': {'$ifNull': ['$name', None]}}, 'avg_age': {'$avg': '$age'}}}
        """
        items = self.query._named(aggregations, named, "agg()")
        if not items:
            raise PlanError("agg() needs at least one aggregation, e.g. n=lm.fld['x'].count()")
        for name, expr in items:
            if not _aggregate(expr):
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
    command: Command  # what MongoDB runs (with a Polars part: the rows it starts from)
    note: str = ""  # a partition's: which one, or why the query is not split
    local: tuple[str, ...] = ()  # the steps Polars runs after the command, in order
    reasons: tuple[str, ...] = ()  # where each join, group-by or window runs, and why
    sides: tuple[Explain, ...] = ()  # the other side of each join run in Polars

    @property
    def engines(self) -> tuple[str, ...]:
        """``("mongodb",)`` or ``("mongodb", "polars")``: who runs a part of the plan."""
        return ("mongodb", "polars") if self.local else ("mongodb",)

    def lines(self) -> list[str]:
        """The plan as text lines (the full command is ``self.command.to_dict()``)."""
        from .plan import _json

        cmd = self.command
        then = ", then Polars" if self.local else ""
        out = [f"{self.name}: one MongoDB {cmd.operation} on {cmd.namespace}{then}"
               + (f" ({self.note})" if self.note else "")]
        for key, value in cmd.to_dict().items():
            if key in (cmd.operation, "find", "aggregate"):
                continue
            if key == "pipeline":
                out.append("  pipeline:")
                out.extend(f"    {_json(stage)}" for stage in value)
            else:
                out.append(f"  {key}: {_json(value)}")
        if cmd.columns is not None:
            cols = ", ".join(f"{c.name}: {c.frame_type}" for c in cmd.columns)
            out.append(f"  columns: {cols}")
            out.append("locally: type conversion of the returned columns (ObjectId -> hex "
                       "string, ...); cells that came back null are checked against the "
                       "raw documents")
        else:
            out.append("locally: column types inferred from the first result rows")
        for side in self.sides:
            out.append("joined with the rows of:")
            out.extend("  " + line for line in side.lines())
        if self.local:
            out.append("then in Polars (MongoDB sends only the columns these steps read, "
                       "filtered as far as Polars can push):")
            out.extend(f"  {line}" for line in self.local)
        if self.reasons:
            out.append("placement:")
            out.extend(f"  {line}" for line in self.reasons)
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return "<pre>" + html.escape(str(self)) + "</pre>"


def _flags(value: bool | Sequence[bool], count: int, what: str) -> list[bool]:
    flags = [value] * count if isinstance(value, bool) else list(value)
    if len(flags) != count or not all(isinstance(f, bool) for f in flags):
        raise PlanError(f"{what} takes a bool or one bool per key ({count}), got {value!r}")
    return flags


def _names(items: Sequence[Any]) -> list[str]:
    names: list[str] = []
    for item in items:
        for name in [item] if isinstance(item, str) else list(item):
            if not isinstance(name, str):
                raise PlanError(f"expected column names, got {name!r}")
            names.append(name)
    return names


def _positive(value: int, what: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PlanError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def _aggregate(expr: Expr) -> bool:
    """True for an aggregation over the whole input (``mean()``, ``lm.len()``, ...)."""
    return isinstance(n.unaliased(expr.node), (n.Aggregation, n.Len))


def _broadcast(items: Sequence[tuple[str, Expr]], what: str) -> tuple[tuple[str, Expr], ...]:
    """Aggregations beside row values become windows over the whole result, so every row
    gets the value (Polars broadcasts them)."""
    out: list[tuple[str, Expr]] = []
    for name, expr in items:
        if _aggregate(expr):
            node = n.unaliased(expr.node)
            if not isinstance(node, n.WINDOWABLE):
                raise PlanError(
                    f"{what}: {name}={expr!r} is an aggregation broadcast to every row, which "
                    "MongoDB computes as a window, and windows have no "
                    f"{type(node).__name__.lower()}. Hint: select it alone (one row), or "
                    "compute it with group_by().agg() and join.")
            expr = Expr(n.Over(node))
        out.append((name, expr))
    return tuple(out)
