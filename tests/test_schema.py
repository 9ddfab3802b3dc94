"""Model -> Arrow / Polars schema, projections and the field resolver (no server needed)."""

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any, Literal, Optional

import polars as pl
import pyarrow as pa
import pytest
from bson import ObjectId
from pydantic import BaseModel, Field, condecimal

from loom_frames import (
    FieldNotFoundError,
    IncrCounter,
    InvalidExpressionError,
    ModelDeclarationError,
    ObjectIdField,
    Persistable,
    StrLower,
    StrUpper,
    TimeInserted,
    TimeUpdated,
)
from loom_frames.expr import Kind, fld
from loom_frames.schema import (
    arrow_schema,
    columns_from_arrow,
    model_columns,
    model_projection,
    model_resolver,
    polars_schema,
)

UTC_MS = pa.timestamp("ms", tz="UTC")


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(BaseModel):
    city: StrLower
    zip_code: Optional[int] = Field(default=None, alias="zip")


class Item(BaseModel):
    sku: StrUpper
    qty: int = 1


class Everything(Persistable):
    s: str
    i: int
    f: float
    b: bool
    ts: dt.datetime
    d: dt.date
    dec: Decimal
    money: Decimal = Field(default=Decimal(0), max_digits=12, decimal_places=2)
    small: condecimal(max_digits=6, decimal_places=3) = Decimal(0)  # type: ignore[valid-type]
    u: uuid.UUID
    color: Color
    level: Level
    lit: Literal["a", "b"] = "a"
    ref: ObjectIdField
    blob: bytes = b""
    lower: StrLower
    upper: StrUpper
    inserted: TimeInserted
    updated: TimeUpdated
    counter: IncrCounter = 0
    maybe: Optional[int] = None
    tags: list[str] = []
    tag_set: set[StrLower] = set()
    matrix: list[list[float]] = []
    address: Address
    maybe_address: Optional[Address] = None
    items: list[Item] = []
    aliased: int = Field(default=0, alias="al")


EXPECTED_TYPES: dict[str, pa.DataType] = {
    "id": pa.string(),
    "created_at": UTC_MS,
    "updated_time": UTC_MS,
    "s": pa.string(),
    "i": pa.int64(),
    "f": pa.float64(),
    "b": pa.bool_(),
    "ts": UTC_MS,
    "d": pa.date32(),
    "dec": pa.decimal128(38, 18),
    "money": pa.decimal128(12, 2),
    "small": pa.decimal128(6, 3),
    "u": pa.string(),
    "color": pa.string(),
    "level": pa.int64(),
    "lit": pa.string(),
    "ref": pa.string(),
    "blob": pa.binary(),
    "lower": pa.string(),
    "upper": pa.string(),
    "inserted": UTC_MS,
    "updated": UTC_MS,
    "counter": pa.int64(),
    "maybe": pa.int64(),
    "tags": pa.list_(pa.string()),
    "tag_set": pa.list_(pa.string()),
    "matrix": pa.list_(pa.list_(pa.float64())),
    "address": pa.struct([("city", pa.string()), ("zip_code", pa.int64())]),
    "maybe_address": pa.struct([("city", pa.string()), ("zip_code", pa.int64())]),
    "items": pa.list_(pa.struct([("sku", pa.string()), ("qty", pa.int64())])),
    "aliased": pa.int64(),
}


def test_every_annotation_maps_to_its_arrow_type() -> None:
    schema = arrow_schema(Everything)
    assert schema.names == list(EXPECTED_TYPES)
    for name, expected in EXPECTED_TYPES.items():
        assert schema.field(name).type == expected, name
        assert schema.field(name).nullable, name  # any document may lack any field


def test_kinds_keys_and_required_flags_travel_in_field_metadata() -> None:
    schema = arrow_schema(Everything)
    meta = {f.name: f.metadata for f in schema}
    assert meta["id"][b"loom.kind"] == b"objectid" and meta["id"][b"loom.key"] == b"_id"
    assert meta["u"][b"loom.kind"] == b"uuid"
    assert meta["aliased"][b"loom.key"] == b"al"
    assert meta["color"][b"loom.values"] == b'["red", "blue"]'
    assert meta["s"][b"loom.required"] == b"true"
    assert b"loom.required" not in meta["maybe"]
    assert schema.metadata == {b"loom.model": b"Everything"}
    # the nested alias is the struct child's storage key
    zip_field = schema.field("address").type.field("zip_code")
    assert zip_field.metadata[b"loom.key"] == b"zip"


