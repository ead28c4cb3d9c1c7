"""Snapshots from the real agent to the hub's folder and API, end to end with the real parts: the RTSP simulator
(Debian's VLC), the camera's ONVIF service simulated, the real edge agent (its camera driver with real ffmpeg, its
publisher), the real Mosquitto under the gateway's own account, and the hub (admission, the snapshot intake, the
store, the API). The hub keeps the agent's first (``periodic``) snapshot and, once the picture goes black, the
``problem`` one naming ``image_black``, each a whole JPEG served back byte for byte."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from ops_support import auth, ops_settings, running_agent, running_hub, tokens, wait_until

from devices.sim.camera_pictures import Picture
from devices.sim.onvif import OnvifSimulator
from devices.sim.rtsp import RtspSimulator
from edge.config import EdgeConfig
from hub.config import SnapshotSettings
from hub.snapshots.jpeg import jpeg_info
from ioc.stack import StackEndpoints

# The camera tests' support module (the camera agent's configuration), imported top-level as they import it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "devices"))

from camera_support import camera_agent_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHECK_INTERVAL_S = 10.0
#: A problem is raised after two bad checks (docs/cameras.md); the rest is room for a loaded machine.
WITHIN_S = 2 * CHECK_INTERVAL_S + 40.0


def agent_config(stack: StackEndpoints, sim: RtspSimulator, onvif: OnvifSimulator) -> EdgeConfig:
    return camera_agent_config(stack, sim, onvif, interval_s=1.0, check_interval_s=CHECK_INTERVAL_S)


@pytest.mark.timeout(300)
async def test_the_agents_snapshots_are_kept_and_served_by_the_hub(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    folder = tmp_path / "snapshots"
    settings = ops_settings(stack, influx_db, tmp_path).model_copy(update={"snapshots": SnapshotSettings(dir=folder)})
    async with (
        RtspSimulator(["cam-1"]) as sim,
        OnvifSimulator(password="pw") as onvif,
        running_hub(settings) as hub,
        httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http,
    ):
        admin = auth((await tokens(hub))["admin"])
        store = hub.pipeline.snapshots.store  # type: ignore[union-attr]
        async with running_agent(agent_config(stack, sim, onvif)):
            periodic = await wait_until(lambda: store.latest("cam-1"), 90)
            assert (periodic.trigger, periodic.problems, periodic.width, periodic.height) == ("periodic", (), 320, 240)
            await sim.set_picture("cam-1", Picture.BLACK)
            problem = await wait_until(
                lambda: (s := store.latest("cam-1")) is not None and s.trigger == "problem" and s, WITHIN_S
            )
            assert problem.problems == ("image_black",)
            assert problem.ts > periodic.ts
            # The wall's view while the agent runs: degraded, with the problem snapshot as its latest.
            await wait_until(lambda: hub.operations.health.device_state("cam-1").value == "degraded", 30)
            [camera] = (await http.get("/api/v1/cameras", headers=admin)).json()["items"]
            assert (camera["id"], camera["state"]) == ("cam-1", "degraded")
            assert camera["reason"].startswith("device_degraded: image_black: ")
            assert camera["snapshot"]["ts_ms"] == problem.ts
            assert camera["changed_ms"] is not None

        page = (await http.get("/api/v1/devices/cam-1/snapshots", headers=admin)).json()
        assert [(i["trigger"], i["problems"]) for i in page["items"]] == [
            ("problem", ["image_black"]),
            ("periodic", []),
        ]
        for item in page["items"]:
            answer = await http.get(item["url"], headers=admin)
            assert answer.headers["content-type"] == "image/jpeg"
            [on_disk] = [p for p in (folder / "cam-1").iterdir() if p.name.startswith(f"{item['ts_ms']}-")]
            assert answer.content == on_disk.read_bytes()
            assert (jpeg_info(answer.content).width, jpeg_info(answer.content).height) == (320, 240)
        # The black picture is black in the snapshot too: a flat JPEG is a fraction of the test pattern's bytes.
        assert problem.size < periodic.size / 4
        _, letters = hub.dead_letters(100)
        assert [d for d in letters if d.topic.endswith("/snapshot")] == []
