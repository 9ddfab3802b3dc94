"""Alias for the guide's ``from loom.info import ...`` spelling (re-exports only)."""

from loom_frames import (
    AggregationStages,
    IncrCounter,
    LedgerModel,
    Persistable,
    StrLower,
    StrUpper,
    TimeInserted,
    TimeSeriesLedgerModel,
    TimeUpdated,
    declare_persist_db,
    declare_timeseries,
)

__all__ = [
    "AggregationStages",
    "IncrCounter",
    "LedgerModel",
    "Persistable",
    "StrLower",
    "StrUpper",
    "TimeInserted",
    "TimeSeriesLedgerModel",
    "TimeUpdated",
    "declare_persist_db",
    "declare_timeseries",
]
