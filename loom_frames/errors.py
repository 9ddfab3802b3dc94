"""The library's errors: one base, each subclass also the matching builtin.

Every message says what was expected, what was received, and ends with a hint when
there is one. Driver errors are wrapped at the I/O boundary only, ``raise ... from exc``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "AuthenticationFailedError",
    "ConnectionFailedError",
    "DocumentValidationError",
    "DuplicateKeyError",
    "EmbeddedServerError",
    "FieldNotFoundError",
    "FrameValidationError",
    "FrameWriteError",
    "InvalidExpressionError",
    "LoomError",
    "ModelDeclarationError",
    "NotPersistedError",
    "PlanError",
    "UnsupportedExpressionError",
    "WriteFailedError",
    "WriteOutcomeUnknownError",
    "WriteRejectedError",
]


class LoomError(Exception):
    """Base class of every error raised by loom-frames."""


class ModelDeclarationError(LoomError, TypeError):
    """A model is declared or used in a way its declaration does not allow."""


class FieldNotFoundError(LoomError, KeyError):
    """A field name does not exist on the model (the message suggests close names)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class InvalidExpressionError(LoomError, TypeError):
    """An expression is malformed or does not fit the types of the fields it uses."""


class UnsupportedExpressionError(LoomError, NotImplementedError):
    """An expression node has no translation for a compile target."""


class PlanError(LoomError, ValueError):
    """A query plan cannot be built or run as asked."""


class DocumentValidationError(LoomError, ValueError):
    """A stored document does not fit the model it is loaded into."""


class NotPersistedError(LoomError, ValueError):
    """An operation needs a stored object, and this one was never persisted."""


class WriteFailedError(LoomError, RuntimeError):
    """A write did not certainly complete: the base of every write failure.

    Catch the subclasses to act on the outcome: :class:`WriteRejectedError` (and
    :class:`DuplicateKeyError`) mean nothing was applied; :class:`WriteOutcomeUnknownError`
    means the write may have been applied; :class:`FrameWriteError` lists each row.
    """


class WriteRejectedError(WriteFailedError):
    """MongoDB (or the client, before sending) rejected the write: nothing was applied.

    The object is left exactly as it was before the call. Retrying the same write fails
    the same way; fix what the message names first.
    """


class DuplicateKeyError(WriteRejectedError, ValueError):
    """A write collided with an existing document on a unique key (``_id`` or an index)."""


class WriteOutcomeUnknownError(WriteFailedError, ConnectionError):
    """The write was sent, and the connection was lost before its reply: it may have been
    applied or not (also after pymongo's own retry).

    Retrying is safe where the library can make it so: a new object keeps the id it was
    sent with, so ``persist()`` again stores it once; ``$set`` updates are idempotent; an
    object whose update carried counter increments refuses to persist again until it is
    reloaded (a blind retry could apply the increment twice).
    """


class FrameValidationError(LoomError, ValueError):
    """A dataframe does not fit the model it is written to (nothing was written).

    The message names every missing or unknown column, or the column and the first row
    whose value cannot be stored as the model's type.
    """


class FrameWriteError(WriteFailedError):
    """Some rows of a frame were not written; ``.result`` lists them and counts the rest.

    Raised by ``insert_dataframe`` / ``upsert_dataframe`` after every batch was tried
    (a failed row never stops the others).
    """

    def __init__(self, message: str, result: object) -> None:
        super().__init__(message)
        self.result = result


class ConnectionFailedError(LoomError, ConnectionError):
    """MongoDB could not be reached (the message names the host, never the password)."""


class EmbeddedServerError(LoomError, RuntimeError):
    """The embedded server could not be started."""


class AuthenticationFailedError(ConnectionFailedError):
    """MongoDB refused the credentials: the message names the user and the database they
    are checked against (never the password). Retrying does not help; nothing was read or
    written."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return a ``" Hint: did you mean ...?"`` suffix, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Hint: did you mean " + " or ".join(repr(c) for c in close) + "?"
