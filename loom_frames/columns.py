"""The field catalogue: each model field's storage key, kind, type, role and defaults.

Every other module asks this one what a field is: the writers (storage keys, markers,
required columns, defaults), the loaders and the expression binder (kinds, Arrow types),
``Persistable`` itself (keys checked when the class is defined). A rule about fields
lives here once.

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

* **Decimal**: ``decimal128(max_digits, decimal_places)`` when the field declares both
  (``Field(max_digits=10, decimal_places=2)`` or ``condecimal``); otherwise
  ``decimal128(38, decimal_places or 18)``.
* ``dict``, ``Any``, unions of several types, ``tuple[int, str]``, ``timedelta``, lists
  of those and self-referencing models have no column type (``type`` None): they are
  **free-form**. Objects hold whatever Pydantic makes of them; a frame holds each value
  as relaxed Extended JSON text (a ``string`` column, :attr:`Column.frame_type`); counts,
  filters and dotted paths into them (``fld['meta.source']``) need no column type.
* **Storage keys** (the alias a field is stored under) are checked when a model class is
  defined (:func:`check_storage_keys`): never empty, never starting with ``$``, without
  ``.`` or NUL, not ``_id`` except for ``id``, and not one of the library's reserved
  names (``__loom...``; ``_v`` on a model declared with ``version=``).

>>> from loom_frames import Persistable
>>> class User(Persistable):
...     name: str
...     email: str
>>> [(c.name, c.key, c.kind.value) for c in model_columns(User)]
[('id', '_id', 'objectid'), ('created_at', 'created_at', 'datetime'), ('updated_time', 'updated_time', 'datetime'), ('name', 'name', 'str'), ('email', 'email', 'str')]
>>> column_of(User, "_id").name
'id'
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as _dt
import enum
import json
import types
import typing
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from pydantic import BaseModel

from .errors import FieldNotFoundError, ModelDeclarationError, did_you_mean
from .expr.bind import Kind
from .expr.literals import RESERVED_PREFIX, check_output_name, key_problem
from .fields import Marker, Role

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "RESERVED_PREFIX",
    "Column",
    "arrow_type_of",
    "check_output_name",
    "check_storage_keys",
    "column_of",
    "find_column",
    "key_problem",
    "model_columns",
    "select_columns",
    "storage_key",
    "with_role",
]

DEFAULT_DECIMAL_PRECISION = 38
DEFAULT_DECIMAL_SCALE = 18
MAX_DECIMAL_PRECISION = 38

META_KIND = b"loom.kind"
META_KEY = b"loom.key"
META_VALUES = b"loom.values"
META_REQUIRED = b"loom.required"
META_MODEL = b"loom.model"
META_JSON = b"loom.json"  # a free-form column: values as Extended JSON text

@cache
def _arrow_of_kind() -> dict[Kind, pa.DataType]:
    import pyarrow as pa  # not at import: defining a model needs no frame library

    return {
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

    For model fields: ``optional`` (the annotation admits None), ``has_default`` (the
    field may be left out), ``default_is_none`` (its default is None: a None value may
    be stored as an absent key) and ``required`` (a frame must have the column: no
    default and not Optional).
    """

    name: str
    key: str
    kind: Kind
    type: pa.DataType | None
    children: tuple[Column, ...] = ()
    item: Column | None = None
    values: tuple[Any, ...] | None = None
    role: Role | None = None
    enum_type: builtins.type[enum.Enum] | None = None
    required: bool = False
    annotation: Any = None
    optional: bool = False
    has_default: bool = False
    default_is_none: bool = False

    @property
    def free_form(self) -> bool:
        """True for a column without a column type (dict, Any, unions, ...): a frame
        holds its values as Extended JSON text."""
        return self.type is None

    @property
    def frame_type(self) -> pa.DataType:
        """The Arrow type of this column in a frame (``string`` for a free-form one)."""
        import pyarrow as pa

        return pa.string() if self.type is None else self.type

    @property
    def binary(self) -> bool:
        """True for a ``bytes`` column (stored as BSON binary subtype 0)."""
        import pyarrow as pa

        return self.kind is Kind.ANY and self.type is not None and pa.types.is_binary(self.type)

    def child(self, name: str) -> Column | None:
        """The struct child called ``name`` (Python name first, then storage key)."""
        return find_column(self.children, name)

    def arrow_field(self) -> pa.Field:
        """This column as a ``pa.Field`` carrying its storage key/kind in the metadata."""
        import pyarrow as pa

        meta: dict[bytes, bytes] = {META_KIND: self.kind.value.encode()}
        if self.type is None:
            meta[META_JSON] = b"true"
        if self.key != self.name:
            meta[META_KEY] = self.key.encode()
        if self.values is not None:
            meta[META_VALUES] = json.dumps(list(self.values)).encode()
        if self.required:
            meta[META_REQUIRED] = b"true"
        return pa.field(self.name, self.frame_type, nullable=True, metadata=meta)


# ---------------------------------------------------------------------------- models
_columns_cache: "weakref.WeakKeyDictionary[type, tuple[Column, ...]]" = weakref.WeakKeyDictionary()


def arrow_type_of(kind: Kind) -> pa.DataType | None:
    """The frame type of a computed value of ``kind`` (None for kinds without one).

    >>> str(arrow_type_of(Kind.DATETIME))
    'timestamp[ms, tz=UTC]'
    """
    return _arrow_of_kind().get(kind)


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


def find_column(scope: Sequence[Column], name: str) -> Column | None:
    """The column called ``name`` in ``scope``: Python name first, then storage key."""
    for col in scope:
        if col.name == name:
            return col
    return next((col for col in scope if col.key == name), None)


def storage_key(model: type[BaseModel], name: str) -> str:
    """The storage key of field ``name`` (a field name or key; dotted paths keep their
    tail), read off the Pydantic fields alone: usable while a class is being declared.

    >>> from loom_frames import Persistable
    >>> storage_key(Persistable, "id"), storage_key(Persistable, "_id")
    ('_id', '_id')
    """
    head, dot, tail = name.partition(".") if isinstance(name, str) else ("", "", "")
    keys = {n: _key_of(n, info) for n, info in model.model_fields.items()}
    if head in keys:
        return keys[head] + dot + tail
    if head and head in keys.values():
        return name
    raise FieldNotFoundError(
        f"{model.__name__} has no field {name!r}." + did_you_mean(str(head), keys)
    )


def _key_of(name: str, info: Any) -> str:
    """A Pydantic field's storage key: what ``model_dump(by_alias=True)`` writes."""
    return str(info.serialization_alias or info.alias or name)


def column_of(model: type[BaseModel], name: str) -> Column:
    """The model's column ``name`` (a field name or storage key; ``id`` and ``_id`` alike).

    The ONE lookup of a field by name: a typo is a ``FieldNotFoundError`` (also a
    ``KeyError``) naming the closest fields.

    >>> from loom_frames import Persistable
    >>> class Item(Persistable):
    ...     sku: str
    >>> column_of(Item, "skus")
    Traceback (most recent call last):
    ...
    loom_frames.errors.FieldNotFoundError: Item has no field 'skus'. Hint: did you mean 'sku'?
    """
    cols = model_columns(model)
    found = find_column(cols, name) if isinstance(name, str) else None
    if found is None:
        raise FieldNotFoundError(
            f"{model.__name__} has no field {name!r}."
            + did_you_mean(str(name), [c.name for c in cols])
        )
    return found


def select_columns(model: type[BaseModel], columns: Sequence[str] | None) -> tuple[Column, ...]:
    """The model's columns named in ``columns`` (all when None), in that order."""
    if columns is None:
        return model_columns(model)
    if isinstance(columns, str):
        raise TypeError("columns must be a sequence of names, not a string")
    return tuple(column_of(model, name) for name in columns)


def with_role(model: type[BaseModel], role: Role) -> tuple[Column, ...]:
    """The model's top-level columns carrying a marker ``role``, in declaration order."""
    return tuple(c for c in model_columns(model) if c.role is role)


