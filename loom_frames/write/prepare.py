"""Holding a dataframe to its model, column by column, before anything is written.

:func:`prepare` turns a pandas / Polars / PyArrow frame into a :class:`PreparedFrame`:
every column matched to a model field, cast to the model's type where that is safe,
field markers applied, nulls resolved and ids assigned, with all checks done on the
whole frame first (a frame that does not fit raises
:class:`~loom_frames.errors.FrameValidationError` and nothing is written). Documents are
then encoded batch by batch with :meth:`PreparedFrame.documents`. No I/O happens here.

The rules (README "Writing frames back"):

* columns are field names or storage keys (``id`` or ``_id``); a missing required column
  and an unknown column are both errors, listed together (``extra="ignore"`` skips
  unknown ones); names with ``$`` or ``.`` are always rejected;
* casts only where safe (:mod:`loom_frames.write.casts`); anything else is rejected
  naming the column and the first bad row;
* markers: StrLower/StrUpper lowercased/uppercased exactly as ``str.lower()`` /
  ``str.upper()``; TimeInserted/TimeUpdated filled with the same "now" where null or
  absent (a given time is kept); IncrCounter and other defaults where null or absent;
* nulls: null in an Optional field is stored as null (as ``persist()`` stores None);
  null in a field with a default stores the default; null in a required field is an
  error. pandas NaN in a float column is pandas' missing value, so it is null; a Polars
  or Arrow NaN is a float value and stored as NaN;
* ids: an ``id``/``_id`` column of 24-hex strings (or ObjectIds in pandas) is the
  document id; rows without one get new ObjectIds, generated client side;
* a free-form field (``dict``, ``Any``, ...) given as a string column is Extended JSON
  text, as the loaders give it (``codec.from_json_text``); other column types are its
  values themselves;
* a pandas index: a level named after a field (or ``id``/``_id``) is that column
  (``df.set_index("id")`` writes its ids); an unnamed integer index is pandas' row
  labels and is not stored (``result.ids`` comes back on it); any other index holds
  data with no field to go to and is refused (``reset_index()`` first).
"""

from __future__ import annotations

import datetime as _dt
import enum
import typing
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from bson import ObjectId

from ..codec import document_of, from_json_text, to_bson
from ..columns import Column, model_columns
from ..connection import CODEC_OPTIONS
from ..errors import FrameValidationError, did_you_mean
from ..expr.bind import Kind
from ..fields import IncrCounter, Role, StrLower, StrUpper, TimeInserted, TimeUpdated
from ..model import Persistable
from . import arrow_bson as ab
from .casts import Context, datetimes, first, normalise, object_ids, storage_type

__all__ = ["Backend", "PreparedFrame", "frame_to_arrow", "prepare"]

Backend = Literal["pandas", "polars", "pyarrow"]
Extra = Literal["raise", "ignore"]

_KNOWN_METADATA = [
    item
    for marker in (StrLower, StrUpper, TimeInserted, TimeUpdated, IncrCounter)
    for item in getattr(marker, "__metadata__", ())
]


# ------------------------------------------------------------------ frame intake
def frame_to_arrow(df: Any, model: type[Persistable] | None = None
                   ) -> tuple[pa.Table, Backend, Any]:
    """A frame as an Arrow table, the backend it came from, and its pandas index.

    pandas goes through ``pa.Table.from_pandas`` (NaN in a float column becomes null,
    pandas' missing value); ObjectId, UUID and Enum objects in ``object`` columns become
    strings/values first; its index follows the rule in the module docstring (checked
    against ``model`` when given, else dropped). Polars and other narwhals frames use
    narwhals' ``to_arrow()``.

    >>> frame_to_arrow(pa.table({"a": [1]}))[0].num_rows
    1
    """
    if isinstance(df, pa.Table):
        return df, "pyarrow", None
    if isinstance(df, pa.RecordBatch):
        return pa.Table.from_batches([df]), "pyarrow", None
    module = type(df).__module__.split(".", 1)[0]
    if module == "pandas" and type(df).__name__ == "DataFrame":
        return _pandas_to_arrow(_index_as_columns(df, model)), "pandas", df.index
    if module == "polars" and type(df).__name__ == "LazyFrame":
        raise TypeError(
            "insert_dataframe takes an eager frame, got a polars LazyFrame. "
            "Hint: call .collect() first."
        )
    import narwhals as nw

    try:
        frame = nw.from_native(df, eager_only=True)
    except TypeError as exc:
        raise TypeError(
            f"expected a pandas, Polars or PyArrow DataFrame, got {type(df).__name__}"
        ) from exc
    try:
        table = frame.to_arrow()
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise FrameValidationError(
            f"the frame could not be converted to Arrow: {exc}. Hint: cast object "
            "columns to plain types first."
        ) from exc
    return table, "polars" if module == "polars" else "pyarrow", None


