"""The local stack runner against the real Mosquitto and InfluxDB it starts."""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ioc.stack import LocalStack, StackEndpoints, StackError, ensure_packages, influx_query, influx_write
from ioc.stack import packages as packages_module
from ioc.stack import runner as runner_module

pytestmark = pytest.mark.integration

TIMEOUT_S = 5.0
NOT_AUTHORIZED = 0x87  # MQTT 5 reason code "Not authorized" (CONNACK, PUBACK)
BAD_USER_OR_PASSWORD = 0x86


@dataclass
class Session:
    """A connected MQTT 5 client with its received messages and acknowledgements in queues."""

    client: mqtt.Client
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    pubacks: queue.Queue[tuple[int, int]] = field(default_factory=queue.Queue)
    subacks: queue.Queue[list[ReasonCode]] = field(default_factory=queue.Queue)

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        codes = self.subacks.get(timeout=TIMEOUT_S)
        assert [c.value for c in codes] == [1], f"SUBACK for {topic}: {codes}"

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish with QoS 1 and return the PUBACK reason code."""
        info = self.client.publish(topic, payload, qos=1)
        mid, code = self.pubacks.get(timeout=TIMEOUT_S)
        assert mid == info.mid
        return code


def connect_result(
    ep: StackEndpoints, username: str | None, password: str | None, client_id: str | None = None
) -> ReasonCode:
    """CONNECT with MQTT 5 and return the CONNACK reason code."""
    codes: queue.Queue[ReasonCode] = queue.Queue()
    client_id = client_id or f"t-{secrets.token_hex(4)}"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if username is not None:
        client.username_pw_set(username, password)
    client.on_connect = lambda _c, _u, _f, rc, _p: codes.put(rc)
    client.connect(ep.mqtt_host, ep.mqtt_port, keepalive=10)
    client.loop_start()
    try:
        return codes.get(timeout=TIMEOUT_S)
    finally:
        client.disconnect()
        client.loop_stop()


@contextmanager
def session(ep: StackEndpoints, account: str) -> Iterator[Session]:
    user, password = ep.credentials(account)
    client_id = ep.client_id(account, f"t-{secrets.token_hex(4)}")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    s = Session(client)
    connacks: queue.Queue[ReasonCode] = queue.Queue()

    def on_publish(_c: mqtt.Client, _u: object, mid: int, reason_code: ReasonCode, _p: Properties | None) -> None:
        s.pubacks.put((mid, reason_code.value))

    client.on_connect = lambda _c, _u, _f, rc, _p: connacks.put(rc)
    client.on_message = lambda _c, _u, msg: s.messages.put(msg)
    client.on_subscribe = lambda _c, _u, _mid, codes, _p: s.subacks.put(codes)
    client.on_publish = on_publish
    client.connect(ep.mqtt_host, ep.mqtt_port, keepalive=10)
    client.loop_start()
    try:
        rc = connacks.get(timeout=TIMEOUT_S)
        assert not rc.is_failure, f"{account} could not connect: {rc}"
        yield s
    finally:
        client.disconnect()
        client.loop_stop()


def test_anonymous_client_is_refused(stack: StackEndpoints) -> None:
    rc = connect_result(stack, None, None)
    assert rc.value == NOT_AUTHORIZED, rc


def test_wrong_password_is_refused(stack: StackEndpoints) -> None:
    user, password = stack.credentials("admin")
    rc = connect_result(stack, user, password + "x")
    assert rc.value == NOT_AUTHORIZED, rc
    # The right password for that user works, so the refusal above is about the password.
    assert connect_result(stack, user, password).value == 0


def test_unknown_account_names_the_known_ones(stack: StackEndpoints) -> None:
    with pytest.raises(KeyError, match=r"site-a\.gw-1"):
        stack.credentials("site-z.gw-9")


def test_admin_receives_its_own_message(stack: StackEndpoints) -> None:
    topic = f"test/admin/{secrets.token_hex(4)}"
    with session(stack, "admin") as admin:
        admin.subscribe(topic)
        assert admin.publish(topic, b"hello") == 0
        msg = admin.messages.get(timeout=TIMEOUT_S)
    assert (msg.topic, msg.payload) == (topic, b"hello")


def test_gateway_publishes_only_under_its_own_topics(stack: StackEndpoints) -> None:
    own = "ioc/v1/site-a/gw-1/data"
    other = "ioc/v1/site-b/gw-2/data"
    with session(stack, "admin") as admin, session(stack, "site-a.gw-1") as gateway:
        admin.subscribe("ioc/v1/#")
        assert gateway.publish(other, b"forged") == NOT_AUTHORIZED
        assert gateway.publish(own, b"genuine") == 0
        first = admin.messages.get(timeout=TIMEOUT_S)
        # The denied message was published first; had it been delivered it would have arrived first.
        assert (first.topic, first.payload) == (own, b"genuine")
        time.sleep(0.3)
        assert admin.messages.empty()


def test_gateway_reads_its_commands_but_not_others(stack: StackEndpoints) -> None:
    with session(stack, "admin") as admin, session(stack, "site-a.gw-1") as gateway:
        gateway.subscribe("ioc/v1/site-a/gw-1/cmd")
        # The dynamic-security plugin refuses the subscription itself; subscribe to the other gateway's
        # commands anyway and check nothing arrives (0x10: no subscriber matched, MQTT 5 section 3.4.2.1).
        gateway.client.subscribe("ioc/v1/site-b/gw-2/cmd", qos=1)
        assert [code.value for code in gateway.subacks.get(timeout=TIMEOUT_S)] == [0x87]
        assert admin.publish("ioc/v1/site-b/gw-2/cmd", b"not yours") == 0x10
        assert admin.publish("ioc/v1/site-a/gw-1/cmd", b"yours") == 0
        msg = gateway.messages.get(timeout=TIMEOUT_S)
        assert (msg.topic, msg.payload) == ("ioc/v1/site-a/gw-1/cmd", b"yours")
        time.sleep(0.3)
        assert gateway.messages.empty()


def test_hub_receives_gateway_data_through_a_shared_subscription(stack: StackEndpoints) -> None:
    with session(stack, "hub") as hub, session(stack, "demo.gw-1") as gateway:
        hub.subscribe("$share/hub/ioc/v1/+/+/data")
        assert gateway.publish("ioc/v1/demo/gw-1/data", b"batch") == 0
        msg = hub.messages.get(timeout=TIMEOUT_S)
    assert (msg.topic, msg.payload) == ("ioc/v1/demo/gw-1/data", b"batch")


def test_influx_write_then_query_exact_value_and_time(stack: StackEndpoints, influx_db: str) -> None:
    ts_ms = 1_732_800_000_123
    response = httpx.post(
        f"{stack.influx_url}/write",
        params={"db": influx_db, "precision": "ms"},
        content=f"air_quality,site=site-a,device=aq-01 pm2_5=12.25,ok=true {ts_ms}\n".encode(),
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 204, response.text
    rows = influx_query(stack.influx_url, influx_db, 'SELECT pm2_5, ok FROM "air_quality" GROUP BY site')
    assert rows == [{"time": ts_ms, "pm2_5": 12.25, "ok": True, "site": "site-a"}]


def test_influx_query_returns_rows_of_every_series(stack: StackEndpoints, influx_db: str) -> None:
    influx_write(stack.influx_url, influx_db, "m,site=a v=1i 1000\nm,site=b v=2i 2000\n")
    rows = influx_query(stack.influx_url, influx_db, "SELECT v FROM m GROUP BY site")
    assert sorted((r["site"], r["v"], r["time"]) for r in rows) == [("a", 1, 1000), ("b", 2, 2000)]
    assert influx_query(stack.influx_url, influx_db, "SELECT v FROM nothing_here") == []


def test_influx_query_error_is_a_stack_error(stack: StackEndpoints, influx_db: str) -> None:
    with pytest.raises(StackError, match="error parsing query"):
        influx_query(stack.influx_url, influx_db, "SELEC nonsense")
    with pytest.raises(StackError, match="database not found"):
        influx_query(stack.influx_url, "no_such_db", "SELECT * FROM m")


def test_default_database_exists(stack: StackEndpoints) -> None:
    names = [r["name"] for r in influx_query(stack.influx_url, stack.influx_db, "SHOW DATABASES")]
    assert stack.influx_db in names


def test_credentials_file_is_private_and_complete(stack: StackEndpoints) -> None:
    path = stack.state_dir / "credentials.json"
    assert path.stat().st_mode & 0o777 == 0o600
    doc = json.loads(path.read_text())
    assert doc == stack.to_json()
    assert doc["mqtt"]["port"] == stack.mqtt_port
    assert set(doc["mqtt"]["accounts"]) == {
        "hub",
        "hub-observe",
        "hub-cmd",
        "admin",
        "site-a.gw-1",
        "site-b.gw-2",
        "site-b.gw-2.second",
        "demo.gw-1",
        "replay.gw-1",
        "cameras.gw-1",
    }
    assert doc["mqtt"]["accounts"]["hub"]["password"] == stack.credentials("hub")[1]
    # The session's gateways are bound to their agents' client ids, as in production; gw-2's second account to one
    # of its own. The hub's and admin accounts take any.
    assert {name: a.get("client_id") for name, a in doc["mqtt"]["accounts"].items()} == {
        "hub": None,
        "hub-observe": None,
        "hub-cmd": None,
        "admin": None,
        "site-a.gw-1": "ioc-edge-site-a.gw-1",
        "site-b.gw-2": "ioc-edge-site-b.gw-2",
        "site-b.gw-2.second": "second-site-b-gw-2",
        "demo.gw-1": "ioc-edge-demo.gw-1",
        "replay.gw-1": "ioc-edge-replay.gw-1",
        "cameras.gw-1": "ioc-edge-cameras.gw-1",
    }


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_two_stacks_at_once_then_nothing_left(tmp_path: Path) -> None:
    first, second = LocalStack(tmp_path / "one"), LocalStack(tmp_path / "two", influx_db="other")
    with first as a, second as b:
        ports_a = {a.mqtt_port, int(a.influx_url.rsplit(":", 1)[1])}
        ports_b = {b.mqtt_port, int(b.influx_url.rsplit(":", 1)[1])}
        assert len(ports_a | ports_b) == 4
        assert connect_result(a, *a.credentials("admin")).value == 0
        assert connect_result(b, *b.credentials("admin")).value == 0
        # Each stack's accounts are its own.
        assert connect_result(b, *a.credentials("admin")).value == NOT_AUTHORIZED
        assert influx_query(b.influx_url, "other", "SHOW DATABASES")
        pids = [*first.pids.values(), *second.pids.values()]
        assert len(pids) == 4
        assert all(Path(f"/proc/{pid}").exists() for pid in pids)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not any(_listening(p) for p in ports_a | ports_b)


def test_state_dir_in_use_is_refused(tmp_path: Path) -> None:
    with LocalStack(tmp_path), pytest.raises(StackError, match="in use"):
        LocalStack(tmp_path).start()


def test_failing_child_reports_its_log_and_the_other_is_stopped(tmp_path: Path) -> None:
    # A directory where influxd expects its meta database file makes it exit at start-up.
    (tmp_path / "influxdb" / "meta" / "meta.db").mkdir(parents=True)
    stack = LocalStack(tmp_path, ready_timeout=10)
    with pytest.raises(StackError, match=r"influxd exited during start-up") as info:
        stack.start()
    assert "meta.db: is a directory" in str(info.value)  # the tail of influxd.log
    assert set(stack.pids) == {"mosquitto", "influxd"}
    for pid in stack.pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_unwritable_state_dir_is_a_stack_error(tmp_path: Path) -> None:
    (tmp_path / "influxdb").write_text("a file where a directory should be")
    with pytest.raises(StackError, match="influxdb"):
        LocalStack(tmp_path).start()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it is dead, only not reaped yet (its parent was killed too).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def test_children_die_when_the_runner_is_killed(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: SIGKILL the runner (no cleanup runs) and its Mosquitto and InfluxDB go too."""
    script = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from ioc.stack import LocalStack\n"
        "stack = LocalStack(Path(sys.argv[1]))\n"
        "stack.start()\n"
        "print(json.dumps(stack.pids), flush=True)\n"
        "time.sleep(60)\n"
    )
    runner = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert runner.stdout is not None
        line = runner.stdout.readline()
        assert line, runner.stderr.read() if runner.stderr else ""
        pids: dict[str, int] = json.loads(line)
        assert set(pids) == {"mosquitto", "influxd"}
        assert not any(_gone(pid) for pid in pids.values())
    finally:
        runner.kill()
        runner.communicate(timeout=TIMEOUT_S)
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in pids.values()), pids


