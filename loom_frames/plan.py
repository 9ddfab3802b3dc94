"""Query plans: immutable steps, and their compilation to ONE MongoDB command.

A plan is a source (a model's collection, or any collection with a schema) and a tuple
of steps. :func:`compile_plan` turns it into a :class:`Command`: a ``find`` whenever the
steps fit one (match, sort, skip, limit, projection of stored columns), otherwise one
``aggregate`` pipeline. Filters come first as one ``$match`` (a filter written after a
sort moves before it: the rows are the same), group-bys become ``$group`` with the keys
flattened back into columns, and the output Arrow schema travels with the command, so
nothing leaves MongoDB that the result does not need.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from .errors import FieldNotFoundError, PlanError
from .expr import Expr
from .expr import nodes as n
from .expr.bind import Kind, kind_of
from .expr.dtypes import COMPUTED_METADATA, arrow_type
from .expr.mongo import conjoin
from .fields import Role
from .schema import Column, ModelResolver, columns_from_arrow, model_columns, projection_of

if TYPE_CHECKING:
    from .model import Persistable

__all__ = [
    "Command",
    "Explode",
    "Filter",
    "GroupBy",
    "Limit",
    "Join",
    "Pipeline",
    "Sample",
    "Select",
    "Skip",
    "Sort",
    "Source",
    "Step",
    "WithColumns",
    "compile_plan",
    "frame_after",
]


# ------------------------------------------------------------------------- sources
@dataclass(frozen=True, slots=True)
class Source:
    """Where a plan reads from: a model's collection, or a collection with a schema."""

    database: str
    collection: str
    columns: tuple[Column, ...]
    name: str  # the model's name, or "db.collection" for a schema-only source
    model: type[Persistable] | None = None

    @classmethod
    def of_model(cls, model: type[Persistable]) -> Source:
        config = model.persist_config()
        return cls(
            config.database, config.collection_name, model_columns(model), model.__name__, model
        )

    @classmethod
    def of_collection(cls, database: str, collection: str, schema: pa.Schema) -> Source:
        return cls(database, collection, columns_from_arrow(schema), f"{database}.{collection}")


# --------------------------------------------------------------------------- steps
@dataclass(frozen=True, slots=True)
class Filter:
    predicate: Expr  # bound to the frame before this step


@dataclass(frozen=True, slots=True)
class Sort:
    keys: tuple[tuple[str, bool], ...]  # (column name, descending)
    # Polars' nulls_last per key (None: MongoDB's own order, nulls first ascending)
    nulls_last: tuple[bool | None, ...] = ()
    computed: tuple[tuple[str, Expr], ...] = ()  # (temporary key, expression) to sort by


@dataclass(frozen=True, slots=True)
class Skip:
    n: int


@dataclass(frozen=True, slots=True)
class Limit:
    n: int


@dataclass(frozen=True, slots=True)
class Select:
    items: tuple[tuple[str, Expr], ...]  # (output name, bound expression)


@dataclass(frozen=True, slots=True)
class WithColumns:
    items: tuple[tuple[str, Expr], ...]


@dataclass(frozen=True, slots=True)
class GroupBy:
    keys: tuple[tuple[str, Expr], ...]
    aggs: tuple[tuple[str, Expr], ...]


@dataclass(frozen=True, slots=True)
class Explode:
    """One row per element of a list column (``$unwind``), as Polars explodes: an empty
    list gives no row (one null row with ``empty_as_null``), a null list one null row
    (none without ``keep_nulls``)."""

    column: str
    empty_as_null: bool = False
    keep_nulls: bool = True


@dataclass(frozen=True, slots=True)
class Sample:
    """``n`` rows drawn at random (``$sample``)."""

    n: int


@dataclass(frozen=True, slots=True)
class Join:
    """Rows of another collection joined on keys (``$lookup`` + ``$unwind``).

    ``keep``: the names (as output by the join) of the other side's columns the rows
    carry on; None carries them all. The frame lists every column either way: only what
    travels between stages changes. :func:`compile_plan` fills it in (see
    :func:`_prune`) with the columns that a later step or the output uses.
    """

    other: Source
    other_steps: tuple[Step, ...]
    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    how: Literal["inner", "left"]
    suffix: str
    keep: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A raw aggregation pipeline (``Model.agg(...)``); its output shape is the user's."""

    stages: tuple[Mapping[str, Any], ...]
    schema: pa.Schema | None = None
    infer_schema_length: int | None = 100  # without a schema: documents sampled to type it


Step = (Filter | Sort | Skip | Limit | Select | WithColumns | GroupBy | Pipeline | Explode
        | Sample | Join)


