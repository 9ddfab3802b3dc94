"""Object loaders and frame loaders agree on loosely typed stored values: one rule.

The table below is the README's "Stored values: one rule for objects and frames": each
row stores one value under a field of the given type and loads it both ways. Either both
loaders refuse it (``DocumentValidationError``, naming the field) or both load it, as the
values given.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import math
import uuid
from decimal import Decimal
from typing import Any

import pytest
from bson import Binary, Decimal128, Int64, ObjectId
from pydantic import BaseModel, create_model

import loom_frames as lm
from loom_frames import ObjectIdField, Persistable, declare_persist_db


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    city: str


INVALID = "does not fit"
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
U = uuid.UUID(int=7)
OID = ObjectId("64f8a0000000000000000001")
NAN = float("nan")

# (field type, stored value, frame value, object value); INVALID: both refuse it
TABLE: list[tuple[Any, Any, Any, Any]] = [
    (int, 30, 30, 30),
    (int, Int64(2**62), 2**62, 2**62),
    (int, 30.0, 30, 30),  # mongosh writes numbers as doubles
    (int, True, 1, 1),
    (int, 2.5, INVALID, INVALID),
    (int, 1e30, INVALID, INVALID),
    (int, Decimal128("5"), INVALID, INVALID),
    (int, "5", INVALID, INVALID),
    (int, NAN, None, None),  # NaN outside float fields: absent
    (float, 3, 3.0, 3.0),
    (float, True, 1.0, 1.0),
    (float, NAN, NAN, NAN),
    (float, Decimal128("1.5"), INVALID, INVALID),
    (float, "1.5", INVALID, INVALID),
    (bool, True, True, True),
    (bool, "true", INVALID, INVALID),
    (bool, 1, INVALID, INVALID),
    (str, "x", "x", "x"),
    (str, 5, INVALID, INVALID),
    (dt.datetime, T0, T0, T0),
    (dt.datetime, "2024-01-01", INVALID, INVALID),  # no naive datetime parsed from text
    (dt.date, T0, dt.date(2024, 1, 1), dt.date(2024, 1, 1)),
    (dt.date, T0.replace(hour=5), INVALID, INVALID),
    (Decimal, Decimal128("1.5"), Decimal("1.5"), Decimal("1.5")),
    (Decimal, 1.5, INVALID, INVALID),
    (Decimal, "1.5", INVALID, INVALID),
    (Decimal, Decimal128("NaN"), INVALID, INVALID),
    (uuid.UUID, U, str(U), U),
    (uuid.UUID, str(U), INVALID, INVALID),
    (uuid.UUID, Binary(U.bytes, 3), INVALID, INVALID),
    (Color, "red", "red", Color.RED),
    (Color, "green", INVALID, INVALID),
    (ObjectIdField, OID, str(OID), OID),
    (ObjectIdField, str(OID), INVALID, INVALID),
    (list[int], [1, 2.0], [1, 2], [1, 2]),
    (list[int], "1", INVALID, INVALID),
    (list[int], [1, "2"], INVALID, INVALID),
    (Address, {"city": "x"}, {"city": "x"}, Address(city="x")),
    (Address, "x", INVALID, INVALID),
    (Address, {"city": 5}, INVALID, INVALID),
    (int, None, None, None),
]
_counter = itertools.count()


def _model(db_name: str, annotation: Any) -> Any:
    model = create_model(  # type: ignore[call-overload]
        f"Agree{next(_counter)}", __base__=Persistable, x=(annotation | None, None)
    )
    return declare_persist_db(db_name=db_name, collection_name=model.__name__)(model)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@pytest.mark.parametrize(("annotation", "stored", "frame", "obj"), TABLE,
                         ids=[f"{a}-{v!r}" for a, v, _, _ in TABLE])
def test_objects_and_frames_agree_on_stored_values(
    db_name: str, annotation: Any, stored: Any, frame: Any, obj: Any
) -> None:
    model = _model(db_name, annotation)
    doc_id = model.collection().insert_one({"x": stored}).inserted_id
    if frame is INVALID:
        for load in (model.filter().load_table, model.filter().load_one):
            with pytest.raises(lm.DocumentValidationError) as caught:
                load()
            assert f"_id={doc_id!r}" in str(caught.value) and "'x" in str(caught.value)
        nulled = model.filter().load_table(on_invalid="null").column("x").to_pylist()[0]
        assert nulled in (None, [1, None], {"city": None})  # the value that does not fit
        return
    assert obj is not INVALID
    cell = model.filter().load_table().column("x").to_pylist()[0]
    assert _same(cell, frame), (cell, frame)
    loaded = model.filter().load_one().x
    assert _same(loaded, obj), (loaded, obj)