def _index_as_columns(df: Any, model: type[Persistable] | None) -> Any:
    """A pandas frame whose index levels named after fields are columns (see above)."""
    import pandas as pd

    index = df.index
    names = list(index.names)
    if model is None:
        return df
    if all(name is None for name in names):
        if isinstance(index, pd.MultiIndex) or not pd.api.types.is_integer_dtype(index.dtype):
            raise FrameValidationError(
                f"the frame's index is an unnamed {type(index).__name__} of "
                f"{index.dtype}: its values would be lost, as no field is named for them. "
                "Hint: name it after the field it holds (df.rename_axis('field')), "
                "df.reset_index() to make it a column, or df.reset_index(drop=True) to "
                "drop it."
            )
        return df  # pandas' row labels: result.ids comes back on them
    fields = {c.name for c in model_columns(model)} | {c.key for c in model_columns(model)}
    unknown = [n for n in names if n not in fields]
    clash = [n for n in names if n in df.columns]
    if unknown or clash:
        problem = (f"index level(s) {unknown!r} name no field of {model.__name__}"
                   if unknown else f"index level(s) {clash!r} are also columns")
        raise FrameValidationError(
            f"the frame's index cannot be written: {problem}. A named index level is "
            "written as the field of that name. Hint: df.reset_index() to make it a "
            "column (then rename it), or df.reset_index(drop=True) to drop it."
        )
    return df.reset_index()


def _pandas_to_arrow(df: Any) -> pa.Table:
    names = list(df.columns)
    duplicated = sorted({str(n) for n in names if names.count(n) > 1})
    if duplicated:
        raise FrameValidationError(
            f"the frame has duplicated column names {duplicated}. Hint: rename them."
        )
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise FrameValidationError(
            f"column names must be strings, got {bad!r}. Hint: df.columns = df.columns.map(str)."
        )
    import pandas as pd

    fixed = {}
    for name in names:
        column = df[name]
        if column.dtype == object:
            plain = column.map(_plain_object, na_action="ignore")
            if not plain.equals(column):
                fixed[name] = plain
        elif isinstance(column.dtype, pd.DatetimeTZDtype):
            # The same instants as naive UTC (naive means UTC here): pyarrow 25 reads an
            # aware column through Series.values, which pandas 3 deprecates with a warning.
            fixed[name] = column.dt.tz_convert(None)
    if fixed:
        df = df.assign(**fixed)
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise FrameValidationError(
            f"the frame could not be converted to Arrow: {exc}. Hint: give the column "
            "one type (e.g. df[col].astype(...))."
        ) from exc


def _plain_object(value: Any) -> Any:
    if isinstance(value, (ObjectId, uuid.UUID)):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


# ------------------------------------------------------------------ the prepared frame
class _Field:
    """One stored key of the documents: encodes its elements for a slice of rows."""

    __slots__ = ("key", "name")

    def __init__(self, name: str, key: str) -> None:
        self.name = name
        self.key = key

    def elements(self, start: int, stop: int) -> pa.Array:  # pragma: no cover - abstract
        raise NotImplementedError


class _ArrayField(_Field):
    """A column already in storage form (int64, float64, bool, string, ms, 12-byte id)."""

    __slots__ = ("array", "encode", "fill")

    def __init__(
        self, name: str, key: str, array: pa.Array,
        encode: Callable[[str, pa.Array], pa.Array], fill: bytes,
    ) -> None:
        super().__init__(name, key)
        self.array = array
        self.encode = encode
        self.fill = fill

    def elements(self, start: int, stop: int) -> pa.Array:
        out = self.encode(self.key, self.array.slice(start, stop - start))
        return ab.fill_null_elements(out, self.fill)


class _ConstField(_Field):
    """The same element in every row (an absent column's default, ``_v``, now)."""

    __slots__ = ("element",)

    def __init__(self, name: str, key: str, element: bytes) -> None:
        super().__init__(name, key)
        self.element = element

    def elements(self, start: int, stop: int) -> pa.Array:
        return ab.fixed_elements(self.element, np.empty((stop - start, 0), np.uint8))


class _IdField(_Field):
    __slots__ = ("ids",)

    def __init__(self, ids: np.ndarray) -> None:
        super().__init__("id", "_id")
        self.ids = ids

    def elements(self, start: int, stop: int) -> pa.Array:
        block = self.ids[start:stop]
        fixed = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(12), len(block), [None, pa.py_buffer(np.ascontiguousarray(block))]
        )
        return ab.object_id_elements("_id", fixed)


class _ObjectField(_Field):
    """A column validated value by value with Pydantic (nested, Decimal, UUID, ...)."""

    __slots__ = ("convert", "null", "source")

    def __init__(
        self, name: str, key: str, source: pa.Array | None,
        convert: Callable[[Any], Any], null: Callable[[], Any],
    ) -> None:
        super().__init__(name, key)
        self.source = source
        self.convert = convert
        self.null = null  # the stored value of a null / absent cell

    def values(self, start: int, stop: int) -> list[Any]:
        if self.source is None:
            return [self.null() for _ in range(stop - start)]
        raw = self.source.slice(start, stop - start).to_pylist()
        return [self.null() if v is None else self.convert(v) for v in raw]

    def elements(self, start: int, stop: int) -> pa.Array:
        key = self.key
        encoded = [ab.constant_element(key, v, CODEC_OPTIONS) for v in self.values(start, stop)]
        return pa.array(encoded, type=pa.large_binary())


@dataclass(eq=False)
class PreparedFrame:
    """A frame that fits the model: ids assigned, columns in storage form."""

    model: type[Persistable]
    num_rows: int
    ids: np.ndarray  # (n, 12) uint8 ObjectId bytes, frame order
    id_given: np.ndarray  # bool: the frame gave the id
    fields: tuple[_Field, ...]  # in document order, _id first
    supplied: tuple[str, ...]  # storage keys the frame has columns for (not _id)
    arrays: dict[str, pa.Array]  # normalised frame columns by field name
    rows: Callable[[int, int], list[bytes]] | None = None  # row-by-row encoder, if needed
    by_key: dict[str, _Field] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_key = {f.key: f for f in self.fields}

    def documents(self, start: int, stop: int) -> tuple[list[bytes], np.ndarray]:
        """The BSON documents of rows ``start:stop`` and their sizes."""
        if self.rows is not None:
            docs = self.rows(start, stop)
            return docs, np.array([len(d) for d in docs], dtype=np.int64)
        elements = [f.elements(start, stop) for f in self.fields]
        lengths = ab.document_lengths(elements)
        return ab.join_documents(elements, lengths).to_pylist(), lengths