# --------------------------------------------------------------------------- frames
@dataclass(frozen=True, slots=True)
class Frame:
    """The rows between two steps: their columns, and whether they are whole documents."""

    columns: tuple[Column, ...] | None  # None: unknown (after a raw pipeline)
    documents: bool  # rows are the source's documents (storage keys, ``_id`` present)
    whole: bool  # ... with every column of the model (objects can be hydrated)
    name: str
    computed: tuple[tuple[str, str], ...] = ()  # (column, expression source) computed so far

    def resolver(self) -> ModelResolver:
        if self.columns is None:
            raise PlanError(
                f"{self.name}: the columns after a raw pipeline are unknown. Hint: pass "
                "schema= to agg(), or filter/sort before the pipeline."
            )
        return _resolver_of(self.name, self.columns)

    def column(self, name: str) -> Column:
        """A top-level column by name (storage key accepted; ``id`` <-> ``_id``)."""
        ref = self.resolver().resolve(name)
        for col in self.columns or ():
            if col.key == ref.path or col.name == ref.path:
                return col
        raise PlanError(f"{self.name}: {name!r} is not a top-level column")


@functools.lru_cache(maxsize=256)
def _resolver_of(name: str, columns: tuple[Column, ...]) -> ModelResolver:
    # Shared by every query over the same columns, so names resolve once (a model's
    # columns are cached objects; derived frames' columns are new ones, and miss).
    return ModelResolver(name, columns)


def initial_frame(source: Source) -> Frame:
    return Frame(source.columns, documents=True, whole=source.model is not None,
                 name=source.name)


def frame_after(source: Source, steps: Sequence[Step]) -> Frame:
    """The frame the next step of a plan sees."""
    frame = initial_frame(source)
    for step in steps:
        frame = _advance(frame, step)
    return frame


def _advance(frame: Frame, step: Step) -> Frame:
    if isinstance(step, (Filter, Sort, Skip, Limit, Sample)):
        return frame
    if isinstance(step, Explode):
        col = frame.column(step.column)
        assert col.item is not None
        item = dataclasses.replace(col.item, name=col.name, key=col.key)
        exploded = tuple(item if c is col else c for c in frame.columns or ())
        return Frame(exploded, documents=False, whole=False, name=frame.name,
                     computed=frame.computed)
    if isinstance(step, Join):
        return _joined(frame, step)
    if isinstance(step, Pipeline):
        cols = columns_from_arrow(step.schema) if step.schema is not None else None
        return Frame(cols, documents=False, whole=False, name=frame.name)
    was = dict(frame.computed)
    if isinstance(step, Select):
        if frame.documents and _projection_only(step.items):
            sources = [(name, frame.column(_field_name(e))) for name, e in step.items]
            cols = tuple(_renamed(col, name, keep_key=True) for name, col in sources)
            computed = tuple((name, was[col.name]) for name, col in sources if col.name in was)
            return Frame(cols, documents=True, whole=False, name=frame.name, computed=computed)
        cols = tuple(_computed(frame, name, e) for name, e in step.items)
        return Frame(cols, documents=False, whole=False, name=frame.name,
                     computed=_sources(step.items, was))
    if isinstance(step, WithColumns):
        added = {name: _computed(frame, name, e) for name, e in step.items}
        kept = tuple(c for c in frame.columns or () if c.name not in added)
        kept_sources = {**{k: v for k, v in was.items() if k not in added},
                        **dict(_sources(step.items, {}))}
        return Frame((*kept, *added.values()), documents=frame.documents, whole=False,
                     name=frame.name, computed=tuple(kept_sources.items()))
    if isinstance(step, GroupBy):
        items = (*step.keys, *step.aggs)
        cols = tuple(_computed(frame, name, e) for name, e in items)
        # A group's row is no stored document: every column, keys included, is computed.
        computed = tuple((name, repr(e)) for name, e in items)
        return Frame(cols, documents=False, whole=False, name=frame.name, computed=computed)
    raise PlanError(f"unknown plan step {step!r}")


JOINED = "__loom_join"
"""Where ``$lookup`` puts the matching rows of the other collection."""


def join_columns(frame: Frame, step: Join) -> list[tuple[str, Column]]:
    """(output name, column of the other side) of the other side's columns in the result:
    every column but the keys (Polars keeps the left ones), renamed with ``suffix`` where
    the left side has the name already. All of them, whatever ``step.keep`` says (see
    :func:`_carried` for those the rows carry)."""
    right = frame_after(step.other, step.other_steps)
    taken = {c.name for c in frame.columns or ()}
    keys = {right.column(k).name for k in step.right_on}
    out = []
    for col in right.columns or ():
        if col.name in keys:
            continue
        name = col.name + step.suffix if col.name in taken else col.name
        if name in taken:
            if _bookkeeping(col):  # a second join's id / created_at / updated_time
                continue
            raise PlanError(f"join({step.other.name}): the column {name!r} would be there "
                            f"twice. Hint: join(..., suffix='_{step.other.name.lower()}').")
        taken.add(name)
        out.append((name, col))
    return out


