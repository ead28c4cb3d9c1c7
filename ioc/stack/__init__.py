"""The local stack: Debian's Mosquitto and InfluxDB 1.x run as child processes for the demo and the tests.

Public API: :func:`ensure_packages`, :class:`LocalStack` (yields :class:`StackEndpoints`), :func:`influx_query`,
:class:`StackError`; optionally PostgreSQL, :class:`PostgresServer` (yields :class:`PostgresEndpoints`) and
:func:`postgres_available`. See ``runner.py`` for the lifecycle, ``mosquitto.py`` for the accounts and ACLs
and ``postgres.py`` for running PostgreSQL unprivileged.
"""

from ioc.stack.errors import StackError
from ioc.stack.influxdb import create_database, drop_database, influx_query, influx_write
from ioc.stack.packages import ensure_packages
from ioc.stack.postgres import PostgresEndpoints, PostgresServer, postgres_available
from ioc.stack.runner import DEFAULT_READY_TIMEOUT_S, LocalStack, StackEndpoints

__all__ = [
    "DEFAULT_READY_TIMEOUT_S",
    "LocalStack",
    "PostgresEndpoints",
    "PostgresServer",
    "StackEndpoints",
    "StackError",
    "create_database",
    "drop_database",
    "ensure_packages",
    "influx_query",
    "influx_write",
    "postgres_available",
]
