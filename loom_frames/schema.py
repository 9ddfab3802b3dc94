"""A model's columns, in one place: Arrow and Polars schemas, field references, projections.

Frame columns are named by the Python field names (``id``, not ``_id``); each column
remembers its storage key (the alias) and kind in the Arrow field metadata, so a
``pa.Schema`` is the whole contract between the model, the loaders and the writers. What
each annotation maps to is decided in :mod:`loom_frames.columns` (the field catalogue).

* **ObjectId** columns hold the 24-character lowercase hex string: readable, sortable in
  creation order and filterable in a notebook (``df[df.id == "64f8a0..."]``).
* **UUID** columns hold the canonical 36-character lowercase string for the same reason.
* **Decimal**: a stored value that does not fit the column's ``decimal128(p, s)`` (NaN,
  Infinity, more fractional digits than the scale, too many digits) is invalid, never
  rounded.
* **Nullability**: every Arrow field is nullable, because any document may lack any field
  (a missing field loads as null). Whether the *model* requires the field is recorded in
  the field metadata (``loom.required``).
* A **free-form** field (``dict``, ``Any``, unions, ...: no column type) is a ``string``
  column of relaxed Extended JSON text (``{"source": "web", "n": 2}``; null for a null
  or missing value; ``pl.col("meta").str.json_decode()`` parses it). Dotted paths into
  it filter (``fld['meta.source'] == 'web'``) and select (``select("meta.source")``, a
  JSON text column too). Declare a nested model to get a struct column instead.

>>> from loom_frames import Persistable, StrLower
>>> class User(Persistable):
...     name: str
...     email: StrLower
...     age: int
>>> arrow_schema(User).names
['id', 'created_at', 'updated_time', 'name', 'email', 'age']
>>> str(arrow_schema(User).field("created_at").type)
'timestamp[ms, tz=UTC]'
>>> model_resolver(User).resolve("id").path
'_id'
"""

import datetime as _dt
import enum
import json
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from bson import Decimal128, ObjectId
from pydantic import BaseModel

from .columns import (
    META_JSON,
    META_KEY,
    META_KIND,
    META_MODEL,
    META_REQUIRED,
    META_VALUES,
    Column,
    find_column,
    model_columns,
    select_columns,
)
from .errors import FieldNotFoundError, ModelDeclarationError, did_you_mean
from .expr.bind import FieldRef, Kind, identity
from .fields import case_rule, date_to_datetime, normalize_datetime, to_object_id

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "ModelResolver",
    "arrow_schema",
    "columns_from_arrow",
    "model_projection",
    "model_resolver",
    "polars_schema",
    "projection_of",
    "schema_name",
]



def arrow_schema(model: type[BaseModel], columns: Sequence[str] | None = None) -> pa.Schema:
    """The Arrow schema of the model's frames (all columns, or ``columns`` in that order).

    ``columns`` are Python field names (or storage keys). A free-form field (``dict``,
    ``Any``, ...) is a ``string`` column of Extended JSON text (metadata ``loom.json``).

    >>> from loom_frames import Persistable
    >>> class Item(Persistable):
    ...     sku: str
    ...     price: float
    >>> arrow_schema(Item, ["id", "price"])  # doctest: +ELLIPSIS
    id: string
      -- field metadata --
      loom.kind: 'objectid'
      loom.key: '_id'
    price: double
      -- field metadata --
      loom.kind: 'float'
      loom.required: 'true'
    -- schema metadata --
    loom.model: 'Item'
    """
    cols = select_columns(model, columns)
    return pa.schema(
        [c.arrow_field() for c in cols], metadata={META_MODEL: model.__name__.encode()}
    )