def _bookkeeping(col: Column) -> bool:
    """The columns every model has (``id``, ``created_at``, ``updated_time``): a join
    whose suffixed names are taken (the second join of a chain) leaves them out."""
    return col.key == "_id" or col.name in ("created_at", "updated_time") and col.role in (
        Role.TIME_INSERTED, Role.TIME_UPDATED)


def _carried(frame: Frame, step: Join) -> list[tuple[str, Column]]:
    """The :func:`join_columns` the joined rows carry: those in ``step.keep`` (all when
    it is None)."""
    columns = join_columns(frame, step)
    if step.keep is None:
        return columns
    return [(name, col) for name, col in columns if name in step.keep]


def _joined(frame: Frame, step: Join) -> Frame:
    """The frame after a join: the left columns, then every :func:`join_columns` (the
    pruned ones too: a column no later step uses is listed, never read)."""
    added = tuple(_renamed(col, name, keep_key=False) for name, col in join_columns(frame, step))
    return Frame((*(frame.columns or ()), *added), documents=False, whole=False,
                 name=frame.name, computed=frame.computed)


_UNMATCHABLE_KINDS = (Kind.LIST, Kind.STRUCT, Kind.ANY)
"""Key kinds that ``localField``/``foreignField`` compare otherwise than Polars (an array
matches any of its elements)."""


def _join_stages(frame: Frame, step: Join) -> list[dict[str, Any]]:
    """``$lookup`` + ``$unwind`` + ``$set`` of the carried columns + ``$unset``.

    When the other side's first key is a stored field that its steps leave as stored,
    dropping or keeping each document on its own (see :func:`_foreign_field`), the lookup
    is the concise form ``{from, localField, foreignField, pipeline, as}``: MongoDB
    matches ``foreignField`` first (from an index, when there is one), then runs the
    pipeline: ``{$match: {<foreign key>: {$ne: null}}}`` (a null or missing key matches
    nothing, as in Polars: ``localField`` would match a null left key to right documents
    with null or missing keys), then the other side's own stages. Otherwise (a key the
    other side's pipeline computes, e.g. after a group-by; a skip, limit or sample on the
    other side, which must see all its rows) the other side's stages run first, then a
    ``let`` + ``$expr`` match on the key. Further key pairs (compound joins) are ``let``
    + ``$expr`` ``$eq`` conditions after the other side's stages, in both forms. The
    lookup's ``$project`` lists the carried columns only (see :func:`_prune`).
    """
    right = frame_after(step.other, step.other_steps)
    columns = _carried(frame, step)
    # the other side's own joins carry only what this one reads of it
    needed = {col.name for _, col in columns} | {right.column(k).name for k in step.right_on}
    other = compile_plan(step.other, _prune(step.other, step.other_steps, needed))
    own = [dict(s) for s in other.stages(projected=False) if s != {"$match": {}}]
    local = [frame.column(k).key for k in step.left_on]
    foreign = _foreign_field(frame, step)
    lookup: dict[str, Any] = {"from": step.other.collection}
    pairs = range(len(local))
    if foreign is not None:
        lookup.update(localField=local[0], foreignField=foreign)
        inner: list[dict[str, Any]] = [{"$match": {foreign: {"$ne": None}}}, *own]
        pairs = range(1, len(local))
    else:  # the other side's own stages first: they may compute the keys, or need all rows
        inner = own
    matches: list[Any] = []
    for i in pairs:
        path = "$" + right.column(step.right_on[i]).key
        matches += [{"$eq": [path, f"$$k{i}"]}, {"$gt": [f"$$k{i}", None]}]
    if matches:
        lookup["let"] = {f"k{i}": "$" + local[i] for i in pairs}
        inner.append({"$match": {"$expr": {"$and": matches}}})
    if not columns:  # none carried (a semi-join): the smallest document
        inner.append({"$project": {"_id": 1}})
    elif any(col.key == "_id" for _, col in columns):
        inner.append({"$project": {col.key: 1 for _, col in columns}})
    else:
        inner.append({"$project": {"_id": 0, **{col.key: 1 for _, col in columns}}})
    lookup.update(pipeline=inner, **{"as": JOINED})
    unwind = {"path": "$" + JOINED, "preserveNullAndEmptyArrays": step.how == "left"}
    values = {name: f"${JOINED}.{col.key}" for name, col in columns}
    return [{"$lookup": lookup}, {"$unwind": unwind}, {"$set": values} if values else {},
            {"$unset": JOINED}]


