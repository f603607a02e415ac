"""The project's error tree.

Every error a user can see names what is wrong. HTTP-facing errors carry the
status they map to; worker-facing errors say whether retrying can help.
"""

from __future__ import annotations


class TraitstreamError(Exception):
    """Base of every error raised on purpose by traitstream."""


class RequestError(TraitstreamError):
    """A request the edge refuses; ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRequest(RequestError):
    """Malformed body or a field of the wrong shape (400)."""

    status = 400


class LimitExceeded(RequestError):
    """A size, count or depth limit was passed (413)."""

    status = 413


class Unauthorized(RequestError):
    """Missing, unknown or revoked credentials (401)."""

    status = 401


class Forbidden(RequestError):
    """Valid credentials without the needed scope (403)."""

    status = 403


class NotFound(RequestError):
    """The named resource does not exist (404)."""

    status = 404


class InternalError(RequestError):
    """A fault of ours (500); the request was not accepted."""

    status = 500


class Unavailable(RequestError):
    """A dependency (the broker, the database) cannot take the request now (503)."""

    status = 503


class InvalidRecord(TraitstreamError):
    """A Kafka record that cannot be decoded or validated; it is dead-lettered, never retried.

    ``reason`` is a short stable code (for metrics and the DLQ header); the message
    explains it for a person.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class StoreRejected(TraitstreamError):
    """The profile store refused a batch for its data (not a fault retrying can fix):
    the worker finds the refused records and dead-letters them."""


class TransientError(TraitstreamError):
    """A dependency failed in a way that retrying later can fix (never dead-lettered).

    ``source`` names the dependency: postgres, redis, kafka or schema_registry."""

    def __init__(self, message: str, *, source: str) -> None:
        super().__init__(message)
        self.source = source