def polars_schema(model: type[BaseModel], columns: Sequence[str] | None = None) -> "pl.Schema":
    """The Polars schema of the model's frames: exactly what a load returns.

    >>> from loom_frames import Persistable
    >>> class Reading(Persistable):
    ...     value: float
    >>> polars_schema(Reading)
    Schema([('id', String), ('created_at', Datetime(time_unit='ms', time_zone='UTC')), ('updated_time', Datetime(time_unit='ms', time_zone='UTC')), ('value', Float64)])
    """
    import polars as pl

    schema = arrow_schema(model, columns)
    frame = pl.from_arrow(schema.empty_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.schema


def model_projection(
    model: type[BaseModel], columns: Sequence[str] | None = None
) -> dict[str, int]:
    """The ``find`` projection fetching exactly the model's stored top-level keys.

    Sub-documents and arrays are fetched whole: a sub-path projection (``address.city``)
    would silently drop a stored value of the wrong shape (a string where a document
    belongs, a non-document array element), which the loader must see to report it.

    >>> from pydantic import BaseModel
    >>> from loom_frames import Persistable
    >>> class Address(BaseModel):
    ...     city: str
    >>> class Person(Persistable):
    ...     address: Address
    >>> model_projection(Person)
    {'_id': 1, 'created_at': 1, 'updated_time': 1, 'address': 1}
    """
    return projection_of(select_columns(model, columns))


def projection_of(columns: Iterable[Column]) -> dict[str, int]:
    """The plain projection of columns: their top-level storage keys (``_id: 0`` unless
    one of them is the id).

    >>> projection_of(columns_from_arrow(pa.schema({"a": pa.int64()})))
    {'a': 1, '_id': 0}
    """
    out = {col.key: 1 for col in columns}
    if "_id" not in out:
        out["_id"] = 0
    return out


# ---------------------------------------------------------------- annotation walking
# ------------------------------------------------------------------- Arrow -> columns
_KIND_BY_NAME = {k.value: k for k in Kind}


def schema_name(schema: pa.Schema) -> str | None:
    """The model name an Arrow schema was derived from (``loom.model`` metadata)."""
    meta = schema.metadata or {}
    name = meta.get(META_MODEL)
    return name.decode() if name is not None else None


def columns_from_arrow(schema: pa.Schema) -> tuple[Column, ...]:
    """Columns of an Arrow schema: its ``loom.*`` metadata, else inferred from the types.

    A plain schema works too (e.g. for aggregation outputs): string -> STR, int64 -> INT,
    timestamp -> DATETIME, struct -> STRUCT, ...; the storage key is the field name.

    >>> [c.kind.value for c in columns_from_arrow(pa.schema({"a": pa.int64(), "b": pa.string()}))]
    ['int', 'str']
    """
    return tuple(_column_from_field(f) for f in schema)


def _column_from_field(field: pa.Field) -> Column:
    meta = field.metadata or {}
    t = field.type
    key = meta.get(META_KEY, field.name.encode()).decode()
    kind_name = meta.get(META_KIND)
    values = json.loads(meta[META_VALUES]) if META_VALUES in meta else None
    children: tuple[Column, ...] = ()
    item = None
    if meta.get(META_JSON) == b"true":  # a free-form column: JSON text in frames
        free = _KIND_BY_NAME[kind_name.decode()] if kind_name is not None else Kind.ANY
        return Column(field.name, key, free, None, required=meta.get(META_REQUIRED) == b"true")
    if pa.types.is_struct(t):
        children = tuple(_column_from_field(t.field(i)) for i in range(t.num_fields))
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        item = _column_from_field(t.value_field)
    kind = _KIND_BY_NAME[kind_name.decode()] if kind_name is not None else _infer_kind(t)
    if kind is None:
        raise ModelDeclarationError(
            f"column {field.name!r} has Arrow type {t}, which loom-frames cannot load. "
            "Hint: use string, int64, float64, bool, timestamp[ms], date32, decimal128, "
            "binary, list or struct."
        )
    return Column(
        field.name,
        key,
        kind,
        t,
        children=children,
        item=item,
        values=tuple(values) if values is not None else None,
        required=meta.get(META_REQUIRED) == b"true",
    )


def _infer_kind(t: pa.DataType) -> Kind | None:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return Kind.STR
    if pa.types.is_boolean(t):
        return Kind.BOOL
    if pa.types.is_integer(t):
        return Kind.INT
    if pa.types.is_floating(t):
        return Kind.FLOAT
    if pa.types.is_timestamp(t):
        return Kind.DATETIME
    if pa.types.is_date32(t) or pa.types.is_date64(t):
        return Kind.DATE
    if pa.types.is_decimal(t):
        return Kind.DECIMAL
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return Kind.LIST
    if pa.types.is_struct(t):
        return Kind.STRUCT
    if pa.types.is_binary(t) or pa.types.is_null(t):
        return Kind.ANY
    return None


# ------------------------------------------------------------------------ resolving
class ModelResolver:
    """Resolves field names of one model to :class:`~loom_frames.expr.bind.FieldRef`.

    Names are Python field names or storage keys (aliases) at every level; ``id`` and
    ``_id`` both mean the ObjectId key; dotted names walk into nested models
    (``address.city``), into lists of models (``items.sku``: a LIST of the ``sku``
    values, as MongoDB sees it) and into dict fields (``meta.source``).

    >>> from pydantic import BaseModel
    >>> from loom_frames import Persistable, StrLower
    >>> class Address(BaseModel):
    ...     city: StrLower
    >>> class Person(Persistable):
    ...     address: Address
    >>> ref = model_resolver(Person).resolve("address.city")
    >>> ref.path, ref.columns, ref.kind.value, ref.normalize("Paris")
    ('address.city', ('address', 'city'), 'str', 'paris')
    >>> model_resolver(Person).resolve("adress")
    Traceback (most recent call last):
    ...
    loom_frames.errors.FieldNotFoundError: Person has no field 'adress'. Hint: did you mean 'address'?
    """

    __slots__ = ("__weakref__", "_cache", "_columns", "model_name")

    def __init__(self, model_name: str, columns: tuple[Column, ...]) -> None:
        self.model_name = model_name
        self._columns = columns
        self._cache: dict[str, FieldRef] = {}

    def resolve(self, name: str) -> FieldRef:
        """The :class:`FieldRef` of ``name``; ``FieldNotFoundError`` with a hint if none."""
        ref = self._cache.get(name)
        if ref is None:
            ref = self._resolve(name)
            self._cache[name] = ref
        return ref

    def _resolve(self, name: str) -> FieldRef:
        if not isinstance(name, str) or not name:
            raise FieldNotFoundError(
                f"{self.model_name}: a field name must be a non-empty string, got {name!r}."
            )
        segments = name.split(".")
        if any(not s or s.startswith("$") or "\x00" in s for s in segments):
            raise FieldNotFoundError(
                f"{self.model_name} has no field {name!r}: field names have no empty parts "
                "and never start with '$'. Hint: a value is always a literal; write "
                "fld['a'] == value."
            )
        keys: list[str] = []
        names: list[str] = []
        in_list = False
        scope: tuple[Column, ...] = self._columns
        where = self.model_name
        col: Column | None = None
        rest = segments
        while rest:
            seg, rest = rest[0], rest[1:]
            col = find_column(scope, seg)
            if col is None:
                raise FieldNotFoundError(
                    f"{where} has no field {seg!r}."
                    + did_you_mean(
                        seg, dict.fromkeys([c.name for c in scope] + [c.key for c in scope])
                    )
                )
            keys.append(col.key)
            names.append(col.name)
            target = col.item if col.kind is Kind.LIST and col.item is not None else col
            if not rest:
                break
            if target.kind is Kind.STRUCT:
                in_list = in_list or col.kind is Kind.LIST
                scope = target.children
                where = f"{'.'.join(names)} (in {self.model_name})"
                continue
            if target.kind is Kind.ANY and target.type is None:  # dict / Any: free keys
                in_list = in_list or col.kind is Kind.LIST
                keys.extend(rest)
                names.extend(rest)
                value = target.item or Column(rest[-1], rest[-1], Kind.ANY, None)
                col = value if len(rest) == 1 else Column(rest[-1], rest[-1], Kind.ANY, None)
                break
            raise FieldNotFoundError(
                f"{'.'.join(names)} of {self.model_name} is a {col.kind.value} field: it has "
                f"no sub-field {rest[0]!r}."
            )
        assert col is not None
        ref = _ref(col, ".".join(keys), tuple(names))
        if in_list and col.kind is not Kind.LIST:
            return FieldRef(ref.path, ref.columns, Kind.LIST, item=ref)
        return ref

    def __repr__(self) -> str:
        return f"ModelResolver({self.model_name!r})"


_resolvers: "weakref.WeakKeyDictionary[type, ModelResolver]" = weakref.WeakKeyDictionary()


def model_resolver(model: type[BaseModel]) -> ModelResolver:
    """The (cached) resolver of a model's field names for the expression binder.

    >>> from loom_frames import Persistable
    >>> class Stats(Persistable):
    ...     user_id: str
    >>> from bson import ObjectId
    >>> model_resolver(Stats).resolve("user_id").normalize(ObjectId("64f8a0000000000000000000"))
    '64f8a0000000000000000000'
    """
    found = _resolvers.get(model)
    if found is None:
        found = ModelResolver(model.__name__, model_columns(model))
        _resolvers[model] = found
    return found


def _ref(col: Column, path: str, names: tuple[str, ...]) -> FieldRef:
    item = None
    if col.kind is Kind.LIST and col.item is not None:
        item = _ref(col.item, path, names)
    return FieldRef(path, names, col.kind, item=item, normalize=_normalizer(col))


# --------------------------------------------------------------------- normalisers
def _normalizer(col: Column) -> Callable[[Any], Any]:
    """The literal normaliser of a column: the value as the stored field would hold it.

    Never changes None. The binder turns a ValueError/TypeError into an
    ``InvalidExpressionError`` naming the field.
    """
    kind = col.kind
    if kind is Kind.STR:
        rule = case_rule(col.role)
        return _norm_str if rule is None else _CaseNormalizer(rule)
    if kind is Kind.OBJECTID:
        return _norm_object_id
    if kind is Kind.DATETIME:
        return _norm_datetime
    if kind is Kind.DATE:
        return _norm_date
    if kind is Kind.DECIMAL:
        return _norm_decimal
    if kind is Kind.UUID:
        return _norm_uuid
    if kind is Kind.INT:
        return _norm_int
    if kind is Kind.FLOAT:
        return _norm_float
    if kind is Kind.BOOL:
        return _norm_bool
    if kind is Kind.ENUM:
        return _EnumNormalizer(col.enum_type, col.values)
    return identity


def _norm_str(value: Any) -> Any:
    if isinstance(value, ObjectId):
        return str(value)
    return value


class _CaseNormalizer:
    """StrLower / StrUpper literals: the field's own case rule (``fields.case_rule``)."""

    __slots__ = ("rule",)

    def __init__(self, rule: Callable[[str], str]) -> None:
        self.rule = rule

    def __call__(self, value: Any) -> Any:
        value = _norm_str(value)
        return self.rule(value) if isinstance(value, str) else value


def _norm_object_id(value: Any) -> Any:
    return None if value is None else to_object_id(value)


def _to_pydatetime(value: Any) -> Any:
    convert = getattr(value, "to_pydatetime", None)  # pandas.Timestamp
    return convert() if callable(convert) else value


def _norm_datetime(value: Any) -> Any:
    value = _to_pydatetime(value)
    if isinstance(value, str):
        value = _dt.datetime.fromisoformat(value)
    if isinstance(value, _dt.datetime):
        return normalize_datetime(value)
    if isinstance(value, _dt.date):
        return date_to_datetime(value)
    return value


def _norm_date(value: Any) -> Any:
    value = _to_pydatetime(value)
    if isinstance(value, str):
        value = _dt.date.fromisoformat(value)
    if isinstance(value, _dt.datetime):
        value = normalize_datetime(value)
        return value.date() if value.timetz().replace(tzinfo=None) == _dt.time() else value
    return value


def _norm_decimal(value: Any) -> Any:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation as exc:
            raise ValueError(f"{value!r} is not a decimal number") from exc
    return value


def _norm_uuid(value: Any) -> Any:
    if isinstance(value, str):
        return uuid.UUID(value)
    if isinstance(value, (bytes, bytearray)) and len(value) == 16:
        return uuid.UUID(bytes=bytes(value))
    return value


def _numpy_scalar(value: Any) -> Any:
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    return value


def _norm_int(value: Any) -> Any:
    return _numpy_scalar(value)


def _norm_float(value: Any) -> Any:
    return _numpy_scalar(value)


def _norm_bool(value: Any) -> Any:
    return _numpy_scalar(value)


class _EnumNormalizer:
    """Enum member -> its value; a raw value must be one of the enum's values."""

    __slots__ = ("enum_type", "values")

    def __init__(self, enum_type: type[enum.Enum] | None, values: tuple[Any, ...] | None):
        self.enum_type = enum_type
        self.values = values

    def __call__(self, value: Any) -> Any:
        if isinstance(value, enum.Enum):
            if self.enum_type is not None and not isinstance(value, self.enum_type):
                raise ValueError(f"{value!r} is not a member of {self.enum_type.__name__}")
            return value.value
        value = _numpy_scalar(value)
        if self.values is not None and value not in self.values:
            name = self.enum_type.__name__ if self.enum_type is not None else "the enum"
            raise ValueError(
                f"{value!r} is not a value of {name} (one of "
                f"{', '.join(repr(v) for v in self.values)})"
            )
        return value