def _foreign_field(frame: Frame, step: Join) -> str | None:
    """The stored path of the other side's first key, usable as ``foreignField``.

    ``foreignField`` matches the other collection's documents as stored, before the
    lookup's pipeline runs: that selects the rows the other side's steps would give
    only when those steps leave the key as stored and keep or drop each document on its
    own (filters, sorts, row-wise columns, explodes and joins not touching the key).
    None when a step computes the key (a group-by, a computed or renamed key, an
    exploded one, a raw pipeline) or needs the other rows (skip, limit, sample, a
    window), or when either key holds lists, structs or free-form values (an array
    would match any of its elements).
    """
    left = frame.column(step.left_on[0])
    if left.kind in _UNMATCHABLE_KINDS:
        return None
    frames = _frames(step.other, step.other_steps)
    name = frames[-1].column(step.right_on[0]).name
    for before, other_step in reversed(list(zip(frames, step.other_steps, strict=False))):
        if isinstance(other_step, (Skip, Limit, Sample, GroupBy, Pipeline)):
            return None
        if isinstance(other_step, Filter):
            if not _row_wise(other_step.predicate.node):
                return None
        elif isinstance(other_step, Explode):
            if before.column(other_step.column).name == name:
                return None
        elif isinstance(other_step, Join):
            if name in {out for out, _ in join_columns(before, other_step)}:
                return None
        elif isinstance(other_step, (Select, WithColumns)):
            if not all(_row_wise(e.node) for _, e in other_step.items):
                return None
            source = next((e for out, e in other_step.items if out == name), None)
            if source is not None:
                if not _plain(source):
                    return None
                name = before.column(_field_name(source)).name
    col = frames[0].column(name)
    return None if col.kind in _UNMATCHABLE_KINDS else col.key


def _row_wise(node: n.Node) -> bool:
    """True when an expression's value in a row depends on that row only (no window,
    aggregation or row count anywhere in it)."""
    if isinstance(node, (n.Over, n.Aggregation, n.Len, *n.WINDOW_FUNCTIONS)):
        return False
    return all(_row_wise(child) for child in n.children(node))


def _frames(source: Source, steps: Sequence[Step]) -> list[Frame]:
    """The frame before each step, then the frame after the last."""
    frames = [initial_frame(source)]
    for step in steps:
        frames.append(_advance(frames[-1], step))
    return frames


# ------------------------------------------------------------------ column pruning
def _prune(
    source: Source, steps: Sequence[Step], needed: Iterable[str] | None = None
) -> list[Step]:
    """``steps`` with each :class:`Join`'s ``keep`` set to the other side's columns that
    a later step uses or the output holds (``needed``: the output columns that are used;
    None: all of them).

    A pure pass, backwards from the output: a select or group-by needs the columns its
    expressions read (and nothing else from before it), a with_columns those it reads
    plus the needed columns it does not replace, a filter, sort or explode what it reads
    on top of what is needed after it, a later join its left keys, and a raw pipeline
    every column. A join keeps the columns it adds that are needed after it (within a
    ``keep`` given already). The frames, and so the output columns, do not change: only
    what the lookups carry.

    >>> from loom_frames import Persistable, declare_persist_db, fld
    >>> @declare_persist_db(db_name="app", collection_name="teams")
    ... class Team(Persistable):
    ...     code: str
    ...     city: str
    >>> @declare_persist_db(db_name="app", collection_name="players")
    ... class Player(Persistable):
    ...     team: str
    ...     goals: int
    >>> q = Player.filter().join(Team, left_on="team", right_on="code")
    >>> sorted(_prune(q.source, q.steps)[0].keep)  # all: every column is output
    ['city', 'created_at_right', 'id_right', 'updated_time_right']
    >>> q = q.filter(fld["goals"] > 2).select("goals", "city")
    >>> sorted(_prune(q.source, q.steps)[0].keep)
    ['city']
    """
    if not any(isinstance(step, Join) for step in steps):
        return list(steps)
    frames = _frames(source, steps)
    need: set[str] | None = None if needed is None else set(needed)
    out = list(steps)
    for index in reversed(range(len(steps))):
        step, before = steps[index], frames[index]
        if isinstance(step, Join):
            added = [name for name, _ in join_columns(before, step)]
            keep = {a for a in added if need is None or a in need}
            if step.keep is not None:
                keep &= step.keep
            if keep != step.keep:
                out[index] = dataclasses.replace(step, keep=frozenset(keep))
            if need is not None:
                need |= {_column_name(before, k) for k in step.left_on}
        elif isinstance(step, Select):
            need = _reads(before, (e for _, e in step.items))
        elif isinstance(step, GroupBy):
            need = _reads(before, (e for _, e in (*step.keys, *step.aggs)))
        elif isinstance(step, Pipeline):
            need = None
        elif need is None:
            continue  # every column is needed already
        elif isinstance(step, WithColumns):
            need = (need - {name for name, _ in step.items}) | _reads(
                before, (e for _, e in step.items))
        elif isinstance(step, Filter):
            need |= _reads(before, [step.predicate])
        elif isinstance(step, Sort):
            temporary = {name for name, _ in step.computed}
            need |= {_column_name(before, k) for k, _ in step.keys if k not in temporary}
            need |= _reads(before, (e for _, e in step.computed))
        elif isinstance(step, Explode):
            need.add(_column_name(before, step.column))
    return out


