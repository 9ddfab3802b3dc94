"""A model's collection: found, created (time series) and indexed once per process.

Every read and write asks :func:`collection_for`; the unique indexes a model declares
(``@declare_persist_db(unique=[...])``) are what make ``upsert_dataframe`` safe under
concurrency, and :func:`unique_index_for` tells whether a collection has one for a key.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pymongo.collection import Collection
from pymongo.errors import CollectionInvalid, OperationFailure

from .connection import CODEC_OPTIONS, driver_errors, get_client
from .errors import ModelDeclarationError

if TYPE_CHECKING:
    from .model import Persistable

__all__ = ["collection_for", "serves_with_index", "unique_index_for"]

_prepared: set[tuple[int, str, str]] = set()
_prepared_lock = threading.Lock()


def collection_for(model: type[Persistable]) -> Collection[Any]:
    """The model's collection, created (time series) and indexed once per process."""
    config = model.persist_config()
    client = get_client()
    coll = client[config.database].get_collection(
        config.collection_name, codec_options=CODEC_OPTIONS
    )
    key = (id(client), config.database, config.collection_name)
    if key not in _prepared:
        with _prepared_lock:
            if key not in _prepared:
                with driver_errors(f"preparing {config.database}.{config.collection_name}"):
                    _prepare(model, coll)
                _prepared.add(key)
    return coll


def _prepare(model: type[Persistable], coll: Collection[Any]) -> None:
    from .model import TimeSeriesLedgerModel

    config = model.persist_config()
    ts = config.timeseries
    if issubclass(model, TimeSeriesLedgerModel) and ts is None:
        raise ModelDeclarationError(
            f"{model.__name__} is a TimeSeriesLedgerModel without @declare_timeseries. "
            "Hint: add @declare_timeseries(metakey=...) above @declare_persist_db."
        )
    if ts is not None:
        found = coll.database.list_collections(filter={"name": coll.name})
        existing = next(iter(found), None)
        if existing is None:
            try:
                coll.database.create_collection(coll.name, **ts.create_options())
            except CollectionInvalid:  # created concurrently: check it below
                existing = next(iter(coll.database.list_collections(filter={"name": coll.name})))
        if existing is not None:
            options = existing.get("options", {})
            if "timeseries" not in options:
                raise ModelDeclarationError(
                    f"{model.__name__} is a time-series model, but "
                    f"{coll.database.name}.{coll.name} already exists as a plain collection. "
                    "Hint: drop or rename that collection, or store the model elsewhere."
                )
            if options["timeseries"].get("timeField") != ts.timekey:
                raise ModelDeclarationError(
                    f"{coll.database.name}.{coll.name} is a time-series collection with "
                    f"timeField {options['timeseries'].get('timeField')!r}, but "
                    f"{model.__name__} declares timekey {ts.timekey!r}."
                )
    if config.indexes:
        try:
            coll.create_indexes(list(config.indexes))
        except OperationFailure as exc:
            if exc.code not in (11000, 11001):
                raise
            raise ModelDeclarationError(
                f"{model.__name__} declares a unique index that {coll.database.name}."
                f"{coll.name} cannot have: documents already share a key "
                f"({(exc.details or {}).get('errmsg', exc)}). Hint: remove or merge the "
                "duplicates first (e.g. group_by on the key and count), then use the model."
            ) from exc


def unique_index_for(coll: Collection[Any], keys: Sequence[str]) -> tuple[str, ...] | None:
    """The fields (in index order) of a unique index that makes ``keys`` identify at most
    one document, or None when the collection has none.

    Any unique index on some of the keys does (``_id`` always is one); a partial index
    does not (it only covers the documents matching its filter).
    """
    if "_id" in keys:
        return ("_id",)
    wanted = set(keys)
    with driver_errors(f"listing the indexes of {coll.full_name}"):
        indexes = coll.index_information()
    found: list[tuple[str, ...]] = []
    for info in indexes.values():
        if not info.get("unique") or "partialFilterExpression" in info:
            continue
        fields = tuple(field for field, _ in info.get("key", []))
        if fields and set(fields) <= wanted:
            found.append(fields)
    return max(found, key=len) if found else None


def serves_with_index(coll: Collection[Any], query: dict[str, Any]) -> bool:
    """True when the server would answer ``query`` through an index, not a collection
    scan (asked with ``explain``, which plans the query without running it)."""
    with driver_errors(f"planning a lookup on {coll.full_name}"):
        reply = coll.database.command(
            "explain", {"find": coll.name, "filter": query}, verbosity="queryPlanner"
        )
    stages: list[str] = []
    _stages((reply.get("queryPlanner") or {}).get("winningPlan") or {}, stages)
    return bool(stages) and "COLLSCAN" not in stages


def _stages(plan: Any, out: list[str]) -> None:
    if isinstance(plan, dict):
        if isinstance(plan.get("stage"), str):
            out.append(plan["stage"])
        for value in plan.values():
            _stages(value, out)
    elif isinstance(plan, list):
        for item in plan:
            _stages(item, out)
