"""The one error hierarchy of the hub.

Library exceptions (httpx, pydantic, yaml, sockets) never cross the adapter that called the library:
it raises one of these ``from`` them. The pipeline decides what to do by type alone: :class:`StorageUnavailable`
is retried with backoff while the acknowledgements are held, :class:`StorageRejected` is narrowed down to the
message that caused it, which is dead-lettered; :class:`ConfigError` stops start-up with exit code 2.
"""

from __future__ import annotations


class HubError(Exception):
    """Base class of every error the hub raises on purpose."""


class ConfigError(HubError):
    """The hub's settings are wrong. The message names the file (or environment variable) and the field."""


class StartupError(HubError):
    """A component could not start (for example the API port is taken)."""


class StorageError(HubError):
    """A write to the time-series database failed."""


class StorageUnavailable(StorageError):
    """The database could not take the write now (connection refused, timeout, 5xx, missing database, auth).

    Worth retrying: nothing is wrong with the data itself, so the messages stay unacknowledged meanwhile.
    """


class StorageRejected(StorageError):
    """The database refused the data itself (HTTP 400: unparsable line, field type conflict; 413: too large).

    Retrying the same lines cannot succeed. ``reason`` is the database's own error text.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason
