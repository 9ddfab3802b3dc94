"""Where each part of a plan runs: MongoDB, or Polars over the rows MongoDB sends.

Pushing work into MongoDB is a means, not the goal: a plan is only good if it beats
loading the rows and doing the rest in Polars. :func:`place` splits a plan's steps in two:

* ``pushed``: the steps MongoDB runs (one command, as :func:`~loom_frames.plan.compile_plan`
  builds it). Filters and projections are always pushed: they shrink what is sent on
  every server.
* ``local``: the steps from the first one placed in Polars on. Data flows one way, so
  once a step runs in Polars every later step does too.

The steps whose place is decided are joins, group-bys and windows (``over()``, window
functions, and whole-table aggregates broadcast to every row). Each is priced both ways
from a :class:`ServerCosts` (microseconds per document, per server kind: measured with
``bench/bench_tpch.py`` on the embedded server, assumed for ``mongod``; see
docs/semantics.md) and the figures that can be had cheaply (collection statistics):

* a **group-by** in MongoDB costs, per input document, one accumulator per aggregation
  plus one operator per expression node; in Polars it costs sending the document with
  the columns the group-by reads. The groups sent back are few and are not counted.
* a **join** in MongoDB costs one ``$lookup`` (an indexed key match) per left row plus
  sending the joined rows; in Polars, sending both sides' rows. The joined rows are
  estimated as ``left x max(1, right / left's unfiltered rows)`` (a key join: each left
  row meets its share of the other side). Sizes come from ``estimatedDocumentCount``
  (collection metadata, no scan) and, on a server whose scans are cheap (``mongod``),
  ``count`` with each side's filters; a chain of joins carries its estimate along.
* a **window** returns every row it reads: MongoDB can only add work (the embedded
  server's ``$setWindowFields`` is also quadratic in the partition size), so windows run
  in Polars unless forced.

``engine="mongodb"`` pushes everything (one command); ``engine="polars"`` runs every
decided step in Polars. ``explain()`` shows the split and the figures behind it.

>>> from loom_frames import Persistable, declare_persist_db, fld
>>> from loom_frames.plan import GroupBy, Source
>>> from loom_frames.schema import model_resolver
>>> @declare_persist_db(db_name="app", collection_name="sales")
... class Sale(Persistable):
...     shop: str
...     amount: float
>>> sale = model_resolver(Sale)
>>> by_shop = GroupBy((("shop", fld["shop"].bind(sale)),),
...                   (("total", fld["amount"].sum().bind(sale)),))
>>> placed = place(Source.of_model(Sale), (by_shop,), "auto", COSTS["mongod"])
>>> placed.local, placed.reasons[0].where
((), 'mongodb')
>>> placed = place(Source.of_model(Sale), (by_shop,), "polars", COSTS["mongod"])
>>> len(placed.local), placed.reasons[0].why
(1, 'engine="polars"')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import PlanError
from .expr import nodes as n
from .expr.mongo_window import is_window
from .plan import GroupBy, Join, Pipeline, Select, Source, Step, WithColumns

__all__ = ["COSTS", "ENGINES", "Engine", "Placement", "Reason", "ServerCosts", "check_engine",
           "decided", "place"]

Engine = Literal["auto", "mongodb", "polars"]
"""Where the decided steps run: chosen by cost (``"auto"``), or forced."""

ENGINES: tuple[str, ...] = ("auto", "mongodb", "polars")


@dataclass(frozen=True, slots=True)
class ServerCosts:
    """What a server kind costs per document, in microseconds (wall time seen by the
    client: server work plus transfer and decoding)."""

    name: str
    send: float  # return one document and decode it into Arrow
    send_column: float  # ... for each column it carries
    accumulate: float  # one $group accumulator applied to one document
    operator: float  # one expression operator evaluated for one document
    lookup: float  # one $lookup of a row's key in an indexed collection
    counts: bool  # sizes and filtered counts are cheap to ask (else joins go unmeasured)


COSTS: dict[str, ServerCosts] = {
    # Measured on SecantusDB 0.7 (the embedded server; a Python server): a find of 8
    # columns 24 us/doc, a $count 8 us/doc, a $group of 2 accumulators 14 us/doc, a
    # computed $project of 2 operators 21 us/doc, an indexed $lookup 160 us/doc,
    # $setWindowFields over 2,000-row partitions 4,000 us/doc (bench_tpch.py --costs).
    # Its counts scan the collection, also estimatedDocumentCount (10 us/doc).
    "secantusdb": ServerCosts("secantusdb", send=20.0, send_column=1.5, accumulate=3.0,
                              operator=5.0, lookup=160.0, counts=False),
    # Assumed for a real mongod (C++; not measurable here): sending and decoding a
    # document dominates, accumulators and operators are cheap, an indexed $lookup is a
    # B-tree probe plus a sub-pipeline per row. See docs/semantics.md.
    "mongod": ServerCosts("mongod", send=1.0, send_column=0.1, accumulate=0.05,
                          operator=0.03, lookup=8.0, counts=True),
}


@dataclass(frozen=True, slots=True)
class Reason:
    """Why one step runs where it does, with the figures used."""

    step: str  # e.g. "group_by(cat)"
    where: Literal["mongodb", "polars"]
    why: str

    def __str__(self) -> str:
        return f"{self.step}: {'MongoDB' if self.where == 'mongodb' else 'Polars'} ({self.why})"


@dataclass(frozen=True, slots=True)
class Placement:
    """A plan split in two: ``pushed`` steps run by MongoDB, then ``local`` steps in
    Polars (empty: MongoDB runs everything, as one command)."""

    pushed: tuple[Step, ...]
    local: tuple[Step, ...]
    reasons: tuple[Reason, ...]


def check_engine(engine: str) -> Engine:
    if engine not in ENGINES:
        raise PlanError(f"engine= is 'auto', 'mongodb' or 'polars', got {engine!r}. Hint: "
                        "'auto' places joins, group-bys and windows where they cost least.")
    return engine  # type: ignore[return-value]


def decided(step: Step) -> bool:
    """Whether a step's place is decided (a join, group-by or window); every other step
    goes with the steps before it."""
    if isinstance(step, (Join, GroupBy)):
        return True
    if isinstance(step, (Select, WithColumns)):
        return any(is_window(e.node) for _, e in step.items)
    return False


def place(
    source: Source,
    steps: Sequence[Step],
    engine: Engine,
    costs: ServerCosts | None,
    rows: Callable[[Source, tuple[Step, ...]], tuple[int, int]] | None = None,
) -> Placement:
    """Split ``steps`` into what MongoDB runs and what Polars runs after it.

    ``costs``: the server's (None: unknown, only a forced engine decides); ``rows``: a
    source's documents, all and after the given steps' filters (estimates), asked only
    for joins.
    """
    steps = tuple(steps)
    reasons: list[Reason] = []
    flow: list[tuple[int, int]] = []  # (all, filtered) rows reaching the next join
    if any(isinstance(s, Pipeline) for s in steps):
        why = "a raw pipeline (agg([...])) is in the plan: MongoDB runs all of it"
        return Placement(steps, (), tuple(Reason(_label(s), "mongodb", why)
                                          for s in steps if decided(s)))
    for at, step in enumerate(steps):
        if not decided(step):
            continue
        label = _label(step)
        if engine == "mongodb":
            reasons.append(Reason(label, "mongodb", 'engine="mongodb"'))
            continue
        if engine == "polars":
            reasons.append(Reason(label, "polars", 'engine="polars"'))
            return Placement(steps[:at], steps[at:], tuple(reasons))
        if isinstance(step, Join) and rows is not None and costs is not None \
                and costs.counts and not flow:
            flow.append(rows(source, steps[:at]))
        where, why = _priced(step, costs, rows, flow)
        reasons.append(Reason(label, where, why))
        if where == "polars":
            return Placement(steps[:at], steps[at:], tuple(reasons))
    return Placement(steps, (), tuple(reasons))


def _priced(
    step: Step, costs: ServerCosts | None,
    rows: Callable[[Source, tuple[Step, ...]], tuple[int, int]] | None,
    flow: list[tuple[int, int]],
) -> tuple[Literal["mongodb", "polars"], str]:
    if costs is None:
        return "mongodb", "server costs unknown"
    if isinstance(step, (Select, WithColumns)):
        return "polars", ("a window returns every row it reads, so MongoDB could only add "
                          "work")
    if isinstance(step, GroupBy):
        nodes = [e.node for _, e in (*step.keys, *step.aggs)]
        accumulators = len(step.aggs)
        operators = sum(_operators(node) for node in nodes)
        columns = len({name for node in nodes for name in _fields(node)})
        server = accumulators * costs.accumulate + operators * costs.operator
        sent = costs.send + columns * costs.send_column
        where: Literal["mongodb", "polars"] = "mongodb" if server < sent else "polars"
        return where, (f"{costs.name}: $group of {accumulators} accumulator(s) and "
                       f"{operators} operator(s) ~{server:.2f} us/doc in MongoDB vs sending "
                       f"{columns} column(s) ~{sent:.2f} us/doc")
    assert isinstance(step, Join)
    if not costs.counts and costs.lookup >= costs.send:
        # Without filtered counts, the joined rows are at least the larger side's, all
        # sent either way: a lookup per left row can only add to that.
        return "polars", (f"{costs.name}: a $lookup per left row ({costs.lookup:g} us) costs "
                          f"more than sending it ({costs.send:g} us); sizes not asked (a "
                          "count scans the collection here)")
    if rows is None or not flow:
        return "mongodb", "row counts unknown"
    left_all, left = flow[-1]
    right_all, right = rows(step.other, step.other_steps)
    joined = int(left * max(1.0, right_all / max(left_all, 1)))
    mongo = (left * costs.lookup + joined * costs.send) / 1e6
    polars = (left + right) * costs.send / 1e6
    where = "mongodb" if mongo < polars else "polars"
    flow.append((max(left_all, right_all), joined))
    return where, (f"{costs.name}: ~{left:,} left rows x $lookup {costs.lookup:g} us + "
                   f"~{joined:,} joined rows sent = {mongo:.3g} s in MongoDB vs sending "
                   f"~{left:,} + ~{right:,} rows of {step.other.name} = {polars:.3g} s")


def _operators(node: n.Node) -> int:
    """Expression operators MongoDB evaluates per document (fields, literals, aliases and
    the aggregation itself are free)."""
    free = isinstance(node, (n.Field, n.Literal, n.Alias, n.Aggregation, n.Len))
    return (0 if free else 1) + sum(_operators(c) for c in n.children(node))


def _fields(node: n.Node) -> set[str]:
    if isinstance(node, n.Field):
        return {node.ref.columns[0] if node.ref is not None else node.name.split(".")[0]}
    out: set[str] = set()
    for child in n.children(node):
        out |= _fields(child)
    return out


def _label(step: Step) -> str:
    if isinstance(step, Join):
        keys = ", ".join(f"{a}={b}" for a, b in zip(step.left_on, step.right_on, strict=True))
        return f"join {step.other.name} on {keys} ({step.how})"
    if isinstance(step, GroupBy):
        keys = ", ".join(name for name, _ in step.keys)
        return f"group_by({keys}).agg({', '.join(name for name, _ in step.aggs)})"
    assert isinstance(step, (Select, WithColumns))
    windows = [name for name, e in step.items if is_window(e.node)]
    return f"window {', '.join(windows)}"
