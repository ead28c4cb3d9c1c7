"""``ioc edge run CONFIG`` with a test driver ``counter`` registered: the agent process of the no-loss tests.

Each poll of a ``counter`` device returns one reading ``{"seq": n, "run": RUN}``: ``n`` counts the device's
polls from 0 in this process, ``RUN`` tells the processes apart (from ``IOC_TEST_RUN``). So what reaches
InfluxDB can be checked for gaps (a lost reading), changed values, and order. The device's profile only gives
its kind. Run as ``python tests/integration/edge/edge_counter_agent.py CONFIG`` from the repository root.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from devices.driver import REGISTRY, DriverConfig, DriverSpec, Reading, now_ms

RUN = int(os.environ.get("IOC_TEST_RUN", "0"))


class CounterConfig(DriverConfig):
    pass


class Counter:
    def __init__(self, config: CounterConfig, profile: Any) -> None:
        self.n = 0

    async def open(self) -> None:
        pass

    async def poll(self) -> list[Reading]:
        reading = Reading(now_ms(), {"seq": self.n, "run": RUN})
        self.n += 1
        return [reading]

    async def close(self) -> None:
        pass

    def describe_plan(self) -> list[str]:
        return ["count polls"]


def register() -> None:
    if "counter" not in REGISTRY.names():
        REGISTRY.register(DriverSpec("counter", CounterConfig, Counter, description="test: counts its polls"))


if __name__ == "__main__":
    register()
    from ioc.cli import main

    sys.exit(main(["edge", "run", *sys.argv[1:]]))