def test_port_taken_before_the_child_binds_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process takes the picked port between our pick and the child's bind: both services try again."""
    real_free_ports = runner_module.free_ports
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = int(squatter.getsockname()[1])
        handed_out: list[list[int]] = []

        def racy_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
            ports = real_free_ports(count, host)
            if all(len(p) != count for p in handed_out):  # the first pick for each service (1 or 2 ports)
                ports[0] = busy
            handed_out.append(ports)
            return ports

        monkeypatch.setattr(runner_module, "free_ports", racy_free_ports)
        stack = LocalStack(tmp_path)
        with stack as ep:
            assert ep.mqtt_port != busy
            assert not ep.influx_url.endswith(f":{busy}")
            assert connect_result(ep, *ep.credentials("admin")).value == 0
            assert [len(p) for p in handed_out] == [1, 1, 2, 2]
    assert "address already in use" in (tmp_path / "mosquitto.log").read_text().lower()
    assert "address already in use" in (tmp_path / "influxd.log").read_text().lower()


def test_ioc_stack_up_prints_endpoints_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ioc.cli", "stack", "up", "--state-dir", str(tmp_path), "--gateway", "site-a.gw-1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        lines: list[bytes] = []
        while not lines or lines[-1] != b"}\n":  # the JSON document ends with a closing brace alone on a line
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            lines.append(line)
        doc = json.loads(b"".join(lines))
        ep_port = doc["mqtt"]["port"]
        gw = doc["mqtt"]["accounts"]["site-a.gw-1"]
        assert doc["influxdb"]["database"] == "ioc"
        assert httpx.get(f"{doc['influxdb']['url']}/ping", timeout=TIMEOUT_S).status_code == 204
        ep = StackEndpoints("127.0.0.1", ep_port, doc["influxdb"]["url"], "ioc", tmp_path, {})
        assert gw["client_id"] == "ioc-edge-site-a.gw-1"  # `ioc stack up` binds gateways to their ids
        assert connect_result(ep, gw["username"], gw["password"], gw["client_id"]).value == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT_S)
    assert not _listening(ep_port)


def test_missing_package_as_non_root_names_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packages_module, "PACKAGES", (packages_module.Package("ioc-test-pkg", ("ioc-no-such-bin",)),))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(StackError) as info:
        ensure_packages()
    message = str(info.value)
    assert "ioc-test-pkg" in message
    assert "apt-get install -y --no-install-recommends ioc-test-pkg" in message


def test_ensure_packages_finds_the_installed_binaries() -> None:
    ensure_packages()  # installed on this machine (or just installed as root): must not raise
    found = packages_module.found_binaries()
    assert all(path is not None and path.is_file() for path in found.values()), found
