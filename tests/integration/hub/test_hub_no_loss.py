"""The hub's no-loss promises under load, against the real Mosquitto and InfluxDB (a stack of this module's own,
since one test stops InfluxDB; named ``own_stack``, not ``stack``, so the session fixture is left alone).

The hub runs as ``ioc hub`` child processes (:class:`benchmarks.hubproc.HubProcess`), the load as simulated
gateways in another process (:mod:`benchmarks.loadgen`): every reading has its own (device, time), so
``SELECT count("value")`` must equal the readings the broker acknowledged to the gateways. The generator's
gateways publish their births (retained) when they connect, and the hubs accept its kind ``bench_load``
(``admission.kinds``).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.hubproc import HubProcess, admission_env
from benchmarks.loadgen import LOAD_MEASUREMENT, GatewayAccount, LoadConfig, LoadProcess, LoadResult
from hub.auth import create_token
from ioc.stack import LocalStack, StackEndpoints, StackError, create_database, ensure_packages, influx_query

pytestmark = [pytest.mark.integration, pytest.mark.slow]
log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[3]
SITE = "load"
GATEWAYS = [(SITE, f"gw-{i}") for i in range(2)]


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    ensure_packages()
    own = LocalStack(tmp_path_factory.mktemp("noloss") / "stack", gateways=GATEWAYS)
    own.start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
def db(own_stack: LocalStack) -> str:
    ep = endpoints(own_stack)
    name = f"noloss_{secrets.token_hex(4)}"
    create_database(ep.influx_url, name)
    return name


def endpoints(stack: LocalStack) -> StackEndpoints:
    assert stack.endpoints is not None
    return stack.endpoints


def load_config(ep: StackEndpoints, *, rate: float, duration_s: float, bad_every: int = 0) -> LoadConfig:
    accounts = []
    for site, gateway in GATEWAYS:
        user, password = ep.credentials(f"{site}.{gateway}")
        accounts.append(GatewayAccount(site, gateway, user, password))
    return LoadConfig(
        host=ep.mqtt_host,
        port=ep.mqtt_port,
        gateways=accounts,
        rate=rate,
        readings_per_message=10,
        duration_s=duration_s,
        devices=50,
        bad_every=bad_every,
    )


def hub_env(tmp_path: Path, name: str, **extra: str) -> dict[str, str]:
    return {
        "IOC_HUB_SPILL__DIR": str(tmp_path / name / "spill"),
        "IOC_HUB_DEAD_LETTERS__PATH": str(tmp_path / name / "dead-letters.sqlite"),
        "IOC_HUB_DEAD_LETTERS__KEEP": "20000",
        "IOC_HUB_METRICS__INTERVAL_S": "0",
        "IOC_HUB_INFLUX__TIMEOUT_S": "3",
        "IOC_HUB_INFLUX__RETRY_MAX_S": "2",
        "IOC_HUB_AQI__ENABLED": "false",
        **admission_env(LOAD_MEASUREMENT),
        **extra,
    }


def count(ep: StackEndpoints, db: str) -> int:
    rows = influx_query(ep.influx_url, db, f'SELECT count("value") FROM "{LOAD_MEASUREMENT}"', timeout=30)
    return int(rows[0]["count"]) if rows else 0


def wait_for(check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(poll_s)


def wait_counted(ep: StackEndpoints, db: str, expected: int, timeout_s: float) -> None:
    seen = -1

    def done() -> bool:
        nonlocal seen
        try:
            seen = count(ep, db)
        except StackError:
            return False
        assert seen <= expected, f"more points than sent: {seen} > {expected}"
        return seen == expected

    wait_for(done, timeout_s, f"InfluxDB counts {expected} readings (last seen {seen})")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def log_path(tmp_path: Path, name: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return tmp_path / f"{name}.log"


@pytest.mark.timeout(240)
def test_hub_killed_with_sigkill_under_load_loses_nothing_after_restart(
    own_stack: LocalStack, db: str, tmp_path: Path
) -> None:
    ep = endpoints(own_stack)
    client_id = f"noloss-kill-{secrets.token_hex(3)}"
    # The registry outlives the hub, as a deployed hub's does: after the restart the broker resends the session's
    # messages before the retained births (those come with the new subscription), and admission takes the
    # gateways' devices from the registry until a birth arrives.
    env = hub_env(tmp_path, "hub", IOC_HUB_REGISTRY__URL=f"sqlite:///{tmp_path / 'registry.db'}")
    config = load_config(ep, rate=400, duration_s=12)
    with LoadProcess(config, log_path(tmp_path, "load"), cwd=ROOT) as load:
        first = HubProcess(ep, db, client_id, log_path(tmp_path, "hub"), cwd=ROOT, extra_env=env)
        with first:
            load.go()
            wait_for(lambda: first.stats()["acks"] > 500, 30, "the first hub acknowledged some messages", 0.1)
            received_before_kill = first.stats()["messages_received"]
            first.kill()  # SIGKILL mid-load: no drain, no acks for what it held; leaving the block is then a no-op
        assert first.returncode == -9
        time.sleep(2)  # the broker keeps the session's messages meanwhile
        with HubProcess(ep, db, client_id, log_path(tmp_path, "hub"), cwd=ROOT, extra_env=env, log_append=True) as hub:
            result = load.wait_done(120)
            assert result.acked == result.published
            wait_counted(ep, db, result.readings, 90)
            after = hub.stats()
        assert hub.returncode == 0
    assert received_before_kill > 0
    assert after["messages_received"] > 0
    assert after["dead_letters_total"] == 0


@pytest.mark.timeout(420)
def test_influxdb_down_two_minutes_under_load_spills_within_memory_and_drains_without_loss(
    own_stack: LocalStack, db: str, tmp_path: Path
) -> None:
    ep = endpoints(own_stack)
    env = hub_env(tmp_path, "hub", IOC_HUB_SPILL__MAX_BYTES=str(512 * 1024**2))
    outage_s = 120
    config = load_config(ep, rate=250, duration_s=outage_s + 20)
    with (
        HubProcess(
            ep, db, f"noloss-influx-{secrets.token_hex(3)}", log_path(tmp_path, "hub"), cwd=ROOT, extra_env=env
        ) as hub,
        LoadProcess(config, log_path(tmp_path, "load"), cwd=ROOT) as load,
    ):
        load.go()
        time.sleep(8)
        own_stack.stop_service("influxd")
        rss: list[int] = []
        outage_end = time.monotonic() + outage_s
        try:
            while time.monotonic() < outage_end:
                rss.append(rss_kib(hub.pid))
                time.sleep(2)
            during = hub.stats()
        finally:
            own_stack.start_service("influxd")
        result: LoadResult = load.wait_done(120)
        assert result.acked == result.published
        wait_counted(ep, db, result.readings, 150)
        wait_for(lambda: hub.stats()["spill_batches"] == 0, 30, "the spill is written back")
        final = hub.stats()
    assert hub.returncode == 0
    log.info(
        "outage: %d lines spilled, %d written back; hub RSS %d-%d KiB over the outage; %d readings sent, all counted",
        during["lines_spilled"],
        final["lines_written_back"],
        min(rss),
        max(rss),
        result.readings,
    )
    # Intake went on during the outage: batches were spilled and acknowledged, not held.
    assert during["lines_spilled"] > 100_000, during
    assert during["pending_messages"] < 5000, during
    assert final["lines_written_back"] >= during["lines_spilled"]
    assert final["spill_bytes"] == 0
    # Memory stayed bounded: no growth with the spilled volume over the outage (30 s in vs. the end).
    settled = rss[len(rss) // 4 :]
    assert max(settled) - min(settled) < 40 * 1024, f"RSS KiB over the outage: {rss}"
    assert max(rss) < 400 * 1024, f"RSS KiB over the outage: {rss}"


@pytest.mark.timeout(240)
def test_ten_thousand_malformed_messages_are_quarantined_and_every_valid_reading_stored(
    own_stack: LocalStack, db: str, tmp_path: Path
) -> None:
    ep = endpoints(own_stack)
    registry = f"sqlite:///{tmp_path / 'registry.db'}"
    env = hub_env(tmp_path, "hub", IOC_HUB_REGISTRY__URL=registry)
    headers = {"Authorization": f"Bearer {create_token(registry, 'technician')}"}  # dead letters need one
    config = load_config(ep, rate=1000, duration_s=20.5, bad_every=2)
    with (
        HubProcess(
            ep, db, f"noloss-bad-{secrets.token_hex(3)}", log_path(tmp_path, "hub"), cwd=ROOT, extra_env=env
        ) as hub,
        LoadProcess(config, log_path(tmp_path, "load"), cwd=ROOT) as load,
    ):
        load.go()
        result = load.wait_done(120)
        assert result.bad_sent >= 10_000
        wait_counted(ep, db, result.readings, 90)
        wait_for(lambda: hub.stats()["dead_letters_total"] == result.bad_sent, 30, "every bad message quarantined")
        stats = hub.stats()
        letters = httpx.get(
            f"{hub.url}/api/v1/dead-letters", params={"limit": 10_000}, headers=headers, timeout=10
        ).json()
    assert set(stats["dead_letters"]) == {"malformed", "contract"}
    assert stats["dead_letters"]["malformed"] == pytest.approx(result.bad_sent / 3, abs=1)
    assert letters["total"] == result.bad_sent
    assert len(letters["items"]) == 10_000
    for item in letters["items"]:
        assert item["topic"].startswith(f"ioc/v1/{SITE}/gw-")
        assert item["error"]
        assert item["received_ms"] > 0
    # The quarantine survives a restart of the hub (it is saved before the messages are acknowledged).
    with HubProcess(
        ep, db, f"noloss-bad2-{secrets.token_hex(3)}", log_path(tmp_path, "hub2"), cwd=ROOT, extra_env=env
    ) as again:
        kept = httpx.get(f"{again.url}/api/v1/dead-letters", params={"limit": 5}, headers=headers, timeout=10).json()[
            "items"
        ]
    assert [k["error"] for k in kept] == [i["error"] for i in letters["items"][:5]]


@pytest.mark.timeout(240)
def test_two_hubs_on_one_shared_subscription_each_store_part_and_together_all(
    own_stack: LocalStack, db: str, tmp_path: Path
) -> None:
    ep = endpoints(own_stack)
    group = f"hubs{secrets.token_hex(2)}"
    config = load_config(ep, rate=600, duration_s=10)
    hubs: list[dict[str, Any]] = []
    # The generator first: its births are retained when the hubs subscribe, so each hub has every gateway's (a
    # birth published later reaches only one hub of the group).
    with (
        LoadProcess(config, log_path(tmp_path, "load"), cwd=ROOT) as load,
        HubProcess(
            ep,
            db,
            f"noloss-a-{secrets.token_hex(3)}",
            log_path(tmp_path, "hub-a"),
            cwd=ROOT,
            extra_env=hub_env(tmp_path, "a", IOC_HUB_MQTT__SHARED_GROUP=group, IOC_HUB_MQTT__OBSERVE="all"),
        ) as hub_a,
        HubProcess(
            ep,
            db,
            f"noloss-b-{secrets.token_hex(3)}",
            log_path(tmp_path, "hub-b"),
            cwd=ROOT,
            extra_env=hub_env(tmp_path, "b", IOC_HUB_MQTT__SHARED_GROUP=group, IOC_HUB_MQTT__OBSERVE="none"),
        ) as hub_b,
    ):
        load.go()
        result = load.wait_done(120)
        wait_counted(ep, db, result.readings, 90)
        hubs = [hub_a.stats(), hub_b.stats()]
    data = [h["messages_by_channel"].get("data", 0) for h in hubs]
    lines = [h["lines_written"] for h in hubs]
    assert all(n > 0 for n in data), data
    assert sum(data) == result.published
    # Each hub got every gateway's retained birth when it subscribed, and stored its gateway_state point.
    assert [h["messages_by_channel"].get("state", 0) for h in hubs] == [len(GATEWAYS)] * 2
    assert sum(lines) == result.readings + 2 * len(GATEWAYS)
