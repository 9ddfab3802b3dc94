"""loom-frames: Pydantic models in MongoDB, queried lazily, loaded as dataframes.

>>> import loom_frames as lm
>>> from loom_frames import Persistable, declare_persist_db
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from .connection import CODEC_OPTIONS, connect, disconnect, get_client
from .errors import (
    AuthenticationFailedError,
    ConnectionFailedError,
    DocumentValidationError,
    DuplicateKeyError,
    EmbeddedServerError,
    FieldNotFoundError,
    FrameValidationError,
    FrameWriteError,
    InvalidExpressionError,
    LoomError,
    ModelDeclarationError,
    NotPersistedError,
    PlanError,
    UnsupportedExpressionError,
    WriteFailedError,
    WriteOutcomeUnknownError,
    WriteRejectedError,
)
from .expr import Expr, col, fld, len, lit, when
from .fields import IncrCounter, ObjectIdField, StrLower, StrUpper, TimeInserted, TimeUpdated
from .model import (
    LedgerModel,
    Persistable,
    TimeSeriesLedgerModel,
    declare_persist_db,
    declare_timeseries,
)
from .stages import AggregationStages

if _TYPE_CHECKING:
    import polars as pl

__version__ = "0.1.0"


def scan_collection(
    db: str,
    collection: str,
    *,
    schema: _Any = None,
    infer_schema_length: int | None = 100,
    on_invalid: str = "raise",
) -> pl.LazyFrame:
    """A Polars LazyFrame over a collection with no model, typed by ``schema`` or by a
    schema inferred from its first ``infer_schema_length`` documents.

    See :func:`loom_frames.scan.scan_collection`.
    """
    from .scan import scan_collection as _scan

    return _scan(db, collection, schema=schema, infer_schema_length=infer_schema_length,
                 on_invalid=on_invalid)

__all__ = [
    "CODEC_OPTIONS",
    "AggregationStages",
    "AuthenticationFailedError",
    "ConnectionFailedError",
    "DocumentValidationError",
    "DuplicateKeyError",
    "EmbeddedServerError",
    "Expr",
    "FieldNotFoundError",
    "FrameValidationError",
    "FrameWriteError",
    "IncrCounter",
    "InvalidExpressionError",
    "LedgerModel",
    "LoomError",
    "ModelDeclarationError",
    "NotPersistedError",
    "ObjectIdField",
    "Persistable",
    "PlanError",
    "StrLower",
    "StrUpper",
    "TimeInserted",
    "TimeSeriesLedgerModel",
    "TimeUpdated",
    "UnsupportedExpressionError",
    "WriteFailedError",
    "WriteOutcomeUnknownError",
    "WriteRejectedError",
    "col",
    "connect",
    "declare_persist_db",
    "declare_timeseries",
    "disconnect",
    "fld",
    "get_client",
    "len",
    "lit",
    "scan_collection",
    "when",
]
