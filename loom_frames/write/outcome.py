"""What became of each operation of a write: the one place write failures are classified.

Every write path (``persist_many``, ``insert_dataframe``, ``upsert_dataframe``) sends
unordered bulk writes through :func:`run_bulk` and gets, per operation, one of:

* done (``upserted`` tells an update that inserted from one that matched);
* **rejected**: the server (or the client, before sending) refused it, nothing applied;
* **unknown**: the command was sent and the connection broke before the reply (or the
  write concern failed): it may have been applied. pymongo has already retried once;
* **not attempted**: no server could be reached, nothing was sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bson.errors import InvalidDocument
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, PyMongoError

from ..connection import driver_error
from ..errors import WriteOutcomeUnknownError

__all__ = ["DUPLICATE_KEY", "BulkOutcome", "OpFailure", "Outcome", "run_bulk"]

Outcome = Literal["rejected", "unknown", "not_attempted"]

DUPLICATE_KEY = frozenset({11000, 11001})
"""MongoDB's duplicate-key error codes."""


@dataclass(frozen=True, slots=True)
class OpFailure:
    """Why one operation of a bulk write did not (certainly) happen.

    ``code`` is MongoDB's error code (11000: duplicate key), or the driver's exception
    name when the whole command failed; ``key_pattern`` the unique index a duplicate
    key hit (``{"_id": 1}`` for the id).
    """

    code: int | str
    message: str
    outcome: Outcome
    key_pattern: dict[str, Any] | None = None

    @property
    def duplicate_key(self) -> bool:
        """True for a duplicate-key rejection."""
        return self.outcome == "rejected" and self.code in DUPLICATE_KEY



@dataclass(slots=True)
class BulkOutcome:
    """Per operation: ``failures`` (index -> :class:`OpFailure`) and ``upserted`` (the
    indexes of updates that inserted a document); every other operation was applied."""

    size: int
    failures: dict[int, OpFailure] = field(default_factory=dict)
    upserted: set[int] = field(default_factory=set)
    error: Exception | None = None  # the library error of a command that failed whole

    @property
    def unknown(self) -> bool:
        """True when some operation's outcome is unknown."""
        return any(f.outcome == "unknown" for f in self.failures.values())

    @property
    def connection_lost(self) -> bool:
        """True when the whole command failed for the connection: lost after sending
        (outcome unknown) or no server reached (not sent)."""
        return isinstance(self.error, ConnectionError)


def run_bulk(coll: Collection[Any], ops: Sequence[Any], what: str) -> BulkOutcome:
    """Send ``ops`` as one unordered bulk write and classify each operation's outcome.

    ``what`` names the write in messages ("inserting rows of User"). Never raises for
    a failed write: the outcome says what happened to every operation.
    """
    outcome = BulkOutcome(len(ops))
    if not ops:
        return outcome
    try:
        result = coll.bulk_write(list(ops), ordered=False)
    except BulkWriteError as exc:
        details = exc.details or {}
        for error in details.get("writeErrors", []):
            outcome.failures[int(error["index"])] = OpFailure(
                error.get("code", "WriteError"),
                str(error.get("errmsg", "write error")),
                "rejected",
                error.get("keyPattern"),
            )
        outcome.upserted = {int(u["index"]) for u in details.get("upserted", [])}
        concern = details.get("writeConcernErrors") or []
        if concern:  # applied, but not as durably as asked: it may be rolled back
            message = (f"{what}: applied, but the write concern failed "
                       f"({concern[0].get('errmsg', concern[0])}); it may be rolled back")
            for i in range(len(ops)):
                outcome.failures.setdefault(
                    i, OpFailure(concern[0].get("code", "WriteConcernError"), message, "unknown")
                )
        return outcome
    except (InvalidDocument, OverflowError, UnicodeEncodeError) as exc:  # nothing was sent
        return _whole(outcome, type(exc).__name__, f"{what}: {exc}", "rejected", exc)
    except PyMongoError as exc:
        error = driver_error(exc, what, write=True)
        kind: Outcome = (
            "unknown" if isinstance(error, WriteOutcomeUnknownError)
            else "not_attempted" if isinstance(error, ConnectionError)  # no server reached
            else "rejected"
        )
        code = getattr(exc, "code", None) if kind == "rejected" else None
        return _whole(outcome, code if code is not None else type(exc).__name__, str(error),
                      kind, error)
    outcome.upserted = set(result.upserted_ids or {})
    return outcome


def _whole(outcome: BulkOutcome, code: int | str, message: str, kind: Outcome,
           error: Exception) -> BulkOutcome:
    outcome.error = error
    outcome.failures = {i: OpFailure(code, message, kind) for i in range(outcome.size)}
    return outcome
