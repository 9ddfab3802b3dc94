"""One meaning: MongoDB and Polars select the same documents for any expression.

Random documents (ints, floats with NaN / -0.0 / inf, unicode strings, booleans,
datetimes from year 1 to 9999, nulls, missing fields, lists with null elements) and
random expression trees up to depth 4 run through ``find(e.to_mongo())`` on a real server
and ``frame.filter(e.to_polars())``; the ``_id`` sets must be equal. Every disagreement
found on the way is pinned as a named test in test_semantics.py.

A third of the examples compute date parts and truncations in a time zone (New York,
London, Kolkata's +05:30, St. John's -03:30 with daylight saving time) on datetimes
crowded around clock changes. Their datetimes stay within 1950-2099: before, zones used
local mean time or other odd offsets (seconds, 5:53:20), where SecantusDB truncates to
hours and minutes with the wrong offset, and Polars knows no daylight saving time after
2099 (docs/semantics.md).

``LOOM_HYPOTHESIS_EXAMPLES`` sets the number of examples (default 300).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from typing import Any

from expr_harness import RESOLVER, Differential, oid
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from loom_frames.expr import Expr, fld, lit, when
from loom_frames.expr import nodes as n

UTC = dt.UTC
NAN, INF = float("nan"), float("inf")
MISSING = object()
EXAMPLES = int(os.environ.get("LOOM_HYPOTHESIS_EXAMPLES", "300"))

SPECIAL_TEXT = "aAb\n é"  # most strings: few letters, so literals and data collide
EXOTIC_TEXT = "aAbBzZ \n\x00éÉßİı"
DT_POOL = [
    dt.datetime(1, 1, 1, tzinfo=UTC),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    dt.datetime(1970, 1, 1, tzinfo=UTC),
    dt.datetime(2000, 1, 1, tzinfo=UTC),
    dt.datetime(2024, 2, 29, 12, 34, 56, 789000, tzinfo=UTC),
    dt.datetime(2024, 3, 11, tzinfo=UTC),
    dt.datetime(2024, 3, 17, 23, 59, 59, 999000, tzinfo=UTC),
]
EVERY = ["1ms", "1s", "15m", "7m", "1h", "3h", "1d", "2d", "1w", "2w", "1mo", "5mo", "1q", "2q",
         "1y", "3y"]
ZONED_EVERY = [e for e in EVERY if e not in ("15m", "7m", "3h")]  # no multi-unit sub-day bins
ZONES = ["America/New_York", "Europe/London", "Asia/Kolkata", "America/St_Johns"]
CLOCK_CHANGES = [  # UTC midnights of days with a clock change in one of ZONES
    (2024, 3, 10), (2024, 11, 3), (2024, 3, 31), (2024, 10, 27), (2023, 3, 12), (2023, 11, 5),
    (1968, 2, 18), (1971, 10, 31), (2099, 3, 8), (2099, 10, 25),
]
REGEXES = ["^a", "b\\z", "[a-c]+", "a.b", "(?:ab|ba)", "^[^a]*\\z", "é", "A", "^\\x00", ".\\z",
           "^a.", "a\\nb"]
CMP = ["==", "!=", "<", "<=", ">", ">="]
CLOSED = ["both", "left", "right", "none"]

texts = st.one_of(st.text(alphabet=SPECIAL_TEXT, max_size=3),
                  st.text(alphabet=SPECIAL_TEXT, max_size=3),
                  st.text(alphabet=EXOTIC_TEXT, max_size=3))
small_ints = st.integers(-3, 3)
ints = st.one_of(small_ints, small_ints, st.integers(-1000, 1000))
SPECIAL_FLOATS = [0.0, -0.0, 0.5, 1.0, -1.5, 2.0, 3.0, NAN, NAN, INF, -INF]
floats = st.one_of(st.sampled_from(SPECIAL_FLOATS), st.sampled_from(SPECIAL_FLOATS),
                   st.floats(allow_nan=True, allow_infinity=True))
times = st.one_of(
    st.sampled_from(DT_POOL),
    st.sampled_from(DT_POOL),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)).map(
        lambda d: d.replace(microsecond=d.microsecond - d.microsecond % 1000, tzinfo=UTC)),
)
zoned_times = st.one_of(
    st.builds(lambda day, minutes: dt.datetime(*day, tzinfo=UTC) + dt.timedelta(minutes=minutes),
              st.sampled_from(CLOCK_CHANGES), st.integers(-6 * 60, 30 * 60)),
    st.sampled_from([d for d in DT_POOL if 1950 <= d.year <= 2099]),
    st.datetimes(min_value=dt.datetime(1950, 1, 1), max_value=dt.datetime(2099, 12, 31)).map(
        lambda d: d.replace(microsecond=d.microsecond - d.microsecond % 1000, tzinfo=UTC)),
)
zones = st.one_of(st.none(), st.none(), st.sampled_from(ZONES))
operands = st.one_of(ints, floats)  # no huge ints in arithmetic: int64 overflow differs
numbers = st.one_of(ints, floats, st.sampled_from([2**40, -(2**40)]))
ops = st.sampled_from(CMP)


def _maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(MISSING), st.none(), values, values, values)


def _nullable(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(values, values, values, values, st.none())


@st.composite
def documents(draw: st.DrawFn, zoned: bool = False) -> list[dict[str, Any]]:
    """3-12 documents; ``zoned``: datetimes around clock changes (see the module doc)."""
    fields = {
        "a": _maybe(ints), "b": _maybe(floats), "s": _maybe(texts),
        "flag": _maybe(st.booleans()), "t": _maybe(zoned_times if zoned else times),
        "tags": _maybe(st.lists(_nullable(texts), max_size=3)),
        "nums": _maybe(st.lists(_nullable(small_ints), max_size=3)),
    }
    rows = draw(st.lists(st.fixed_dictionaries(fields), min_size=3, max_size=12))
    return [{"_id": oid(i + 1), **{k: v for k, v in row.items() if v is not MISSING}}
            for i, row in enumerate(rows)]


def _cmp(left: Expr, op: str, right: Any) -> Expr:
    return {
        "==": lambda: left == right, "!=": lambda: left != right, "<": lambda: left < right,
        "<=": lambda: left <= right, ">": lambda: left > right, ">=": lambda: left >= right,
    }[op]()


@st.composite
def int_exprs(draw: st.DrawFn) -> Expr:
    a = fld["a"]
    k = draw(small_ints)
    return draw(st.sampled_from([a, a + k, a * k, -a, a.abs(), a - fld["a"] * 2]))


@st.composite
def num_exprs(draw: st.DrawFn, depth: int = 0) -> Expr:
    if depth >= 2 or draw(st.integers(0, 2)) == 0:
        return draw(st.sampled_from([fld["a"], fld["b"]]))
    kind = draw(st.sampled_from(["+", "-", "*", "/", "%", "abs", "round", "neg", "lit", "//",
                                 "**", "fill", "when", "cast"]))
    left = draw(num_exprs(depth + 1))
    if kind == "%":
        if draw(st.booleans()):  # floats: truncated like $mod (fmod)
            return left % draw(st.one_of(floats, num_exprs(depth + 1)))
        return draw(int_exprs()) % draw(st.one_of(small_ints, st.just(fld["a"])))
    if kind == "//":
        return left // draw(st.one_of(small_ints, floats, num_exprs(depth + 1)))
    if kind == "**":
        if draw(st.booleans()):
            return draw(int_exprs()) ** draw(st.integers(0, 3))
        # Only powers that cannot overflow a double for any float (b holds values up to
        # 1e308 and down to 5e-324): an overflowing $pow is inf in mongod and Polars, and
        # an internal error in SecantusDB (docs/semantics.md).
        return fld["b"] ** draw(st.sampled_from([0.5, 0.25, 1.0, 0.0]))
    if kind == "fill":
        return left.fill_null(draw(operands))
    if kind == "when":
        return when(draw(predicates(2))).then(left).otherwise(draw(
            st.one_of(num_exprs(depth + 1), operands.map(lit))))
    if kind == "cast":
        return draw(st.sampled_from([fld["b"].cast("Int64"), fld["a"].cast("Float64"),
                                     fld["flag"].cast("Int64"), fld["b"].cast("Float64")]))
    if kind in ("abs", "round", "neg"):
        return left.abs() if kind == "abs" else left.round(0) if kind == "round" else -left
    if kind == "lit":
        return draw(operands) - left
    right: Any = draw(st.one_of(num_exprs(depth + 1), operands))
    return {"+": lambda: left + right, "-": lambda: left - right, "*": lambda: left * right,
            "/": lambda: left / right}[kind]()


def _case(text: str, lower: bool) -> str:
    return "".join((c.lower() if lower else c.upper()) if c.isascii() else c for c in text)


def _sorted_pair(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> list[Any]:
    return sorted([draw(values), draw(values)], key=lambda v: (isinstance(v, float) and math.isnan(v), v))


def _string_subject(draw: st.DrawFn) -> Expr:
    s = fld["s"]
    return draw(st.sampled_from([s, s, s.str.to_lower(), s.str.to_upper()]))


def _string_compare(draw: st.DrawFn) -> Expr:
    subject, op, text = _string_subject(draw), draw(ops), draw(texts)
    if isinstance(subject.node, n.StringCase) and op in ("==", "!="):
        text = _case(text, lower=isinstance(subject.node, n.Lower))
    return _cmp(subject, op, text)


def _membership(target: Expr, values: list[Any], negate: bool) -> Expr:
    return target.not_in(values) if negate else target.is_in(values)


t, tags, nums = fld["t"], fld["tags"], fld["nums"]
FORMATS = ["%Y-%m-%d", "%H:%M:%S", "%j %u %V %G", "%U%%", "day %d"]


@st.composite
def string_values(draw: st.DrawFn) -> Expr:
    """String-valued expressions: slices, literal replaces, casts, formats, conditionals."""
    s = fld["s"]
    return draw(st.sampled_from([
        s.str.slice(draw(st.integers(-4, 3)), draw(st.one_of(st.none(), st.integers(0, 3)))),
        s.str.replace(draw(st.sampled_from(["a", "A", "é", " "])), draw(texts)),
        s.str.replace_all(draw(st.sampled_from(["a", "\n", "b."])), draw(texts), literal=True),
        fld["a"].cast("String"), fld["flag"].cast("String"),
        t.dt.strftime(draw(st.sampled_from(FORMATS))),
        when(fld["a"] > 0).then(s).otherwise(lit(draw(texts))),
        s.fill_null(draw(texts)),
    ]))
PART_VALUES = [0, 1, 2, 3, 4, 5, 6, 7, 12, 23, 29, 31, 1969, 2000, 2024, 9999]


def _date_part(draw: st.DrawFn, zone: str | None) -> Expr:
    part = draw(st.sampled_from(["year", "month", "day", "hour", "weekday"]))
    return getattr(t.dt, part)(time_zone=zone)  # type: ignore[no-any-return]


def _truncation(draw: st.DrawFn, zone: str | None) -> Expr:
    return t.dt.truncate(draw(st.sampled_from(ZONED_EVERY if zone else EVERY)), time_zone=zone)


LEAVES: list[Any] = [
    # numbers: literals, field-vs-field, arithmetic, NaN / -0.0 literals
    lambda d, z: _cmp(d(num_exprs()), d(ops), d(numbers)),
    lambda d, z: _cmp(d(st.sampled_from([fld["a"], fld["b"]])), d(ops), d(numbers)),
    lambda d, z: _cmp(d(num_exprs()), d(ops), d(num_exprs())),
    lambda d, z: _cmp(d(st.sampled_from([fld["a"], fld["b"]])), d(ops),
                   d(st.sampled_from([fld["a"], fld["b"]]))),
    lambda d, z: _cmp(d(num_exprs()), d(ops), d(st.sampled_from([NAN, -0.0, INF]))),
    lambda d, z: fld[d(st.sampled_from(["a", "b"]))].between(*_sorted_pair(d, numbers),
                                                          closed=d(st.sampled_from(CLOSED))),
    lambda d, z: _membership(d(st.sampled_from([fld["a"], fld["b"]])),
                          d(st.lists(st.one_of(numbers, st.none()), max_size=4)), d(st.booleans())),
    lambda d, z: _membership(d(num_exprs()), d(st.lists(st.one_of(numbers, st.none()), max_size=4)),
                          d(st.booleans())),
    lambda d, z: d(num_exprs()).is_null(),
    # strings
    lambda d, z: _string_compare(d),
    lambda d, z: _string_subject(d).starts_with(d(texts)),
    lambda d, z: _string_subject(d).ends_with(d(texts)),
    lambda d, z: _string_subject(d).contains(d(texts)),
    lambda d, z: fld["s"].str.contains(d(st.sampled_from(REGEXES))),
    lambda d, z: fld["s"].str.contains(d(texts), literal=True),
    lambda d, z: _cmp(fld["s"].str.len_chars(), d(ops), d(small_ints)),
    lambda d, z: _cmp(d(string_values()), d(st.sampled_from(["==", "!="])), d(texts)),
    lambda d, z: _cmp(fld["s"].fill_null(d(texts)), d(ops), d(texts)),
    lambda d, z: fld[d(st.sampled_from(["a", "b"]))].is_between(*_sorted_pair(d, numbers)),
    lambda d, z: _cmp(t.dt.date(), d(ops), d(times).date()),
    lambda d, z: _cmp(t.dt.strftime(d(st.sampled_from(FORMATS))), d(ops), d(texts)),
    lambda d, z: _string_subject(d).regex(d(st.sampled_from(REGEXES)),
                                       d(st.sampled_from(["", "i", "s", "m", "is"]))),
    lambda d, z: _membership(fld["s"], d(st.lists(st.one_of(texts, st.none()), max_size=4)),
                          d(st.booleans())),
    # lists
    lambda d, z: _cmp(tags, d(ops), d(texts)),
    lambda d, z: _cmp(nums, d(ops), d(st.one_of(small_ints, floats))),
    lambda d, z: _cmp(tags, d(st.sampled_from(["==", "!="])), d(st.lists(_nullable(texts),
                                                                        max_size=2))),
    lambda d, z: _cmp(nums, d(st.sampled_from(["==", "!="])), d(st.lists(_nullable(small_ints),
                                                                        max_size=2))),
    lambda d, z: tags.list.contains(d(texts)),
    lambda d, z: nums.list.contains(d(st.one_of(small_ints, st.sampled_from([1.0, 1.5])))),
    lambda d, z: _membership(tags, d(st.lists(st.one_of(texts, st.none()), max_size=3)),
                          d(st.booleans())),
    lambda d, z: _membership(nums, d(st.lists(st.one_of(small_ints, st.none()), max_size=3)),
                          d(st.booleans())),
    lambda d, z: _cmp(d(st.sampled_from([tags, nums])).list.len(), d(ops), d(st.integers(-1, 3))),
    lambda d, z: nums.between(*_sorted_pair(d, small_ints), closed=d(st.sampled_from(CLOSED))),
    # datetimes
    lambda d, z: _cmp(t, d(ops), d(times)),
    lambda d, z: t.between(*_sorted_pair(d, times), closed=d(st.sampled_from(CLOSED))),
    lambda d, z: _cmp(_date_part(d, z), d(ops), d(st.sampled_from(PART_VALUES))),
    lambda d, z: _cmp(_date_part(d, z), d(ops), _date_part(d, z)),
    lambda d, z: _membership(_date_part(d, z), d(st.lists(st.sampled_from(PART_VALUES),
                                                          max_size=3)), d(st.booleans())),
    # narrow integers (int8 parts, uint32 lengths) are computed on in 64 bits, never wrapped
    lambda d, z: _cmp(_date_part(d, z) * d(st.sampled_from([100, -7])) + fld["a"], d(ops),
                      d(numbers)),
    lambda d, z: _cmp(d(st.sampled_from([tags, nums])).list.len() - d(small_ints), d(ops),
                      d(st.integers(-4, 3))),
    lambda d, z: _cmp(_truncation(d, z), d(ops), d(zoned_times if z else times)),
    lambda d, z: _membership(t, d(st.lists(st.one_of(times, st.none()), max_size=3)),
                          d(st.booleans())),
    # booleans, nulls, ids
    lambda d, z: d(st.sampled_from([fld["flag"], fld["flag"] == True, fld["flag"] == False,
                                 fld["flag"] != True, fld["flag"] > False, ~fld["flag"]])),
    lambda d, z: fld[d(st.sampled_from(["a", "b", "s", "flag", "t", "tags", "nums"]))].is_null(),
    lambda d, z: fld[d(st.sampled_from(["a", "b", "s", "flag", "t", "tags", "nums"]))
                  ].is_not_null(),
    lambda d, z: _cmp(fld["id"], d(ops), oid(d(st.integers(1, 13)))),
    lambda d, z: fld["id"] == str(oid(d(st.integers(1, 13)))),  # a hex string binds to ObjectId
    lambda d, z: _membership(fld["id"], [oid(i) for i in d(st.lists(st.integers(1, 13),
                                                                  max_size=3))],
                          d(st.booleans())),
]


@st.composite
def leaves(draw: st.DrawFn, zone: str | None = None) -> Expr:
    build = draw(st.sampled_from(LEAVES))
    return build(draw, zone)  # type: ignore[no-any-return]


@st.composite
def predicates(draw: st.DrawFn, depth: int = 1, zone: str | None = None) -> Expr:
    """Random conditions; date parts and truncations in ``zone`` (None: UTC)."""
    if depth < 4 and draw(st.integers(0, 3)) == 0:
        how = draw(st.sampled_from(["&", "|", "~"]))
        left = draw(predicates(depth + 1, zone))
        if how == "~":
            return ~left
        right = draw(predicates(depth + 1, zone))
        return left & right if how == "&" else left | right
    return draw(leaves(zone))


@st.composite
def cases(
    draw: st.DrawFn, make: Any, min_size: int = 2, max_size: int = 10
) -> tuple[str | None, list[dict[str, Any]], list[Expr]]:
    """``(zone, documents, expressions)``: with a zone, datetimes near clock changes."""
    zone = draw(zones)
    docs = draw(documents(zoned=zone is not None))
    return zone, docs, draw(st.lists(make(zone=zone), min_size=min_size, max_size=max_size))


def _fields(node: n.Node) -> set[str]:
    if isinstance(node, n.Field):
        return {node.name}
    out: set[str] = set()
    for name in node.__dataclass_fields__:  # type: ignore[attr-defined]
        value = getattr(node, name)
        for child in value if isinstance(value, tuple) else (value,):
            if isinstance(child, n.Node):
                out |= _fields(child)
    return out


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cases(predicates), unbound=st.booleans())
def test_mongodb_and_polars_select_the_same_documents(
    differential: Differential, case: tuple[str | None, list[dict[str, Any]], list[Expr]],
    unbound: bool,
) -> None:
    _, docs, exprs = case
    differential.load(docs)
    for expr in exprs:
        # Unbound expressions have scalar semantics: only try them on scalar fields.
        scalar_only = not _fields(expr.node) & {"tags", "nums", "id"}
        resolver = None if unbound and scalar_only else RESOLVER
        note(f"expr = {expr!r} (bound: {resolver is not None})")
        differential.assert_same(expr, resolver)


@st.composite
def values(draw: st.DrawFn, zone: str | None = None) -> Expr:
    """Value expressions for computed columns (conditions give boolean columns)."""
    choice = draw(st.integers(0, 7))
    if choice == 0:
        return draw(num_exprs())
    if choice == 1:
        return draw(int_exprs()) % draw(st.one_of(small_ints, st.just(fld["a"])))
    if choice == 2:
        return _date_part(draw, zone)
    if choice == 3:
        return _truncation(draw, zone)
    if choice == 4:
        return draw(st.sampled_from([fld["s"].str.to_lower(), fld["s"].str.to_upper(),
                                     tags.list.len(), nums.list.len(), fld["s"].str.len_chars(),
                                     t.dt.date(), fld["a"].cast("Boolean"),
                                     fld["b"].cast("Boolean")]))
    if choice == 6 and draw(st.booleans()):
        return draw(string_values())
    if choice == 5:  # arithmetic on narrow integers: int64, as MongoDB computes it
        narrow = draw(st.sampled_from([_date_part(draw, zone), tags.list.len()]))
        return narrow * draw(st.sampled_from([1000, -1])) - fld["a"]
    return draw(predicates(zone=zone))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cases(values), unbound=st.booleans())
def test_computed_columns_are_equal_in_mongodb_and_polars(
    differential: Differential, case: tuple[str | None, list[dict[str, Any]], list[Expr]],
    unbound: bool,
) -> None:
    _, docs, exprs = case
    differential.load(docs)
    for expr in exprs:
        scalar_only = not _fields(expr.node) & {"tags", "nums", "id"}
        resolver = None if unbound and scalar_only else RESOLVER
        note(f"expr = {expr!r} (bound: {resolver is not None})")
        differential.assert_same_values(expr, resolver)