def _reads(frame: Frame, exprs: Iterable[Expr]) -> set[str]:
    """The top-level columns of ``frame`` that expressions read."""
    out: set[str] = set()
    todo = [e.node for e in exprs]
    while todo:
        node = todo.pop()
        if isinstance(node, n.Field):
            if node.ref is not None and node.ref.columns:
                out.add(node.ref.columns[0])
            else:
                out.add(_column_name(frame, node.name.split(".")[0]))
        todo.extend(n.children(node))
    return out


def _column_name(frame: Frame, name: str) -> str:
    """The frame's name of a top-level column given by name or storage key (``name``
    itself when the frame does not know it)."""
    if frame.columns is None:
        return name
    try:
        return frame.column(name).name
    except (PlanError, FieldNotFoundError):
        return name


def _sources(
    items: Sequence[tuple[str, Expr]], was: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """(name, expression source) of the items that compute a value (a plain field copies
    one, computed or stored before)."""
    out: list[tuple[str, str]] = []
    for name, expr in items:
        if not isinstance(expr.node, n.Field):
            out.append((name, repr(expr)))
        elif "." not in expr.node.name and expr.node.name in was:
            out.append((name, was[expr.node.name]))
    return tuple(out)


def _projection_only(items: Sequence[tuple[str, Expr]]) -> bool:
    """True when a selection is a ``find`` projection: plain stored fields, each once (a
    field selected twice under two names is computed, by a ``$project``)."""
    if not all(_plain(e) for _, e in items):
        return False
    fields = [_field_name(e) for _, e in items]
    return len(set(fields)) == len(fields)


def _plain(expr: Expr) -> bool:
    node = expr.node
    return isinstance(node, n.Field) and "." not in node.name


def _field_name(expr: Expr) -> str:
    node = expr.node
    assert isinstance(node, n.Field)
    return node.ref.path if node.ref is not None else node.name


def _renamed(col: Column, name: str, *, keep_key: bool) -> Column:
    return dataclasses.replace(col, name=name, key=col.key if keep_key else name)


def _computed(frame: Frame, name: str, expr: Expr) -> Column:
    """The output column of an expression evaluated server-side into key ``name``."""
    node = n.unaliased(expr.node)
    source = _source_column(frame, node)
    if source is not None:
        return _renamed(source, name, keep_key=False)
    kind = kind_of(node)
    arrow = arrow_type(node)  # the one rule the Polars compiler follows too
    if arrow is None:
        raise PlanError(
            f"{frame.name}: cannot tell the column type of {expr!r} ({kind.value}). "
            "Hint: cast or select plain fields."
        )
    return Column(name, name, kind, arrow)


def _source_column(frame: Frame, node: n.Node) -> Column | None:
    """The column whose type an expression keeps (a field, or min/max/first/last of one,
    also over a window, or shifted)."""
    if isinstance(node, n.Over):
        node = node.arg
    if isinstance(node, (n.Min, n.Max, n.First, n.Last, n.Shift)):
        node = n.unaliased(node.arg)
    if not isinstance(node, n.Field) or node.ref is None:
        return None
    cols: Sequence[Column] = frame.columns or ()
    col: Column | None = None
    for part in node.ref.columns:
        if col is not None and col.type is None and not col.children:
            # a path into a free-form value (dict, Any, ...): free-form too (JSON text)
            return Column(node.ref.columns[-1], node.ref.columns[-1], Kind.ANY, None)
        col = next((c for c in cols if c.name == part), None)
        if col is None:
            return None
        cols = col.children
    return col




# ------------------------------------------------------------------------ commands
@dataclass(frozen=True, slots=True, eq=False)
class Command:
    """The one MongoDB command a plan runs, and the columns it returns.

    ``operation`` is ``"find"`` (with ``filter``/``sort``/``skip``/``limit`` and the
    ``projection``) or ``"aggregate"`` (with ``pipeline``; the ``projection`` is its last
    ``$project``). ``columns`` are the result's columns (None after a raw pipeline without
    a schema: the loader infers them), ``computed`` the expression each computed column
    holds. A pure value: building, printing or comparing it runs and imports nothing of
    the read side.
    """

    database: str
    collection: str
    operation: Literal["find", "aggregate"]
    columns: tuple[Column, ...] | None
    filter: Mapping[str, Any] | None = None
    sort: tuple[tuple[str, int], ...] = ()
    skip: int = 0
    limit: int = 0
    pipeline: tuple[Mapping[str, Any], ...] = ()
    whole_documents: bool = False  # rows are complete model documents
    documents: bool = False  # rows are stored documents (an error can name their _id)
    name: str = ""  # the model's name, or "db.collection", for messages
    computed: tuple[tuple[str, str], ...] = ()  # (column, expression source)
    projection: Mapping[str, Any] | None = None  # the plain projection of ``columns``
    infer_schema_length: int | None = 100  # columns None: result rows sampled to type them

    @property
    def namespace(self) -> str:
        return f"{self.database}.{self.collection}"

    @property
    def schema(self) -> pa.Schema | None:
        """The result's Arrow schema (field metadata: storage key, kind, computed source)."""
        if self.columns is None:
            return None
        return _schema_of(self.columns, self.name, self.computed)

    def to_dict(self) -> dict[str, Any]:
        """The command as MongoDB receives it (projection included)."""
        if self.operation == "find":
            out: dict[str, Any] = {"find": self.collection, "filter": dict(self.filter or {})}
            if self.projection is not None:
                out["projection"] = dict(self.projection)
            if self.sort:
                out["sort"] = dict(self.sort)
            if self.skip:
                out["skip"] = self.skip
            if self.limit:
                out["limit"] = self.limit
            return out
        return {"aggregate": self.collection, "pipeline": [dict(s) for s in self.stages()]}

    def stages(self, *, projected: bool = True) -> list[Mapping[str, Any]]:
        """An aggregate's pipeline as sent (its projection last, unless ``projected`` is
        False); a find's as the stages that select the same rows."""
        if self.operation == "find":
            stages: list[Mapping[str, Any]] = [{"$match": dict(self.filter or {})}]
            if self.sort:
                stages.append({"$sort": dict(self.sort)})
            if self.skip:
                stages.append({"$skip": self.skip})
            if self.limit:
                stages.append({"$limit": self.limit})
        else:
            stages = list(self.pipeline)
        if projected and self.projection is not None:
            stages.append({"$project": dict(self.projection)})
        return stages

    def counting(self) -> dict[str, Any]:
        """The ``aggregate`` that counts the rows this command returns (as ``{"n": ...}``,
        or no document for none): its rows without sort or projection, then ``$count``."""
        if self.operation == "find":
            stages = [s for s in self.stages(projected=False) if "$sort" not in s]
        else:
            stages = [dict(s) for s in self.pipeline]
        return {"aggregate": self.collection, "pipeline": [*stages, {"$count": "n"}]}

    def __repr__(self) -> str:
        return f"Command({self.database!r}, {_json(self.to_dict())})"

    def __eq__(self, other: object) -> bool:
        # Equal commands send the same thing and return the same columns: columns are
        # compared through their Arrow schema (a derived plan's columns are new objects).
        if not isinstance(other, Command):
            return NotImplemented
        mine = [getattr(self, f) for f in self.__dataclass_fields__ if f != "columns"]
        theirs = [getattr(other, f) for f in other.__dataclass_fields__ if f != "columns"]
        return mine == theirs and self.schema == other.schema

    __hash__ = None  # type: ignore[assignment]  # it holds dicts


def _json(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def _json_default(value: Any) -> Any:
    import datetime as _dt

    from bson import ObjectId

    if isinstance(value, _dt.datetime):
        return {"$date": value.isoformat()}
    if isinstance(value, ObjectId):
        return {"$oid": str(value)}
    return repr(value)


# ------------------------------------------------------------------------ compiling
def compile_plan(source: Source, steps: Sequence[Step]) -> Command:
    """The single command that runs ``steps`` on ``source``.

    >>> from loom_frames import Persistable, declare_persist_db, fld
    >>> @declare_persist_db(db_name="app", collection_name="users")
    ... class User(Persistable):
    ...     name: str
    ...     age: int
    >>> cmd = compile_plan(Source.of_model(User), [Filter(fld["age"] > 25), Limit(10)])
    >>> cmd.operation, dict(cmd.filter), cmd.limit
    ('find', {'age': {'$gt': 25}}, 10)
    """
    steps = _prune(source, steps)  # joins carry only the columns used later
    stages: list[dict[str, Any]] = []
    frame = initial_frame(source)
    for step in steps:
        again = (source.collection, _optimise(list(stages)))
        stages.extend(_stages(frame, step, again))
        frame = _advance(frame, step)
    stages = _optimise(stages)
    common: dict[str, Any] = {
        "whole_documents": frame.whole, "documents": frame.documents, "name": frame.name,
        "computed": frame.computed, "projection": _projection(frame),
    }
    pipelines = [s for s in steps if isinstance(s, Pipeline)]
    if pipelines:
        common["infer_schema_length"] = pipelines[-1].infer_schema_length
    find = _as_find(stages, frame)
    if find is not None:
        filter_, sort, skip, limit = find
        return Command(source.database, source.collection, "find", frame.columns, filter_,
                       sort, skip, limit, **common)
    return Command(source.database, source.collection, "aggregate", frame.columns,
                   pipeline=tuple(stages), **common)


def _projection(frame: Frame) -> dict[str, Any] | None:
    """The plain projection of the result's columns: their top-level keys, whole (a
    sub-document or array is fetched whole, so a value of the wrong shape reaches the
    client to be reported). Nothing is computed."""
    if frame.columns is None:
        return None
    return projection_of(frame.columns)


@functools.lru_cache(maxsize=256)
def _schema_of(
    columns: tuple[Column, ...], name: str, computed: tuple[tuple[str, str], ...] = ()
) -> pa.Schema:
    # Cached: a model's columns are cached objects (compared by identity), so the plans of
    # a model share one schema object. Only users of ``Command.schema`` build it; the
    # loaders read the columns themselves.
    sources = dict(computed)
    fields = []
    for col in columns:
        field = col.arrow_field()
        if col.name in sources:
            meta = {**(field.metadata or {}), COMPUTED_METADATA: sources[col.name].encode()}
            field = field.with_metadata(meta)
        fields.append(field)
    return pa.schema(fields, metadata={b"loom.model": name.encode()})


def _stages(
    frame: Frame, step: Step, again: tuple[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The stages of one step; ``again`` is (collection, stages) re-creating its input,
    for a group-by that reads it twice (see :func:`~loom_frames.expr.mongo.group_stages`)."""
    if isinstance(step, Filter):
        return [{"$match": step.predicate.to_mongo()}]
    if isinstance(step, Sort):
        return _sort(frame, step)
    if isinstance(step, Explode):
        key = frame.column(step.column).key
        drop: list[dict[str, Any]] = ([] if step.empty_as_null else [{key: {"$ne": []}}]) + (
            [] if step.keep_nulls else [{key: {"$ne": None}}])
        match = [{"$match": drop[0] if len(drop) == 1 else {"$and": drop}}] if drop else []
        return [*match, {"$unwind": {"path": "$" + key, "preserveNullAndEmptyArrays": True}}]
    if isinstance(step, Sample):
        return [{"$sample": {"size": step.n}}]
    if isinstance(step, Join):
        return _join_stages(frame, step)
    if isinstance(step, Skip):
        return [{"$skip": step.n}]
    if isinstance(step, Limit):
        return [{"$limit": step.n}]
    if isinstance(step, Pipeline):
        return [dict(s) for s in step.stages]
    if isinstance(step, Select):
        if frame.documents and _projection_only(step.items):
            return []  # the projection follows from the output schema
        stages, values, _ = _computing(step.items)
        return [*stages, {"$project": {"_id": 0, **values}}]
    if isinstance(step, WithColumns):
        stages, values, temps = _computing(step.items)
        return [*stages, {"$set": values}, *([{"$unset": temps}] if temps else [])]
    if isinstance(step, GroupBy):
        return _group(step, again)
    raise PlanError(f"unknown plan step {step!r}")


def _computing(
    items: Sequence[tuple[str, Expr]],
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """Stages computing the window columns among ``items`` (into temporary fields, so
    every item still reads the columns as they were), each item's value, the temporaries."""
    from .expr.mongo_window import is_window, temp_name, window_stages

    windows = [(name, expr.node) for name, expr in items if is_window(expr.node)]
    stages, temps = window_stages(windows)
    values: dict[str, Any] = {}
    index = 0
    for name, expr in items:
        if is_window(expr.node):
            values[name] = "$" + temp_name(index)
            index += 1
        else:
            values[name] = _value(expr)
    return stages, values, temps


def _nullable(frame: Frame, name: str) -> bool:
    """Whether a column may hold null: computed, schema-only or Optional model columns
    (a model field that is not Optional holds a value in every document that fits)."""
    if frame.columns is None:
        return True
    col = frame.column(name)
    return col.optional or col.annotation is None or col.name in dict(frame.computed)


def _sort(frame: Frame, step: Sort) -> list[dict[str, Any]]:
    """``$sort``; nulls placed as Polars' ``nulls_last`` says, through a flag computed
    first where MongoDB's own order (nulls first ascending, last descending) differs."""
    computed = dict(step.computed)
    before: dict[str, Any] = {name: _value(expr) for name, expr in step.computed}
    spec: dict[str, int] = {}
    flags = step.nulls_last or (None,) * len(step.keys)
    for index, ((name, desc), last) in enumerate(zip(step.keys, flags, strict=True)):
        key = name if name in computed else _sort_key(frame, name)
        nullable = name in computed or (frame.columns is not None and _nullable(frame, name))
        if last is not None and last != desc and nullable:
            flag = f"__loom_s{index}_null"
            value = before.get(key, "$" + key)  # a computed key: its expression
            before[flag] = {"$cond": [{"$lte": [value, None]}, int(last), int(not last)]}
            spec[flag] = 1
        spec[key] = -1 if desc else 1
    if frame.documents and "_id" not in spec:
        spec["_id"] = 1  # ties broken by _id: the same rows every time
    if not before:
        return [{"$sort": spec}]
    return [{"$set": before}, {"$sort": spec}, {"$unset": list(before)}]


def _sort_key(frame: Frame, name: str) -> str:
    # After a raw pipeline the columns are the pipeline's own: sort by the given key.
    return name if frame.columns is None else frame.column(name).key


def _value(expr: Expr) -> Any:
    """An aggregation expression for a computed column (literals wrapped)."""
    value = expr.to_mongo_expr()
    if isinstance(value, dict) or (isinstance(value, str) and value.startswith("$")):
        return value  # an operator expression or a field path
    return {"$literal": value}


def _group(step: GroupBy, again: tuple[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    from .expr.mongo import group_stages

    keys = {name: _key(expr) for name, expr in step.keys}
    accumulators = [dataclasses.replace(expr.to_mongo_accumulator(), name=name)
                    for name, expr in step.aggs]
    coll, before = again
    rerun = None if _nondeterministic(before) else (coll, before)
    stages, finals = group_stages(keys if keys else None, accumulators, rerun)
    project: dict[str, Any] = {"_id": 0}
    for name in keys:
        project[name] = f"$_id.{name}"
    project.update(finals)
    grouped = [*stages, {"$project": project}]
    if keys:
        return grouped
    # A whole-table aggregate is one row, also over no rows (Polars: sum 0, mean null):
    # $group makes no group of nothing, $facet always returns one document.
    empty = {name: _of_no_rows(expr.node) for name, expr in step.aggs}
    first = {"$arrayElemAt": ["$" + _FACET, 0]}
    return [{"$facet": {_FACET: grouped}},
            {"$replaceRoot": {"newRoot": {"$ifNull": [first, {"$literal": empty}]}}}]


_FACET = "__loom_rows"


def _of_no_rows(node: n.Node) -> Any:
    """An aggregation's value over no rows, as Polars gives it: counts and sums are 0
    (0.0 for a float sum), everything else null."""
    node = n.unaliased(node)
    if isinstance(node, (n.Len, n.Count, n.NUnique)):
        return 0
    if isinstance(node, n.Sum):
        return 0.0 if kind_of(node) is Kind.FLOAT else 0
    return None


def _nondeterministic(stages: Sequence[Mapping[str, Any]]) -> bool:
    """True when running ``stages`` twice may give other rows ($sample, $rand)."""
    text = _json(list(stages))
    return '"$sample"' in text or '"$rand"' in text


def _key(expr: Expr) -> Any:
    """A group key: a missing field would make a group of its own beside the null one
    (``{}`` is not ``{k: null}``); a frame cannot tell the two apart, so a missing value
    groups with null, as in Polars. Computed keys are null, never missing, already."""
    value = _value(expr)
    return {"$ifNull": [value, None]} if isinstance(value, str) else value


def _optimise(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Move each ``$match`` before ``$sort``s (same rows), then merge adjacent ones."""
    out: list[dict[str, Any]] = []
    for stage in stages:
        if "$match" in stage:
            at = len(out)
            while at > 0 and "$sort" in out[at - 1]:
                at -= 1
            if at > 0 and "$match" in out[at - 1]:
                out[at - 1] = {"$match": _and(out[at - 1]["$match"], stage["$match"])}
            else:
                out.insert(at, stage)
        else:
            out.append(stage)
    return [s for s in out if s not in ({"$match": {}}, {})]


def _and(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    return conjoin([a, b])


def _as_find(
    stages: list[dict[str, Any]], frame: Frame
) -> tuple[Mapping[str, Any], tuple[tuple[str, int], ...], int, int] | None:
    """``(filter, sort, skip, limit)`` when the stages are exactly what ``find`` does."""
    if not frame.documents:
        return None
    filter_: Mapping[str, Any] = {}
    sort: tuple[tuple[str, int], ...] = ()
    skip = limit = 0
    order = ("$match", "$sort", "$skip", "$limit")
    position = 0
    for stage in stages:
        (name,) = stage
        if name not in order or order.index(name) < position:
            return None
        if name == "$limit" and limit:
            return None
        position = order.index(name) + (0 if name == "$limit" else 1)
        value = stage[name]
        if name == "$match":
            filter_ = value
        elif name == "$sort":
            sort = tuple(value.items())
        elif name == "$skip":
            skip = value
        else:
            limit = value
    return filter_, sort, skip, limit
