"""The local stack: Debian's Mosquitto and InfluxDB 1.x run as child processes for the demo and the tests.

Public API: :func:`ensure_packages`, :class:`LocalStack` (yields :class:`StackEndpoints`), :func:`influx_query`,
:class:`StackError`. See ``runner.py`` for the lifecycle and ``mosquitto.py`` for the accounts and ACLs.
"""

from ioc.stack.errors import StackError
from ioc.stack.influxdb import create_database, drop_database, influx_query, influx_write
from ioc.stack.packages import ensure_packages
from ioc.stack.runner import DEFAULT_READY_TIMEOUT_S, LocalStack, StackEndpoints

__all__ = [
    "DEFAULT_READY_TIMEOUT_S",
    "LocalStack",
    "StackEndpoints",
    "StackError",
    "create_database",
    "drop_database",
    "ensure_packages",
    "influx_query",
    "influx_write",
]
