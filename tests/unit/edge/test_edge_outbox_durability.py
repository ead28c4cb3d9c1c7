"""A put that returned survives ``kill -9``: a child process puts readings and reports each put done; it is
killed mid-stream; every reading it reported is in the file when it is opened again, in order, unchanged."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from edge.outbox import Lane
from edge.outbox_sqlite import SqliteOutbox
from edge.stats import EdgeStats
from wire.v1 import Reading

REPO = Path(__file__).parents[3]
TS = 1_764_331_200_000

CHILD = """
import asyncio, sys
from edge.outbox_sqlite import SqliteOutbox
from edge.stats import EdgeStats
from wire.v1 import Reading

async def main(path):
    async with SqliteOutbox(path, max_bytes=1 << 30, max_readings=10**7, stats=EdgeStats()) as box:
        n = 0
        while True:
            await asyncio.gather(*(
                box.put([Reading(device=f"d-{k}", kind="k", ts=__TS__ + n + k, metrics={"n": n + k})])
                for k in range(10)
            ))
            n += 10
            sys.stdout.write(f"{n}\\n")
            sys.stdout.flush()

asyncio.run(main(sys.argv[1]))
""".replace("__TS__", str(TS))


def test_every_put_that_returned_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    confirmed = 0
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        assert child.stdout is not None
        try:
            for line in child.stdout:
                confirmed = int(line)
                if confirmed >= 3000:
                    break
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
    assert confirmed >= 3000

    async def reopen() -> list[Reading]:
        async with SqliteOutbox(path, max_bytes=1 << 30, max_readings=10**7, stats=EdgeStats()) as box:
            assert box.lane_len(Lane.BACKLOG) == len(box)
            return [q.reading for q in await box.peek(10**6, Lane.BACKLOG)]

    readings = asyncio.run(reopen())
    assert len(readings) >= confirmed
    values = sorted(int(r.metrics["n"]) for r in readings)
    assert values == list(range(len(readings)))  # nothing missing before the last confirmed put
    for r in readings:
        assert r.ts == TS + int(r.metrics["n"])  # unchanged
