"""Composition root of the IOC backbone: the ``ioc`` command, the demo and the local stack runner.

This is the only package allowed to import every other one.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ioc-backbone")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"
