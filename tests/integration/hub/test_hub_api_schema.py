"""Schemathesis against the hub's OpenAPI document: generated requests (valid and invalid) to every operation,
with an admin token, on a running hub with a registry, the real broker and InfluxDB: no answer is a server error
(5xx), and every answer fits the schema and media type the OpenAPI documents for its status (each route declares
its ``response_model``, tests/unit/hub/test_api_openapi.py). The event stream (``/api/v1/events``) is left out:
it never ends by design.

A generated command must not wait for an ack beyond the request timeout: the inventory's devices have no gateway
(a command for one is refused at once), and the one gateway the hub knows, site-a/gw-1, is offline (a command for
it, or for a device a generated move gave it, is refused at once too). A move goes only to a gateway the registry
knows, so the move route is fuzzed with the rest: its example body (site-a/gw-1) moves a device, generated targets
are refused with 422.

Environment quirk: ``grafana-client`` pulls in ``niquests`` and with it ``urllib3-future``, which replaces the
``urllib3`` package; schemathesis 4.32's requests transport counts pooled connections with ``pools.keys()``,
which urllib3-future's pool container lacks, so every request errors. Schemathesis runs here with that counter
(used only to decide whether to resend a request on a keep-alive connection the server dropped) stubbed out.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from ops_support import Gateway, ops_settings, running_hub, tokens, wait_until

from ioc.stack import StackEndpoints

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Devices without a gateway: a command for one is refused at once instead of waiting for an ack.
INVENTORY: dict[str, Any] = {
    "sites": [{"id": "site-a", "name": "Chợ Bến Thành", "ward": "quan-1"}],
    "devices": [{"id": "aq-01", "kind": "air_quality", "site": "site-a"}, {"id": "0", "kind": "camera"}],
}


SCHEMATHESIS_MAIN = """
import sys
import schemathesis.transport.requests as transport
transport._count_opened_connections = lambda session: 0
from schemathesis.cli import schemathesis
sys.argv[0] = "schemathesis"
sys.exit(schemathesis())
"""


@pytest.mark.timeout(600)
async def test_schemathesis_finds_no_server_error(stack: StackEndpoints, influx_db: str, tmp_path: Path) -> None:
    settings = ops_settings(stack, influx_db, tmp_path, inventory=INVENTORY)
    async with running_hub(settings) as hub:
        tok = await tokens(hub)
        # site-a/gw-1 announces itself, then its connection drops: known to the registry (a move's target) and
        # offline (commands for it are answered at once, without waiting for an ack).
        gw = Gateway(stack, "site-a", "gw-1")
        gw.birth([])
        health = hub.operations.health
        await wait_until(lambda: hub.operations.registry.knows_gateway("site-a", "gw-1"))
        gw.close()
        await wait_until(lambda: (health.gateway("site-a", "gw-1") or {}).get("state") == "offline")
        # Alerts 1 and 2 exist, so that the boundary values of {alert_id} reach the ack/resolve logic.
        for subject in ("aq-01", "0"):
            await hub.operations.alert_store.open(
                {"rule": "r", "subject": subject, "severity": "major", "message": "m", "ward": "quan-1"}
            )
        argv = [
            sys.executable,
            "-c",
            SCHEMATHESIS_MAIN,
            "run",
            f"{hub.api_url}/api/v1/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
            "--header",
            f"Authorization: Bearer {tok['admin']}",
            "--exclude-path",
            "/api/v1/events",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "40",
            "--seed",
            "20261128",
            "--request-timeout",
            "20",
            "--workers",
            "1",
        ]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
            cwd=tmp_path,
        )
        output, _ = await asyncio.wait_for(proc.communicate(), 540)
        text = output.decode(errors="replace")
        (tmp_path / "schemathesis.txt").write_text(text, encoding="utf-8")
        assert proc.returncode == 0, text[-6000:]
        tested = re.search(r"Tested: (\d+)", text)
        cases = re.search(r"(\d+) generated, .*?(\d+) passed", text)
        assert tested is not None, text[-3000:]
        assert int(tested.group(1)) >= 20, text[-3000:]  # every operation but the stream
        assert cases is not None, text[-3000:]
        assert int(cases.group(2)) >= 500, text[-3000:]
        # The move route was reached, not only refused: a device went to site-a/gw-1, and no generated target was
        # taken (each was refused with 422, else the move would be here).
        moves = [m for device in ("aq-01", "0") for m in await hub.operations.registry.moves(device)]
        assert moves, "no generated move reached the registry"
        assert {(m["to_site"], m["to_gateway"], m["source"]) for m in moves} == {("site-a", "gw-1", "api")}
