"""The ``lm.fld`` expression language and its compilers (MongoDB and Polars).

>>> from loom_frames.expr import fld
>>> e = (fld["age"] > 25) & (fld["is_active"] == True)  # noqa: E712
>>> e
(fld['age'] > 25) & (fld['is_active'] == True)
>>> e.to_mongo()
{'age': {'$gt': 25}, 'is_active': {'$eq': True}}
"""

from .api import (
    DtNamespace,
    Expr,
    ListNamespace,
    StrNamespace,
    StructNamespace,
    col,
    fld,
    len,
    lit,
    when,
)
from .bind import FieldRef, Kind, Resolver, SimpleResolver, normalize_datetime
from .mongo import MongoAccumulator

__all__ = [
    "DtNamespace",
    "Expr",
    "FieldRef",
    "Kind",
    "ListNamespace",
    "MongoAccumulator",
    "Resolver",
    "SimpleResolver",
    "StrNamespace",
    "StructNamespace",
    "col",
    "fld",
    "len",
    "lit",
    "normalize_datetime",
    "when",
]
