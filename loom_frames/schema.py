"""A model's columns, in one place: Arrow and Polars schemas, field references, projections.

Everything here is derived from the Pydantic annotations, never guessed from documents.
Frame columns are named by the Python field names (``id``, not ``_id``); each column
remembers its storage key (the alias) in the Arrow field metadata, so a ``pa.Schema`` is
the whole contract between the model, the loaders and the writers.

==========================  ===============================  ============================
annotation                  Arrow (frame) type               stored in MongoDB as
==========================  ===============================  ============================
``str``, StrLower/StrUpper  ``string``                       string
``int``, IncrCounter        ``int64``                        int32 / int64
``float``                   ``float64``                      double
``bool``                    ``bool``                         bool
``datetime``, TimeInserted  ``timestamp[ms, tz=UTC]``        date (UTC milliseconds)
``date``                    ``date32``                       date at midnight UTC
``Decimal``                 ``decimal128(p, s)`` (below)     decimal128
``UUID``                    ``string`` (36-char, lowercase)  binary subtype 4
``ObjectId`` (``id``)       ``string`` (24-char hex)         objectId
``Enum``                    type of its values (str / int)   the member's value
``Literal[...]``            type of its values               the value
``bytes``                   ``binary``                       binary subtype 0
``list[T]`` / ``set[T]``    ``list<T>``                      array
nested ``BaseModel``        ``struct<...>``                  embedded document
``Optional[T]``             ``T`` (every column is nullable)
==========================  ===============================  ============================

* **ObjectId** columns hold the 24-character lowercase hex string: readable, sortable in
  creation order and filterable in a notebook (``df[df.id == "64f8a0..."]``).
* **UUID** columns hold the canonical 36-character lowercase string for the same reason.
* **Decimal**: ``decimal128(max_digits, decimal_places)`` when the field declares both
  (``Field(max_digits=10, decimal_places=2)`` or ``condecimal``); otherwise
  ``decimal128(38, decimal_places or 18)``. A stored value that does not fit (NaN,
  Infinity, more fractional digits than the scale, too many digits) is invalid, never
  rounded.
* **Nullability**: every Arrow field is nullable, because any document may lack any field
  (a missing field loads as null). Whether the *model* requires the field is recorded in
  the field metadata (``loom.required``).
* ``dict``, ``Any``, unions of several types and self-referencing models have no column
  type (:attr:`Kind.ANY`); asking for an Arrow schema containing one is a
  :class:`~loom_frames.errors.ModelDeclarationError` naming them (select the other
  columns). They can still be filtered on (``fld['meta.source'] == 'web'``).

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

import builtins
import dataclasses
import datetime as _dt
import enum
import json
import types
import typing
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from bson import Decimal128, ObjectId
from pydantic import BaseModel

from .errors import FieldNotFoundError, ModelDeclarationError, did_you_mean
from .expr.bind import FieldRef, Kind, identity
from .fields import Marker, Role, normalize_datetime, to_object_id

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "Column",
    "ModelResolver",
    "arrow_schema",
    "arrow_type_of",
    "columns_from_arrow",
    "model_columns",
    "model_projection",
    "model_resolver",
    "polars_schema",
    "projection_of",
    "schema_name",
    "select_columns",
]

DEFAULT_DECIMAL_PRECISION = 38
DEFAULT_DECIMAL_SCALE = 18
MAX_DECIMAL_PRECISION = 38

_META_KIND = b"loom.kind"
_META_KEY = b"loom.key"
_META_VALUES = b"loom.values"
_META_REQUIRED = b"loom.required"
_META_MODEL = b"loom.model"

_ARROW_OF_KIND: dict[Kind, pa.DataType] = {
    Kind.STR: pa.string(),
    Kind.INT: pa.int64(),
    Kind.FLOAT: pa.float64(),
    Kind.BOOL: pa.bool_(),
    Kind.DATETIME: pa.timestamp("ms", tz="UTC"),
    Kind.DATE: pa.date32(),
    Kind.OBJECTID: pa.string(),
    Kind.UUID: pa.string(),
}


@dataclass(frozen=True, slots=True, eq=False)
class Column:
    """One frame column (or struct child / list element): where it is stored, what it holds.

    ``type`` is the frame's Arrow type, None when the field has no column type
    (``Kind.ANY``: dict, Any, ...). ``values`` are the allowed values of an Enum or
    Literal field; ``item`` is the element of a LIST (or the value type of a dict);
    ``children`` are the fields of a STRUCT.
    """

    name: str
    key: str
    kind: Kind
    type: pa.DataType | None
    children: "tuple[Column, ...]" = ()
    item: "Column | None" = None
    values: tuple[Any, ...] | None = None
    role: Role | None = None
    enum_type: builtins.type[enum.Enum] | None = None
    required: bool = False
    annotation: Any = None

    @property
    def binary(self) -> bool:
        """True for a ``bytes`` column (stored as BSON binary subtype 0)."""
        return self.kind is Kind.ANY and self.type is not None and pa.types.is_binary(self.type)

    def child(self, name: str) -> "Column | None":
        """The struct child called ``name`` (Python name first, then storage key)."""
        for col in self.children:
            if col.name == name:
                return col
        return next((col for col in self.children if col.key == name), None)

    def arrow_field(self) -> pa.Field:
        """This column as a ``pa.Field`` carrying its storage key/kind in the metadata."""
        if self.type is None:
            raise ModelDeclarationError(_no_type_message([self]))
        meta: dict[bytes, bytes] = {_META_KIND: self.kind.value.encode()}
        if self.key != self.name:
            meta[_META_KEY] = self.key.encode()
        if self.values is not None:
            meta[_META_VALUES] = json.dumps(list(self.values)).encode()
        if self.required:
            meta[_META_REQUIRED] = b"true"
        return pa.field(self.name, self.type, nullable=True, metadata=meta)


# ---------------------------------------------------------------------------- models
_columns_cache: "weakref.WeakKeyDictionary[type, tuple[Column, ...]]" = weakref.WeakKeyDictionary()


def arrow_type_of(kind: Kind) -> pa.DataType | None:
    """The frame type of a computed value of ``kind`` (None for kinds without one).

    >>> str(arrow_type_of(Kind.DATETIME))
    'timestamp[ms, tz=UTC]'
    """
    return _ARROW_OF_KIND.get(kind)


def model_columns(model: type[BaseModel]) -> tuple[Column, ...]:
    """The model's columns in declaration order (cached per model class).

    >>> from loom_frames import Persistable
    >>> class P(Persistable):
    ...     tags: list[str] = []
    >>> [(c.name, c.key, c.kind.value) for c in model_columns(P)]
    [('id', '_id', 'objectid'), ('created_at', 'created_at', 'datetime'), ('updated_time', 'updated_time', 'datetime'), ('tags', 'tags', 'list')]
    """
    found = _columns_cache.get(model)
    if found is None:
        found = _model_columns(model, (model,))
        _columns_cache[model] = found
    return found


def arrow_schema(model: type[BaseModel], columns: Sequence[str] | None = None) -> pa.Schema:
    """The Arrow schema of the model's frames (all columns, or ``columns`` in that order).

    ``columns`` are Python field names (or storage keys). A field without a column type
    (``dict``, ``Any``, ...) is a :class:`~loom_frames.errors.ModelDeclarationError`.

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
    missing = [c for c in cols if not _has_type(c)]
    if missing:
        raise ModelDeclarationError(_no_type_message(missing, model.__name__))
    return pa.schema(
        [c.arrow_field() for c in cols], metadata={_META_MODEL: model.__name__.encode()}
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


def select_columns(model: type[BaseModel], columns: Sequence[str] | None) -> tuple[Column, ...]:
    """The model's columns named in ``columns`` (all when None), in that order."""
    cols = model_columns(model)
    if columns is None:
        return cols
    if isinstance(columns, str):
        raise TypeError("columns must be a sequence of names, not a string")
    out: list[Column] = []
    for name in columns:
        col = next((c for c in cols if c.name == name), None) or next(
            (c for c in cols if c.key == name), None
        )
        if col is None:
            raise FieldNotFoundError(
                f"{model.__name__} has no field {name!r}."
                + did_you_mean(name, [c.name for c in cols])
            )
        out.append(col)
    return tuple(out)


def model_projection(
    model: type[BaseModel], columns: Sequence[str] | None = None
) -> dict[str, int]:
    """The ``find`` projection fetching exactly the model's stored keys (leaf paths).

    Nested models are projected field by field, so extra keys in stored subdocuments are
    not transferred; arrays are projected whole (a sub-path projection would drop array
    elements that are not documents).

    >>> from pydantic import BaseModel
    >>> from loom_frames import Persistable
    >>> class Address(BaseModel):
    ...     city: str
    >>> class Person(Persistable):
    ...     address: Address
    >>> model_projection(Person)
    {'_id': 1, 'created_at': 1, 'updated_time': 1, 'address.city': 1}
    """
    return projection_of(select_columns(model, columns))


def projection_of(columns: Iterable[Column]) -> dict[str, int]:
    """The leaf-path projection of columns (struct children by storage key)."""
    out: dict[str, int] = {}
    for col in columns:
        _project(col, col.key, out)
    if "_id" not in out:
        out["_id"] = 0
    return out


def _project(col: Column, path: str, out: dict[str, int]) -> None:
    # Arrays are fetched whole: projecting "items.sku" would drop array elements that
    # are not documents (a null element, or an invalid one the loader must report).
    if col.kind is Kind.STRUCT and col.children:
        for child in col.children:
            _project(child, f"{path}.{child.key}", out)
    else:
        out[path] = 1


# ---------------------------------------------------------------- annotation walking
def _model_columns(model: type[BaseModel], stack: tuple[type, ...]) -> tuple[Column, ...]:
    _ensure_complete(model)
    out = []
    for name, info in model.model_fields.items():
        key = info.serialization_alias or info.alias or name
        col = _column(name, key, info.annotation, list(info.metadata), stack)
        required = info.is_required() and not _is_optional(info.annotation)
        out.append(_replace(col, required=required))
    return tuple(out)


def _ensure_complete(model: type[BaseModel]) -> None:
    """A model with unresolved forward references cannot be mapped: say so clearly."""
    if getattr(model, "__pydantic_complete__", True):
        return
    try:
        model.model_rebuild()
    except Exception as exc:  # pydantic's PydanticUndefinedAnnotation and friends
        raise ModelDeclarationError(
            f"{model.__name__} is not fully defined ({exc}). Hint: define the referenced "
            f"types first, or call {model.__name__}.model_rebuild() once they exist."
        ) from exc


def _is_optional(annotation: Any) -> bool:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return type(None) in typing.get_args(annotation)
    return annotation is None or annotation is type(None)


def _replace(col: Column, **changes: Any) -> Column:
    return dataclasses.replace(col, **changes)


def _column(
    name: str, key: str, annotation: Any, metadata: list[Any], stack: tuple[type, ...]
) -> Column:
    """Map one annotation to a :class:`Column` (recursing into lists and models)."""
    ann = annotation
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            args = typing.get_args(ann)
            metadata = [*metadata, *ann.__metadata__]
            ann = args[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(members) != 1:
                return Column(name, key, Kind.ANY, None, annotation=annotation)
            ann = members[0]
        else:
            break
    role = next((m.role for m in metadata if isinstance(m, Marker)), None)
    origin = typing.get_origin(ann)
    base = Column(name, key, Kind.ANY, None, role=role, annotation=annotation)

    if origin is typing.Literal:
        values = typing.get_args(ann)
        kind = _kind_of_values(values)
        if kind is None:
            return base
        return _replace(base, kind=kind, type=_ARROW_OF_KIND[kind], values=tuple(values))
    if origin in (list, set, frozenset, tuple) or _is_abc_sequence(origin):
        args = typing.get_args(ann)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return base  # a fixed, heterogeneous tuple has no list type
        item = _column("item", "item", args[0] if args else Any, [], stack)
        arrow = pa.list_(item.arrow_field()) if _has_type(item) else None
        return _replace(base, kind=Kind.LIST, type=arrow, item=item)
    if origin in (dict, Mapping) or ann is dict:
        args = typing.get_args(ann)
        value = _column("value", "value", args[1], [], stack) if len(args) == 2 else None
        return _replace(base, item=value)
    if not isinstance(ann, type):
        return base

    if issubclass(ann, enum.Enum):
        values = tuple(member.value for member in ann)
        kind = _kind_of_values(values)
        if kind is None or kind is Kind.BOOL:
            return base
        flag = issubclass(ann, enum.Flag)
        return _replace(
            base,
            kind=Kind.ENUM,
            type=_ARROW_OF_KIND[kind],
            values=None if flag else values,
            enum_type=ann,
        )
    if issubclass(ann, BaseModel):
        if ann in stack:  # a self-referencing model has no finite Arrow type
            return base
        children = _model_columns(ann, (*stack, ann))
        arrow = (
            pa.struct([c.arrow_field() for c in children])
            if all(_has_type(c) for c in children)
            else None
        )
        return _replace(base, kind=Kind.STRUCT, type=arrow, children=children)
    if issubclass(ann, bool):
        return _replace(base, kind=Kind.BOOL, type=pa.bool_())
    if issubclass(ann, int):
        return _replace(base, kind=Kind.INT, type=pa.int64())
    if issubclass(ann, float):
        return _replace(base, kind=Kind.FLOAT, type=pa.float64())
    if issubclass(ann, str):
        return _replace(base, kind=Kind.STR, type=pa.string())
    if issubclass(ann, _dt.datetime):
        return _replace(base, kind=Kind.DATETIME, type=_ARROW_OF_KIND[Kind.DATETIME])
    if issubclass(ann, _dt.date):
        return _replace(base, kind=Kind.DATE, type=pa.date32())
    if issubclass(ann, Decimal):
        return _replace(base, kind=Kind.DECIMAL, type=_decimal_type(metadata, name))
    if issubclass(ann, uuid.UUID):
        return _replace(base, kind=Kind.UUID, type=pa.string())
    if issubclass(ann, ObjectId):
        return _replace(base, kind=Kind.OBJECTID, type=pa.string())
    if issubclass(ann, (bytes, bytearray)):
        return _replace(base, type=pa.binary())
    return base


def _is_abc_sequence(origin: Any) -> bool:
    import collections.abc as abc

    return origin in (abc.Sequence, abc.MutableSequence, abc.Set, abc.MutableSet)


def _kind_of_values(values: Sequence[Any]) -> Kind | None:
    if not values:
        return None
    if all(isinstance(v, bool) for v in values):
        return Kind.BOOL
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return Kind.INT
    if all(isinstance(v, str) for v in values):
        return Kind.STR
    if all(isinstance(v, float) for v in values):
        return Kind.FLOAT
    return None


def _decimal_type(metadata: list[Any], name: str) -> pa.Decimal128Type:
    digits = next((m.max_digits for m in metadata if getattr(m, "max_digits", None)), None)
    places = next(
        (m.decimal_places for m in metadata if getattr(m, "decimal_places", None) is not None),
        None,
    )
    if digits is not None and places is not None:
        precision, scale = digits, places
    else:
        precision = DEFAULT_DECIMAL_PRECISION
        scale = DEFAULT_DECIMAL_SCALE if places is None else places
    if precision > MAX_DECIMAL_PRECISION or scale > precision:
        raise ModelDeclarationError(
            f"Decimal field {name!r} declares max_digits={digits}, decimal_places={places}; "
            f"a frame column holds at most {MAX_DECIMAL_PRECISION} digits with "
            "decimal_places <= max_digits. Hint: lower max_digits."
        )
    return pa.decimal128(precision, scale)


def _has_type(col: Column) -> bool:
    return col.type is not None


def _no_type_message(cols: Sequence[Column], model: str | None = None) -> str:
    names = ", ".join(f"{c.name!r} ({_describe_annotation(c.annotation)})" for c in cols)
    where = f" of {model}" if model else ""
    return (
        f"field(s) {names}{where} have no dataframe column type (dict, Any, unions of "
        "several types, self-referencing models). Hint: select the other columns, or "
        "declare a nested model for the field."
    )


def _describe_annotation(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None)
    return text if isinstance(text, str) else repr(annotation).replace("typing.", "")


# ------------------------------------------------------------------- Arrow -> columns
_KIND_BY_NAME = {k.value: k for k in Kind}


def schema_name(schema: pa.Schema) -> str | None:
    """The model name an Arrow schema was derived from (``loom.model`` metadata)."""
    meta = schema.metadata or {}
    name = meta.get(_META_MODEL)
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
    key = meta.get(_META_KEY, field.name.encode()).decode()
    kind_name = meta.get(_META_KIND)
    values = json.loads(meta[_META_VALUES]) if _META_VALUES in meta else None
    children: tuple[Column, ...] = ()
    item = None
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
        required=meta.get(_META_REQUIRED) == b"true",
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
            col = _lookup(scope, seg)
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


def _lookup(scope: Sequence[Column], name: str) -> Column | None:
    for col in scope:
        if col.name == name:
            return col
    return next((col for col in scope if col.key == name), None)


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
        if col.role is Role.STR_LOWER:
            return _norm_lower
        if col.role is Role.STR_UPPER:
            return _norm_upper
        return _norm_str
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


def _norm_lower(value: Any) -> Any:
    value = _norm_str(value)
    return value.lower() if isinstance(value, str) else value


def _norm_upper(value: Any) -> Any:
    value = _norm_str(value)
    return value.upper() if isinstance(value, str) else value


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
        return _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.UTC)
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
