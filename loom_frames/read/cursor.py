"""Running a command: the ONE place on the read side where a command meets the driver.

Every read (frames, batches, objects, dicts, counts, samples) opens its cursor here, and
every driver error raised while it runs (also while iterating: a ``getMore`` can fail)
becomes the library's own through :func:`~loom_frames.connection.driver_errors`.

>>> from loom_frames.plan import Command
>>> reading(Command("app", "users", "find", None))
'reading app.users (find)'
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import bson
from bson import Binary
from bson.binary import UuidRepresentation
from bson.codec_options import DatetimeConversion

from ..connection import CODEC_OPTIONS, driver_errors, get_client

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from ..model import Persistable
    from ..placement import ServerCosts
    from ..plan import Command

__all__ = [
    "FEEDBACK_BATCH",
    "PERMISSIVE",
    "WHOLE_RESULT_BATCH",
    "count",
    "documents",
    "estimated_rows",
    "first_id",
    "open_collection",
    "raw_batches",
    "reading",
    "sample",
    "server_costs",
    "uuids",
]

WHOLE_RESULT_BATCH: int | None = None
"""Batch size of a read that keeps everything (``load_many``, ``load_table``): the
server's own (a first batch of 101 documents, then replies of up to 16 MiB), exactly as
pymongo and pymongoarrow ask. A first batch of 100,000 saved a round trip but cost
SecantusDB 10% more CPU for the same documents (``bench/bench_read.py``)."""

FEEDBACK_BATCH = 10_000
"""Batch size of such a read while a progress bar (or callback) is watching: a reply
per 10,000 documents, so the bar moves while a long load runs (one 16 MiB reply would
report once, at the end)."""


PERMISSIVE = CODEC_OPTIONS.with_options(
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
    uuid_representation=UuidRepresentation.UNSPECIFIED,
)
"""Decodes any stored value: dates out of Python's range as ``DatetimeMS``, subtype-4
binaries of any length as ``Binary`` (see :func:`uuids`)."""


def uuids(value: Any) -> Any:
    """A permissively decoded value with its subtype-4 binaries of 16 bytes as
    ``uuid.UUID`` (as the collections' codec reads them); anything else as it is.

    >>> uuids({"k": [Binary(bytes(16), 4), Binary(b"abc", 4)]})["k"][0]
    UUID('00000000-0000-0000-0000-000000000000')
    """
    import uuid

    if isinstance(value, Binary) and value.subtype == 4 and len(value) == 16:
        return uuid.UUID(bytes=bytes(value))
    if isinstance(value, dict):
        return {k: uuids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [uuids(v) for v in value]
    return value


def reading(command: Command, operation: str | None = None) -> str:
    """What a read is doing, for its errors: the command that actually runs."""
    return f"reading {command.namespace} ({operation or command.operation})"


def open_collection(
    database: str, collection: str, model: type[Persistable] | None = None
) -> Collection[Any]:
    """The collection a command reads: the model's own (created and indexed on first
    use), or any collection with the library's codec options.

    >>> open_collection("app", "users").name  # doctest: +SKIP
    'users'
    """
    with driver_errors(f"opening {database}.{collection}"):
        if model is not None:
            return model.collection()  # type: ignore[no-any-return]
        return get_client()[database].get_collection(collection, codec_options=CODEC_OPTIONS)


def raw_batches(
    collection: Collection[Any],
    command: Command,
    *,
    batch_size: int | None,
    what: str = "",
    options: Mapping[str, Any] | None = None,
) -> Iterator[bytes]:
    """The command's result as raw BSON batches (one bytes object per server reply),
    with its own projection: what pymongoarrow decodes, and what the validity check
    looks at again. ``options`` go to the driver (``hint``, ``collation``, ``comment``,
    ``max_time_ms``, ...). ``batch_size`` None: the server's own batches.

    >>> replies = raw_batches(User.collection(), User.filter().compile(), batch_size=None)  # doctest: +SKIP
    >>> len(next(replies))  # bytes of the first reply  # doctest: +SKIP
    14966
    """
    sized: dict[str, Any] = {} if batch_size is None else {"batch_size": batch_size}
    extra: dict[str, Any] = dict(options or {})
    with driver_errors(what + reading(command)):
        if command.operation == "find":
            cursor = collection.find_raw_batches(
                dict(command.filter or {}),
                projection=None if command.projection is None else dict(command.projection),
                sort=list(command.sort) or None,
                skip=command.skip,
                limit=command.limit,
                **sized,
                **extra,
            )
        else:
            if batch_size is not None:
                extra["batchSize"] = batch_size
            cursor = collection.aggregate_raw_batches(
                [dict(s) for s in command.stages()], **extra
            )
        with cursor:
            yield from cursor


def documents(
    collection: Collection[Any], command: Command, *, limit: int = 0
) -> Iterator[dict[str, Any]]:
    """The command's result as decoded documents (at most ``limit`` when given).

    >>> next(documents(User.collection(), User.filter().compile(), limit=1))  # doctest: +SKIP
    {'_id': ObjectId('...'), 'name': 'Ann', 'age': 30, ...}
    """
    with driver_errors(reading(command)):
        if command.operation == "find":
            cursor: Any = collection.find(
                dict(command.filter or {}),
                projection=None if command.projection is None else dict(command.projection),
                sort=list(command.sort) or None,
                skip=command.skip,
                limit=min(command.limit or limit, limit or command.limit),
            )
        else:
            stages = [dict(s) for s in command.stages()]
            if limit:
                stages.append({"$limit": limit})
            cursor = collection.aggregate(stages)
        with cursor:
            yield from cursor


def sample(collection: Collection[Any], command: Command, limit: int | None) -> list[Any]:
    """The command's first ``limit`` result documents (all of them for None), decoded
    permissively (any stored value decodes): what a schema is inferred from.

    >>> sample(User.collection(), User.filter().compile(), 2)  # doctest: +SKIP
    [{'_id': ObjectId('...'), ...}, {'_id': ObjectId('...'), ...}]
    """
    docs: list[Any] = []
    for raw in raw_batches(collection, command, batch_size=None, what="sampling: "):
        docs.extend(uuids(doc) for doc in bson.decode_all(raw, codec_options=PERMISSIVE))
        if limit is not None and len(docs) >= limit:
            return docs[:limit]
    return docs


def first_id(collection: Collection[Any], command: Command, key: str, value: Any) -> Any:
    """The ``_id`` of the first result document holding ``value`` under ``key`` (for an
    error's message when the result's projection left ``_id`` out), or None.

    >>> first_id(User.collection(), User.filter().select("age").compile(), "age", "old")  # doctest: +SKIP
    ObjectId('...')
    """
    stages = [dict(s) for s in command.stages(projected=False)]
    stages += [{"$match": {key: {"$eq": value}}}, {"$project": {"_id": 1}}, {"$limit": 1}]
    with driver_errors("naming a document that does not fit: " + reading(command)):
        found = next(iter(collection.aggregate(stages)), None)
    return None if found is None else found.get("_id")


def count(collection: Collection[Any], command: Command) -> int:
    """The number of result rows, counted by the server (:meth:`Command.counting`: the
    rows' stages, then ``$count``). No document is loaded.

    >>> count(User.collection(), User.filter(lm.fld["age"] > 25).compile())  # doctest: +SKIP
    42
    """
    with driver_errors("counting: " + reading(command, "aggregate")):
        found = next(iter(collection.aggregate(command.counting()["pipeline"])), None)
    return int(found["n"]) if found else 0


_COSTS: dict[int, Any] = {}  # id(client) -> ServerCosts (a server's kind does not change)


def server_costs(collection: Collection[Any]) -> ServerCosts:
    """The per-document costs of the server ``collection`` lives on: the embedded
    server's (SecantusDB names itself in ``buildInfo``) or a real mongod's. Asked once
    per client."""
    from ..placement import COSTS

    client = collection.database.client
    costs = _COSTS.get(id(client))
    if costs is None:
        with driver_errors(f"asking {collection.database.name} which server it is"):
            info = client.admin.command("buildInfo")
        costs = _COSTS[id(client)] = COSTS["secantusdb" if "secantusVersion" in info
                                           else "mongod"]
    return costs  # type: ignore[no-any-return]


def estimated_rows(collection: Collection[Any]) -> int:
    """The collection's document count from its metadata (no scan, no filter applied):
    the figure placement decisions use."""
    with driver_errors(f"estimating the size of {collection.full_name}"):
        return int(collection.estimated_document_count())
