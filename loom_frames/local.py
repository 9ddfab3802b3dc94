"""The Polars part of a placed plan: scans of what MongoDB runs, then Polars.

:func:`~loom_frames.placement.place` splits a plan into the steps MongoDB runs and the
steps from the first one placed in Polars on. :func:`lazy` builds one Polars LazyFrame:
a scan (:mod:`loom_frames.scan`) of the pushed steps, then each local step translated
to its Polars verb, every expression through the same Polars compiler as
``Expr.to_polars`` (:mod:`loom_frames.expr.polars`, which follows MongoDB's meaning:
two-valued conditions, NaN, discrete medians). A join's other side is a query of its
own, placed and scanned the same way.

Polars' optimizer then pushes projections and filters through the local steps into the
scans, so only the columns a join, group-by or window reads leave MongoDB, and each side
of a join is filtered by MongoDB. :func:`collect` casts the result to the plan's Arrow
schema: the columns and types are the same whichever engine ran the plan.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from .errors import PlanError
from .expr.polars import compile_polars
from .plan import (
    Explode,
    Filter,
    Frame,
    GroupBy,
    Join,
    Limit,
    Sample,
    Select,
    Skip,
    Sort,
    Step,
    WithColumns,
    frame_after,
    join_columns,
)

if TYPE_CHECKING:
    from .expr import Expr
    from .placement import Engine, Placement
    from .query import Query

__all__ = ["collect", "describe_step", "lazy"]


def lazy(query: Query, placement: Placement, *, on_invalid: str, engine: Engine) -> pl.LazyFrame:
    """The plan as one LazyFrame: the pushed steps scanned, the local ones in Polars."""
    from .scan import scan_query

    pushed = dataclasses.replace(query, steps=placement.pushed)
    lf = scan_query(pushed, on_invalid=on_invalid)
    steps = placement.pushed
    for step in placement.local:
        frame = frame_after(query.source, steps)
        lf = _apply(lf, frame, step, query, on_invalid, engine)
        steps = (*steps, step)
    return lf


def collect(query: Query, placement: Placement, *, on_invalid: str, engine: Engine
            ) -> pa.Table:
    """The rows as an Arrow table of the plan's schema (as MongoDB would return them)."""
    schema = query.compile().schema
    assert schema is not None  # no raw pipeline runs locally
    df = lazy(query, placement, on_invalid=on_invalid, engine=engine).collect()
    table = df.select(schema.names).to_arrow(compat_level=pl.CompatLevel.oldest())
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:  # a compiler mismatch
        raise PlanError(f"{query.source.name}: the Polars result does not fit the plan's "
                        f"schema ({exc}). Hint: engine='mongodb'.") from exc


def _expr(name: str, expr: Expr) -> pl.Expr:
    return compile_polars(expr.node).alias(name)


def _apply(lf: pl.LazyFrame, frame: Frame, step: Step, query: Query, on_invalid: str,
           engine: Engine) -> pl.LazyFrame:
    if isinstance(step, Filter):
        return lf.filter(compile_polars(step.predicate.node))
    if isinstance(step, Sort):
        return _sort(lf, frame, step)
    if isinstance(step, Skip):
        return lf.slice(step.n)
    if isinstance(step, Limit):
        return lf.head(step.n)
    if isinstance(step, Select):
        return lf.select([_expr(name, e) for name, e in step.items])
    if isinstance(step, WithColumns):
        return lf.with_columns([_expr(name, e) for name, e in step.items])
    if isinstance(step, GroupBy):
        aggs = [_expr(name, e) for name, e in step.aggs]
        if not step.keys:  # a whole-table aggregate: one row, also of no rows
            return lf.select(aggs)
        return lf.group_by([_expr(name, e) for name, e in step.keys]).agg(aggs)
    if isinstance(step, Explode):
        return lf.explode(frame.column(step.column).name, empty_as_null=step.empty_as_null,
                          keep_nulls=step.keep_nulls)
    if isinstance(step, Sample):
        df = lf.collect()
        return df.sample(min(step.n, df.height), shuffle=True).lazy()
    if isinstance(step, Join):
        return _join(lf, frame, step, query, on_invalid, engine)
    raise PlanError(f"{type(step).__name__} steps run in MongoDB only. Hint: engine='mongodb'.")