# ------------------------------------------------------------------ preparing
def prepare(
    model: type[Persistable],
    table: pa.Table,
    *,
    extra: Extra = "raise",
    now: _dt.datetime,
) -> PreparedFrame:
    """Check ``table`` against ``model`` and bring it to storage form (no I/O).

    >>> from loom_frames import Persistable
    >>> class Item(Persistable):
    ...     sku: str
    ...     qty: int = 0
    >>> import datetime as dt
    >>> prep = prepare(Item, pa.table({"sku": ["a"]}), now=dt.datetime.now(dt.UTC))
    >>> import bson
    >>> sorted(bson.decode(prep.documents(0, 1)[0][0]))
    ['_id', 'created_at', 'qty', 'sku', 'updated_time']
    """
    if extra not in ("raise", "ignore"):
        raise ValueError(f"extra must be 'raise' or 'ignore', got {extra!r}")
    ctx = Context(model, table, now)
    columns = model_columns(model)
    matched = _match_columns(model, columns, table.column_names, extra)
    n = table.num_rows
    arrays: dict[str, pa.Array] = {}
    fields: list[_Field] = []
    ids = ab.new_object_ids(n)
    id_given = np.zeros(n, dtype=bool)
    for col in columns:
        source = matched.get(col.name)
        arr = _array(table, source) if source is not None else None
        if col.name == "id":
            if arr is not None and source is not None:
                given, valid = object_ids(ctx, col, source, arr)
                ids[valid] = given[valid]
                id_given = valid
                arrays["id"] = arr
            fields.append(_IdField(ids))
            continue
        prepared = _prepare_field(ctx, col, source, arr)
        if isinstance(prepared, _ArrayField):
            arrays[col.name] = prepared.array
        fields.append(prepared)
    config = model.__dict__.get("__loom_persist__")  # None: encoding only (no storage)
    version = config.version if config is not None else None
    if version is not None:
        fields.append(_ConstField("_v", "_v", ab.constant_element("_v", version)))
    _check_timeseries(ctx, fields, matched)
    supplied = tuple(
        c.key for c in columns if c.name in matched and c.name != "id"
    )
    prepared_frame = PreparedFrame(model, n, ids, id_given, tuple(fields), supplied, arrays)
    if _needs_row_validation(model):
        prepared_frame.rows = _RowEncoder(ctx, matched, prepared_frame)
        prepared_frame.rows.check()
    return prepared_frame


