"""Objects: a command's stored documents as model objects, or a pipeline's as dicts.

Documents arrive as raw BSON batches (:func:`.cursor.raw_batches`), are decoded by the
driver's C decoder with the collection's codec, and become objects through
:func:`loom_frames.codec.hydrate` (the one rule of what fits; values that fit are not
validated again). A batch the codec cannot decode (a date beyond year 9999, a malformed
UUID) is decoded again permissively, to name the document and field at fault.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import bson
from bson.errors import InvalidBSON

from ..codec import hydrator
from ..plan import Command
from . import cursor
from .validity import RawBatch

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from ..model import Persistable

__all__ = ["documents", "load_objects"]


def load_objects(
    model: type[Persistable], collection: Collection[Any], command: Command
) -> list[Any]:
    """Whole stored documents as ``model`` objects (their documents as snapshots).

    >>> users = load_objects(User, User.collection(), User.filter().compile())  # doctest: +SKIP
    """
    build = hydrator(model)
    codec = collection.codec_options
    out: list[Any] = []
    with _gc_paused():
        for raw in cursor.raw_batches(collection, command, batch_size=cursor.WHOLE_RESULT_BATCH,
                                      what=f"loading {model.__name__} objects: "):
            try:
                docs = bson.decode_all(raw, codec_options=codec)
            except _UNDECODABLE:  # some value the codec cannot decode: one at a time
                docs = _one_by_one(RawBatch(raw), codec)
            out.extend(map(build, docs))
    return out


_UNDECODABLE = (InvalidBSON, ValueError, OverflowError)


def _one_by_one(batch: RawBatch, codec: Any) -> list[dict[str, Any]]:
    """A batch's documents decoded one by one: a document the codec cannot decode (a
    date beyond year 9999, a UUID of 3 bytes) is decoded permissively, its valid UUIDs
    as UUIDs, so the rule names the field at fault, or (the value is outside the
    model's fields) it loads."""
    out = []
    for row in range(len(batch.starts()) - 1):
        data = batch.bytes_of(row)
        try:
            out.append(bson.decode(data, codec_options=codec))
        except _UNDECODABLE:
            out.append(cursor.uuids(bson.decode(data, codec_options=cursor.PERMISSIVE)))
    return out


def documents(collection: Collection[Any], command: Command) -> Iterator[dict[str, Any]]:
    """The result documents as dicts (a raw pipeline's own shape).

    >>> next(documents(User.collection(), User.agg([{"$count": "n"}]).compile()))  # doctest: +SKIP
    {'n': 123456}
    """
    return cursor.documents(collection, command)


_gc_lock = threading.Lock()
_gc_pauses = 0  # loads in progress that paused the collector (over all threads)
_gc_resume = False  # whether the first of them found it enabled


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause CPython's cyclic garbage collector while a load builds its objects.

    A load keeps every object it builds (the model object, its ``__dict__``, the stored
    document as its snapshot): the collector's generations then fill up and it re-scans
    the growing heap again and again, which measured about as long as decoding and
    building themselves. Nothing a load builds is cyclic garbage, reference counting
    still frees everything else at once, and the collector resumes (if it was on) when
    the last concurrent load ends.
    """
    global _gc_pauses, _gc_resume
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_resume:
                gc.enable()
