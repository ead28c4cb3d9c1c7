"""The one error hierarchy of the device layer.

Library exceptions (pymodbus, pysnmp, sockets...) never cross a driver: it raises one of these ``from`` them.
The edge scheduler decides what to do by type alone: :class:`DeviceBusy` is retried at once (bounded),
:class:`DeviceUnavailable` waits for the next poll with backoff, :class:`DeviceConfigError` stops start-up.
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base class of every error raised by a driver."""


class DeviceConfigError(DeviceError):
    """A profile or an instance config is wrong. Raised at load time, never while polling."""


class DeviceUnavailable(DeviceError):
    """The device cannot be reached: connection refused, timeout, no route. Retry on a later poll."""


class DeviceBusy(DeviceError):
    """The device answered that it is busy (for example Modbus exception 6). Worth an immediate retry."""


class DeviceResponseError(DeviceError):
    """The device answered, but the answer is wrong (exception code, short frame, undecodable value)."""


class UnsupportedCommand(DeviceError):
    """The driver does not support the command it was asked to run."""