def _array(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _match_columns(
    model: type[Persistable], columns: Sequence[Column], names: Sequence[str], extra: Extra
) -> dict[str, str]:
    """``{field name: frame column}``; one error listing every problem."""
    by_name = {c.name: c for c in columns}
    by_key = {c.key: c for c in columns}
    problems: list[str] = []
    duplicated = sorted({n for n in names if list(names).count(n) > 1})
    if duplicated:
        problems.append(f"duplicated column(s) {', '.join(map(repr, duplicated))}")
    unsafe = [n for n in names if not n or "$" in n or "." in n or "\x00" in n]
    if unsafe:
        problems.append(
            f"column name(s) {', '.join(map(repr, unsafe))} contain '$' or '.' (or are "
            "empty), which MongoDB field names here never do"
        )
    matched: dict[str, str] = {}
    unknown: list[str] = []
    for name in names:
        if name in unsafe:
            continue
        col = by_name.get(name) or by_key.get(name)
        if col is None:
            unknown.append(name)
        elif col.name in matched and matched[col.name] != name:
            problems.append(f"columns {matched[col.name]!r} and {name!r} both give field {col.name!r}")
        else:
            matched[col.name] = name
    if unknown and extra == "raise":
        hints = "".join(
            f" ({n!r}:{did_you_mean(n, by_name)[6:].rstrip('?')})"
            for n in unknown if did_you_mean(n, by_name)
        )
        problems.append(f"unknown column(s) {', '.join(map(repr, unknown))}{hints}")
    missing = [c.name for c in columns if c.required and c.name not in matched]
    if missing:
        problems.insert(0, f"missing required column(s) {', '.join(map(repr, missing))}")
    if problems:
        raise FrameValidationError(
            f"the frame does not fit {model.__name__}: " + "; ".join(problems) + ". Hint: "
            "rename or add the columns; pass extra='ignore' to skip unknown ones. "
            f"The model's columns: {', '.join(c.name for c in columns)}."
        )
    return matched


# ------------------------------------------------------------------ one field
def _prepare_field(ctx: Context, col: Column, source: str | None, arr: pa.Array | None) -> _Field:
    info = ctx.model.model_fields[col.name]
    optional = col.optional
    if col.role in (Role.TIME_INSERTED, Role.TIME_UPDATED):
        now = ab.constant_element(col.key, ctx.now)
        if arr is None or source is None:
            return _ConstField(col.name, col.key, now)
        normal = datetimes(ctx, col, source, arr)
        return _ArrayField(col.name, col.key, normal, ab.datetime_elements, now)
    vector = _vector_encoder(col) if _plain_metadata(info.metadata) else None
    if vector is None:
        return _object_field(ctx, col, source, arr, optional)
    if arr is None or source is None:  # absent: the default for every row
        if info.default_factory is not None:
            return _object_field(ctx, col, None, None, optional)
        if not col.has_default:  # Optional without a default
            return _ConstField(col.name, col.key, ab.constant_element(col.key, None))
        return _ConstField(col.name, col.key, _default_element(ctx, col))
    normal = normalise(ctx, col, source, arr)
    if normal.null_count == 0:
        fill = b""
    elif optional:
        fill = ab.constant_element(col.key, None)
    elif col.has_default:
        if info.default_factory is not None:
            return _object_field(ctx, col, source, arr, optional)
        fill = _default_element(ctx, col)
    else:
        row = first(normal.is_null())
        ctx.fail(col, source, row, f"{col.name} is required and not Optional",
                 "fill the nulls, or declare the field Optional or with a default")
    return _ArrayField(col.name, col.key, normal, vector, fill)


def _vector_encoder(col: Column) -> Callable[[str, pa.Array], pa.Array] | None:
    t = col.type
    if col.kind in (Kind.STR, Kind.INT, Kind.FLOAT, Kind.BOOL, Kind.DATETIME, Kind.DATE,
                    Kind.OBJECTID, Kind.ENUM) and t is not None:
        if col.kind is Kind.OBJECTID:
            return ab.object_id_elements
        if col.kind in (Kind.DATETIME, Kind.DATE):
            return ab.datetime_elements
        if pa.types.is_string(t):
            return ab.string_elements
        if pa.types.is_int64(t):
            return ab.int_elements
        if pa.types.is_float64(t):
            return ab.double_elements
        if pa.types.is_boolean(t):
            return ab.bool_elements
    return None


def _plain_metadata(metadata: Sequence[Any]) -> bool:
    """True when a field carries only loom-frames' own markers (no constraints)."""
    return all(item in _KNOWN_METADATA for item in metadata)


def _default_element(ctx: Context, col: Column) -> bytes:
    info = ctx.model.model_fields[col.name]
    value = _dump(_adapter(ctx.model, col.name), info.get_default(call_default_factory=True))
    return ab.constant_element(col.key, value, CODEC_OPTIONS)


_adapters: dict[tuple[type, str], Any] = {}


def _adapter(model: type[Persistable], name: str) -> Any:
    """A Pydantic TypeAdapter validating one field as the model does."""
    found = _adapters.get((model, name))
    if found is None:
        from pydantic import TypeAdapter

        info = model.model_fields[name]
        annotation: Any = info.annotation
        if info.metadata:
            annotation = typing.Annotated[(annotation, *info.metadata)]
        found = TypeAdapter(annotation)
        _adapters[(model, name)] = found
    return found


def _dump(adapter: Any, value: Any) -> Any:
    return to_bson(adapter.dump_python(value, by_alias=True, round_trip=True))


def _object_field(
    ctx: Context, col: Column, source: str | None, arr: pa.Array | None, optional: bool
) -> _ObjectField:
    from pydantic import ValidationError

    info = ctx.model.model_fields[col.name]
    adapter = _adapter(ctx.model, col.name)
    # A free-form field's frame column is Extended JSON text, as the loaders give it:
    # read it back, so a loaded frame writes back what was stored.
    as_json = col.free_form and arr is not None and _is_text(arr.type)

    def convert(value: Any) -> Any:
        if as_json:
            try:
                value = from_json_text(value)
            except ValueError as exc:
                raise ValueError(
                    f"not Extended JSON text ({exc}): a free-form field's string column is "
                    "read as JSON, as loads write it (a plain string is '\"text\"')"
                ) from exc
        return _dump(adapter, adapter.validate_python(value))

    # An absent column stores the default; a null cell stores None where the field is
    # Optional, else the default.
    use_default = col.has_default and (arr is None or not optional)

    def null() -> Any:
        if use_default:
            return _dump(adapter, info.get_default(call_default_factory=True))
        return None
    if arr is not None and source is not None:
        values = arr.to_pylist()
        for row, value in enumerate(values):
            if value is None:
                if not optional and not col.has_default:
                    ctx.fail(col, source, row, f"{col.name} is required and not Optional",
                             "fill the nulls, or declare the field Optional")
                continue
            try:
                convert(value)
            except (ValidationError, ValueError, TypeError) as exc:
                ctx.fail(col, source, row, _first_line(exc))
    return _ObjectField(col.name, col.key, arr, convert, null)


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t)
                or pa.types.is_string_view(t))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(line.strip() for line in text[:3])


# ------------------------------------------------------------------ casts
def _check_timeseries(ctx: Context, fields: Sequence[_Field], matched: dict[str, str]) -> None:
    config = ctx.model.__dict__.get("__loom_persist__")
    ts = config.timeseries if config is not None else None
    if ts is None:
        return
    meta = next((f for f in fields if f.name == ts.metakey), None)
    if isinstance(meta, _ArrayField) and meta.array.null_count:
        col = next(c for c in model_columns(ctx.model) if c.name == ts.metakey)
        ctx.fail(col, matched[ts.metakey], first(meta.array.is_null()),
                 f"{ctx.model.__name__} is a time series keyed by {ts.metakey!r}, which is null",
                 f"give every row a {ts.metakey}")


# ------------------------------------------------------------------ row by row
def _needs_row_validation(model: type[Persistable]) -> bool:
    """True when the model has validators/serializers of its own (beyond loom's)."""
    own = model.__pydantic_decorators__
    base = Persistable.__pydantic_decorators__
    return bool(
        set(own.model_validators) - set(base.model_validators)
        or own.field_validators
        or own.field_serializers
        or own.model_serializers
        or own.computed_fields
    )


class _RowEncoder:
    """For models with their own validators: every row through ``model_validate``.

    The vectorised checks still run first; each row is then validated as one object
    (exactly what ``persist()`` would store), times and ids filled as ``persist()`` does.
    """

    def __init__(self, ctx: Context, matched: dict[str, str], frame: PreparedFrame) -> None:
        self.ctx = ctx
        self.matched = matched
        self.frame = frame
        self.model = ctx.model

    def _objects(self, start: int, stop: int) -> list[Persistable]:
        from pydantic import ValidationError

        model = self.model
        table = self.ctx.table.slice(start, stop - start)
        columns = {name: table.column(source).to_pylist() for name, source in self.matched.items()}
        defaults = {c.name for c in model_columns(model) if c.has_default}
        objects = []
        for i in range(stop - start):
            row = {name: values[i] for name, values in columns.items()}
            for name in [n for n, v in row.items() if v is None and n in defaults]:
                del row[name]
            row["id"] = ObjectId(bytes(self.frame.ids[start + i]))
            try:
                objects.append(model.model_validate(row))
            except ValidationError as exc:
                raise FrameValidationError(
                    f"{model.__name__}: row {start + i} does not validate: {_first_line(exc)}"
                ) from exc
        return objects

    def check(self) -> None:
        """Validate every row before anything is written."""
        step = 10_000
        for start in range(0, self.frame.num_rows, step):
            self._objects(start, min(start + step, self.frame.num_rows))

    def __call__(self, start: int, stop: int) -> list[bytes]:
        import bson

        out = []
        for obj in self._objects(start, stop):
            values = obj.__dict__
            for name in [c.name for c in model_columns(self.model)
                         if c.role in (Role.TIME_INSERTED, Role.TIME_UPDATED)]:
                if values[name] is None:
                    values[name] = self.ctx.now
            out.append(bson.encode(document_of(obj), codec_options=CODEC_OPTIONS))
        return out
