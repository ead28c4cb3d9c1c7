"""The one error hierarchy of the edge agent.

Library exceptions (aiomqtt, pydantic, yaml, sockets) never cross the adapter that called the library: it
raises one of these ``from`` them. :class:`ConfigError` stops start-up with exit code 2; :class:`UplinkError`
ends the current broker session, and the publisher reconnects with backoff. Device errors stay in
:mod:`devices.errors`; the scheduler handles them per device.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base class of every error the edge agent raises on purpose."""


class ConfigError(EdgeError):
    """The agent's config is wrong. The message names the file (or variable), the device and the field."""


class UplinkError(EdgeError):
    """The broker connection failed or was lost (connect refused, publish timed out, socket closed)."""


class ConnectionLost(UplinkError):
    """The broker connection is gone (socket closed, keepalive expired): nothing more can be sent on it."""