# ---------------------------------------------------------------------- storage keys
def check_storage_keys(model: type[BaseModel], *, version: bool = False) -> None:
    """Refuse, when the class is defined, storage keys that would corrupt data later.

    Each field's key (its alias) must pass :func:`key_problem`; only ``id`` is stored as
    ``_id`` (and ``id`` keeps its ObjectId type); two fields may not share a key; ``_v``
    is the library's on a model declared with ``version=``. Nested models' keys are
    checked too when their classes are already defined.
    """
    base_id = _base_id_annotation()
    seen: dict[str, str] = {}
    for name, info in model.model_fields.items():
        key = _key_of(name, info)
        where = f"{model.__name__}.{name}"
        if name == "id":
            if key != "_id" or (base_id is not None and info.annotation != base_id):
                raise ModelDeclarationError(
                    f"{where} is redeclared ({_describe_annotation(info.annotation)}, "
                    f"stored as {key!r}): every Persistable's id is the ObjectId stored as "
                    "'_id'. Hint: keep your own key in a field of its own and declare it "
                    "unique: @declare_persist_db(..., unique=['that_field'])."
                )
        elif key == "_id":
            raise ModelDeclarationError(
                f"{where} is stored as '_id', which is the id's key: a document would get "
                "two values for it. Hint: remove the alias, or keep the value in a field "
                "of its own and declare it unique."
            )
        elif version and key == "_v":
            raise ModelDeclarationError(
                f"{where} is stored as '_v', where version= writes the document version: "
                "its value would be overwritten. Hint: rename the field or its alias."
            )
        else:
            problem = key_problem(key)
            if problem is not None:
                raise ModelDeclarationError(
                    f"{where} is stored under the key {key!r}: {problem}. Hint: give it "
                    "another name or alias."
                )
        if key in seen:
            raise ModelDeclarationError(
                f"{model.__name__}.{seen[key]} and {where} are both stored as {key!r}. "
                "Hint: give one of them another alias."
            )
        seen[key] = name
        _check_nested_keys(info.annotation, where, (model,))


def _base_id_annotation() -> Any:
    from .model import Persistable

    info = Persistable.model_fields.get("id")
    return info.annotation if info is not None else None


def _check_nested_keys(annotation: Any, where: str, stack: tuple[type, ...]) -> None:
    for nested in _nested_models(annotation):
        if nested in stack:
            continue
        for name, info in nested.model_fields.items():
            key = _key_of(name, info)
            problem = key_problem(key)
            if problem is not None and not (key == "_id"):
                raise ModelDeclarationError(
                    f"{where} holds {nested.__name__}, whose field {name!r} is stored under "
                    f"the key {key!r}: {problem}. Hint: give it another name or alias."
                )
            _check_nested_keys(info.annotation, where, (*stack, nested))


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out.extend(_nested_models(arg))
    return out


# ---------------------------------------------------------------- annotation walking
def _model_columns(model: type[BaseModel], stack: tuple[type, ...]) -> tuple[Column, ...]:
    _ensure_complete(model)
    out = []
    for name, info in model.model_fields.items():
        key = _key_of(name, info)
        col = _column(name, key, info.annotation, list(info.metadata), stack)
        optional = _is_optional(info.annotation)
        has_default = not info.is_required()
        out.append(_replace(
            col,
            required=not has_default and not optional,
            optional=optional,
            has_default=has_default,
            default_is_none=has_default and info.default is None
            and info.default_factory is None,
        ))
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
    import pyarrow as pa

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
        return _replace(base, kind=kind, type=_arrow_of_kind()[kind], values=tuple(values))
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
            type=_arrow_of_kind()[kind],
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
        return _replace(base, kind=Kind.DATETIME, type=_arrow_of_kind()[Kind.DATETIME])
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
    import pyarrow as pa

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


def _describe_annotation(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None)
    return text if isinstance(text, str) else repr(annotation).replace("typing.", "")

