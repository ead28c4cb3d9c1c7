"""The edge agent: runs on site hardware, polls devices through :mod:`devices` drivers and publishes their
readings over MQTT following the wire contract :mod:`wire.v1`.

Modules: ``config`` (the gateway YAML, checked once), ``plan`` (config -> built drivers), ``scheduler`` (one
task per device), ``readings`` (driver readings -> contract readings), ``outbox`` (readings waiting to be
sent), ``session`` (birth/will/death), ``publisher`` (MQTT), ``agent`` (composition), ``cli`` (``ioc edge``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ioc-backbone")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"