def _sort(lf: pl.LazyFrame, frame: Frame, step: Sort) -> pl.LazyFrame:
    """Polars' sort with MongoDB's order: NaN below every number (Polars puts it above),
    nulls where ``nulls_last`` says (MongoDB's own order when it is None)."""
    computed = [_expr(name, e) for name, e in step.computed]
    if computed:
        lf = lf.with_columns(computed)
    schema = lf.collect_schema()
    computed_names = {name for name, _ in step.computed}
    lasts = step.nulls_last or (None,) * len(step.keys)
    by: list[pl.Expr] = []
    descending: list[bool] = []
    nulls_last: list[bool] = []
    for (name, desc), last in zip(step.keys, lasts, strict=True):
        column = name if name in computed_names else frame.column(name).name
        flag = desc if last is None else last
        if schema[column].is_float():  # NaN sorts between null and the numbers
            by.append(pl.col(column).is_nan().not_())
            descending.append(desc)
            nulls_last.append(flag)
        by.append(pl.col(column))
        descending.append(desc)
        nulls_last.append(flag)
    if frame.documents and "id" in schema and "id" not in {n for n, _ in step.keys}:
        by.append(pl.col("id"))  # ties broken by _id, as MongoDB's sort does here
        descending.append(False)
        nulls_last.append(False)
    out = lf.sort(by, descending=descending, nulls_last=nulls_last, maintain_order=True)
    return out.drop(list(computed_names)) if computed_names else out


def _join(lf: pl.LazyFrame, frame: Frame, step: Join, query: Query, on_invalid: str,
          engine: Engine) -> pl.LazyFrame:
    other_query = dataclasses.replace(query, source=step.other, steps=step.other_steps,
                                      restriction=None, note="")
    other = lazy(other_query, other_query._placement(engine), on_invalid=on_invalid,
                 engine=engine)
    right_frame = frame_after(step.other, step.other_steps)
    # Keys under temporary names on both sides (coalesced into one, dropped after), an
    # int key with a float one as Float64 (1 matches 1.0, as in MongoDB); the other
    # side's columns under the plan's names (suffixed where taken, a second join's
    # bookkeeping columns left out).
    temps = [f"__loom_k{i}" for i in range(len(step.left_on))]
    left_keys, right_keys = [], []
    for temp, a, b in zip(temps, step.left_on, step.right_on, strict=True):
        left, right = pl.col(frame.column(a).name), pl.col(right_frame.column(b).name)
        if frame.column(a).kind is not right_frame.column(b).kind:
            left, right = left.cast(pl.Float64), right.cast(pl.Float64)
        left_keys.append(left.alias(temp))
        right_keys.append(right.alias(temp))
    carried = [pl.col(col.name).alias(name) for name, col in join_columns(frame, step)]
    joined = lf.with_columns(left_keys).join(
        other.select(*right_keys, *carried), on=temps, how=step.how, coalesce=True,
        nulls_equal=False)
    return joined.drop(temps)


def describe_step(step: Step) -> str:
    """One line saying what a local step does, for ``explain()``."""
    if isinstance(step, Filter):
        return f"filter {step.predicate!r}"
    if isinstance(step, Sort):
        keys = ", ".join(f"{name}{' desc' if desc else ''}" for name, desc in step.keys)
        return f"sort {keys}"
    if isinstance(step, (Skip, Limit)):
        return f"{type(step).__name__.lower()} {step.n}"
    if isinstance(step, (Select, WithColumns)):
        verb = "select" if isinstance(step, Select) else "with_columns"
        return f"{verb} " + ", ".join(f"{name}={e!r}" for name, e in step.items)
    if isinstance(step, GroupBy):
        keys = ", ".join(name for name, _ in step.keys)
        aggs = ", ".join(f"{name}={e!r}" for name, e in step.aggs)
        return f"group_by({keys}).agg({aggs})" if keys else f"select {aggs}"
    if isinstance(step, Explode):
        return f"explode {step.column}"
    if isinstance(step, Sample):
        return f"sample {step.n}"
    if isinstance(step, Join):
        keys = ", ".join(f"{a}={b}" for a, b in zip(step.left_on, step.right_on, strict=True))
        return f"{step.how} join {step.other.name} on {keys} (hash join)"
    return type(step).__name__