def test_columns_round_trip_through_the_arrow_schema() -> None:
    """What a loader reads back from the schema is what the model declared."""
    from_model = model_columns(Everything)
    from_arrow = columns_from_arrow(arrow_schema(Everything))
    for a, b in zip(from_model, from_arrow, strict=True):
        assert (a.name, a.key, a.kind, a.type, a.values) == (
            b.name,
            b.key,
            b.kind,
            b.type,
            b.values,
        )


def test_plain_arrow_schema_infers_kinds() -> None:
    cols = columns_from_arrow(
        pa.schema({"n": pa.int32(), "t": UTC_MS, "d": pa.date32(), "l": pa.list_(pa.string())})
    )
    assert [c.kind for c in cols] == [Kind.INT, Kind.DATETIME, Kind.DATE, Kind.LIST]
    assert [c.key for c in cols] == ["n", "t", "d", "l"]
    with pytest.raises(ModelDeclarationError, match="cannot load"):
        columns_from_arrow(pa.schema({"x": pa.duration("s")}))


def test_markers_enum_and_literal_kinds() -> None:
    kinds = {c.name: c.kind for c in model_columns(Everything)}
    assert kinds["lower"] is Kind.STR and kinds["inserted"] is Kind.DATETIME
    assert kinds["counter"] is Kind.INT and kinds["color"] is Kind.ENUM
    assert kinds["level"] is Kind.ENUM and kinds["lit"] is Kind.STR
    assert kinds["ref"] is Kind.OBJECTID and kinds["blob"] is Kind.ANY


def test_polars_schema_follows_the_arrow_schema() -> None:
    schema = polars_schema(Everything)
    assert schema["id"] == pl.String
    assert schema["ts"] == pl.Datetime("ms", "UTC")
    assert schema["d"] == pl.Date
    assert schema["money"] == pl.Decimal(12, 2)
    assert schema["items"] == pl.List(pl.Struct({"sku": pl.String, "qty": pl.Int64}))


def test_selecting_columns_by_name_or_key_keeps_their_order() -> None:
    assert arrow_schema(Everything, ["al", "id", "s"]).names == ["aliased", "id", "s"]
    with pytest.raises(FieldNotFoundError, match="did you mean 'tags'"):
        arrow_schema(Everything, ["tagz"])


class Loose(Persistable):
    name: str
    meta: dict[str, Any] = {}
    either: int | str = 0


class Tree(BaseModel):
    label: str
    children: list["Tree"] = []


class Forest(Persistable):
    tree: Tree


def test_free_form_fields_are_json_text_columns() -> None:
    schema = arrow_schema(Loose)
    assert schema.field("meta").type == pa.string() and schema.field("either").type == pa.string()
    assert schema.field("meta").metadata[b"loom.json"] == b"true"
    assert polars_schema(Loose)["meta"] == pl.String
    back = {c.name: c for c in columns_from_arrow(schema)}
    assert back["meta"].free_form and back["meta"].kind is Kind.ANY  # not a str column
    assert arrow_schema(Loose, ["id", "name"]).names == ["id", "name"]


def test_self_referencing_models_do_not_recurse_forever() -> None:
    assert arrow_schema(Forest).field("tree").type == pa.string()  # free-form: JSON text
    ref = model_resolver(Forest).resolve("tree.label")
    assert ref.kind is Kind.STR


def test_decimal_wider_than_arrow_is_a_declaration_error() -> None:
    class Huge(Persistable):
        x: Decimal = Field(default=Decimal(0), max_digits=40, decimal_places=2)

    with pytest.raises(ModelDeclarationError, match="at most 38 digits"):
        arrow_schema(Huge)


def test_model_projection_fetches_top_level_keys_by_storage_key() -> None:
    proj = model_projection(Everything, ["id", "address", "items", "aliased"])
    # sub-documents and arrays whole: a sub-path projection would drop a value of the
    # wrong shape (a string where a document belongs) that the loader must report
    assert proj == {"_id": 1, "address": 1, "items": 1, "al": 1}
    assert model_projection(Everything, ["s"]) == {"s": 1, "_id": 0}


# --------------------------------------------------------------------- resolver
@pytest.mark.parametrize(
    ("name", "path", "columns", "kind"),
    [
        ("id", "_id", ("id",), Kind.OBJECTID),
        ("_id", "_id", ("id",), Kind.OBJECTID),
        ("aliased", "al", ("aliased",), Kind.INT),
        ("al", "al", ("aliased",), Kind.INT),
        ("address.city", "address.city", ("address", "city"), Kind.STR),
        ("address.zip", "address.zip", ("address", "zip_code"), Kind.INT),
        ("address.zip_code", "address.zip", ("address", "zip_code"), Kind.INT),
        ("items", "items", ("items",), Kind.LIST),
        ("items.sku", "items.sku", ("items", "sku"), Kind.LIST),
        ("color", "color", ("color",), Kind.ENUM),
    ],
)
def test_resolve_names_aliases_and_nested_paths(
    name: str, path: str, columns: tuple[str, ...], kind: Kind
) -> None:
    ref = model_resolver(Everything).resolve(name)
    assert (ref.path, ref.columns, ref.kind) == (path, columns, kind)


def test_list_refs_carry_their_element() -> None:
    tags = model_resolver(Everything).resolve("tag_set")
    assert tags.item is not None and tags.item.kind is Kind.STR
    assert tags.item.normalize("ABC") == "abc"
    skus = model_resolver(Everything).resolve("items.sku")
    assert skus.item is not None and skus.item.kind is Kind.STR
    assert skus.item.normalize("abc") == "ABC"


def test_dict_fields_take_any_sub_key() -> None:
    ref = model_resolver(Loose).resolve("meta.source")
    assert (ref.path, ref.columns, ref.kind) == ("meta.source", ("meta", "source"), Kind.ANY)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("agee", "has no field 'agee'"),
        ("adress.city", "did you mean 'address'"),
        ("address.cty", r"address \(in Everything\) has no field 'cty'. Hint: did you mean 'city'"),
        ("s.x", "is a str field: it has no sub-field 'x'"),
        ("$where", "never start with '\\$'"),
        ("address.$ne", "never start with '\\$'"),
        ("", "non-empty"),
        ("a..b", "no empty parts"),
    ],
)
def test_unknown_names_fail_with_a_hint(name: str, message: str) -> None:
    with pytest.raises(FieldNotFoundError, match=message):
        model_resolver(Everything).resolve(name)


def test_resolver_is_cached_per_model_and_per_name() -> None:
    resolver = model_resolver(Everything)
    assert model_resolver(Everything) is resolver
    assert resolver.resolve("address.city") is resolver.resolve("address.city")
    assert resolver.model_name == "Everything"


OID = ObjectId("64f8a0000000000000000001")


@pytest.mark.parametrize(
    ("name", "given", "normalized"),
    [
        ("lower", "MiXeD", "mixed"),
        ("upper", "MiXeD", "MIXED"),
        ("s", OID, str(OID)),  # the seed: UserStats.filter(fld['user_id'] == user.id)
        ("id", str(OID), OID),
        ("ref", OID, OID),
        (
            "ts",
            dt.datetime(2024, 5, 1, 12, 0, 0, 123456),
            dt.datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=dt.UTC),
        ),
        ("ts", dt.date(2024, 5, 1), dt.datetime(2024, 5, 1, tzinfo=dt.UTC)),
        ("ts", "2024-05-01T12:00:00+02:00", dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)),
        ("d", dt.datetime(2024, 5, 1, tzinfo=dt.UTC), dt.date(2024, 5, 1)),
        ("d", "2024-05-01", dt.date(2024, 5, 1)),
        ("dec", "1.10", Decimal("1.10")),
        (
            "u",
            "12345678-1234-5678-1234-567812345678",
            uuid.UUID("12345678123456781234567812345678"),
        ),
        ("color", Color.RED, "red"),
        ("color", "blue", "blue"),
        ("level", Level.HIGH, 2),
        ("maybe", None, None),
    ],
)
def test_literals_are_normalised_as_the_field_stores_them(
    name: str, given: Any, normalized: Any
) -> None:
    result = model_resolver(Everything).resolve(name).normalize(given)
    assert result == normalized and type(result) is type(normalized)


@pytest.mark.parametrize(
    ("name", "given"),
    [("id", "not-an-object-id"), ("color", "green"), ("color", Level.LOW), ("dec", "abc")],
)
def test_impossible_literals_are_rejected(name: str, given: Any) -> None:
    with pytest.raises(ValueError):
        model_resolver(Everything).resolve(name).normalize(given)


def test_binder_uses_the_model_resolver() -> None:
    resolver = model_resolver(Everything)
    bound = (fld["s"] == OID).bind(resolver)
    assert bound.to_mongo() == {"s": {"$eq": str(OID)}}
    assert (fld["lower"] == "ALICE@X.COM").bind(resolver).to_mongo() == {
        "lower": {"$eq": "alice@x.com"}
    }
    assert (fld["id"] == str(OID)).bind(resolver).to_mongo() == {"_id": {"$eq": OID}}
    with pytest.raises(InvalidExpressionError, match="green"):
        (fld["color"] == "green").bind(resolver)
    with pytest.raises(FieldNotFoundError, match="did you mean 'tags'"):
        (fld["tagz"] == "x").bind(resolver)
