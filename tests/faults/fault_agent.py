"""``ioc edge run CONFIG`` with the counting test driver ``counter`` (tests/integration/edge/edge_counter_agent.py),
for the fault suite: each process counts under a ``run`` of its own, its pid, so the readings of an agent that the
supervisor started again (same command, same environment) are told apart from those of the process before it.

Run as ``python tests/faults/fault_agent.py CONFIG``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Read by edge_counter_agent when it is imported: set first.
os.environ["IOC_TEST_RUN"] = str(os.getpid())
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "edge"))

import edge_counter_agent

if __name__ == "__main__":
    edge_counter_agent.register()
    from ioc.cli import main

    sys.exit(main(["edge", "run", *sys.argv[1:]]))
