"""The Ansible roles applied for real by ``ansible-playbook`` on this machine, into temporary roots.

No systemd runs here, so each role runs with its ``*_systemd: false`` switch and its ``*_root`` prefix (every
path it writes is under a temporary directory; it is not a chroot): the test then starts what the role installed
itself. What this proves and what it cannot is written down in docs/deployment.md.

- mosquitto: the rendered broker config is started with a test CA; anonymous, wrong-password and plain-text
  clients are refused, a gateway cannot publish under or subscribe to another gateway's topics, the hub and each
  gateway's own topics work, and the ACL rules are those of the local stack (ioc/stack/mosquitto.py).
- edge_agent: the release is installed from a wheelhouse into its own virtualenv, the rendered config passes
  ``ioc edge check``, the installed agent publishes its birth and data over TLS to that broker, a second run
  changes nothing, a bad device is refused without replacing the config, and releases roll forward and back.
- hub: installed the same way; the installed agent, the role's broker and the installed hub carry readings into
  InfluxDB (the session stack's, with a fresh database).
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ioc.stack import StackEndpoints, influx_query
from ioc.stack.mosquitto import MAX_PACKET_SIZE, build_accounts, dynsec_acls, dynsec_config
from ioc.stack.packages import binary
from ioc.stack.process import ChildProcess
from wire.v1 import Channel, DataBatch, State, decode_for

# The module fixtures run ansible-playbook several times (a release install takes ~20 s on 2 busy cores).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
BIN = Path(sys.executable).parent
#: The target's interpreter, as on a Debian 12 gateway (not this project's virtualenv).
TARGET_PYTHON = "/usr/bin/python3"
TIMEOUT_S = 10.0
RECAP = re.compile(
    r"^(?P<host>\S+)\s+: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)",
    re.MULTILINE,
)
NOT_AUTHORIZED = 0x87
BAD_USER_OR_PASSWORD = 0x86
PLAYBOOK_TIMEOUT_S = 300

GATEWAY_A = ("site-a", "gw-1")
GATEWAY_B = ("site-b", "gw-2")
PASSWORDS = {
    "hub": "hub-" + secrets.token_urlsafe(12),
    "hub-observe": "hub-observe-" + secrets.token_urlsafe(12),
    "hub-cmd": "hub-cmd-" + secrets.token_urlsafe(12),
    "admin": "admin-" + secrets.token_urlsafe(12),
    "site-a.gw-1": "gw-a-" + secrets.token_urlsafe(12),
    # Characters that need escaping in the environment file and in YAML.
    "site-b.gw-2": 'gw-b-"\\$x:' + secrets.token_urlsafe(8),
}


# ------------------------------------------------------------------------------------------------ helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class PlaybookRun:
    returncode: int
    stats: dict[str, dict[str, int]]
    stdout: str
    output: str

    def changed(self, host: str) -> int:
        return self.stats[host]["changed"]


def run_playbook(playbook: Path, inventory: Path, tmp: Path, *extra: str) -> PlaybookRun:
    """``ansible-playbook`` with this repository's ansible.cfg; the PLAY RECAP's counts per host."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
    }
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), *extra],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=PLAYBOOK_TIMEOUT_S,
        check=False,
    )
    stats = {
        m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"} for m in RECAP.finditer(done.stdout)
    }
    return PlaybookRun(done.returncode, stats, done.stdout, done.stdout + done.stderr)


def failed_task(run: PlaybookRun, host: str) -> str:
    """The name of the task that failed on ``host`` (the header before its ``fatal:`` line)."""
    task = ""
    for line in run.stdout.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith(f"fatal: [{host}]"):
            return task
    return ""


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def read_env_file(path: Path) -> dict[str, str]:
    """The ``KEY="value"`` lines the roles write for systemd's EnvironmentFile= (backslash escapes)."""
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, quoted = line.partition("=")
        assert quoted.startswith('"'), line
        assert quoted.endswith('"'), line
        env[key] = re.sub(r"\\(.)", r"\1", quoted[1:-1])
    return env


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a systemd unit, every value of a repeated key kept."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


# ------------------------------------------------------------------------------------------------ TLS


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A throw-away CA and a server certificate for localhost / 127.0.0.1 signed by it (the role takes paths)."""
    d = tmp_path_factory.mktemp("tls")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", "/CN=ioc-test-ca", cwd=d)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=localhost", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n", encoding="utf-8")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=d)  # fmt: skip
    return Tls(d / "ca.crt", d / "server.crt", d / "server.key")


# ------------------------------------------------------------------------------------------------ broker


@dataclass(frozen=True)
class Broker:
    root: Path
    port: int
    ca: Path
    first_run: PlaybookRun
    second_run: PlaybookRun


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[Broker]:
    """The mosquitto role applied into a temporary root, twice, then the broker it configured, started."""
    tmp = tmp_path_factory.mktemp("broker")
    root = tmp / "root"
    port = free_port()
    playbook = write_yaml(
        tmp / "broker.yml", [{"name": "Broker", "hosts": "brokers", "gather_facts": False, "roles": ["mosquitto"]}]
    )
    host_vars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": TARGET_PYTHON,
        "mosquitto_root": str(root),
        "mosquitto_install_package": False,
        "mosquitto_systemd": False,
        # As ioc/stack does when started as root: "user root", so the broker can read the 0640 root files.
        "mosquitto_user": "root",
        "mosquitto_group": "root",
        "mosquitto_tls_port": port,
        "mosquitto_bind_address": "127.0.0.1",
        "mosquitto_tls_ca_src": str(tls.ca),
        "mosquitto_tls_cert_src": str(tls.cert),
        "mosquitto_tls_key_src": str(tls.key),
        "mosquitto_password_salt_key": secrets.token_urlsafe(16),
        "mosquitto_hub_password": PASSWORDS["hub"],
        "mosquitto_hub_observer_password": PASSWORDS["hub-observe"],
        "mosquitto_hub_command_password": PASSWORDS["hub-cmd"],
        "mosquitto_gateways": [
            {"site": site, "gateway": gw, "password": PASSWORDS[f"{site}.{gw}"]} for site, gw in (GATEWAY_A, GATEWAY_B)
        ],
        "mosquitto_extra_accounts": [
            {"username": "admin", "password": PASSWORDS["admin"], "acl": ["topic readwrite #"]}
        ],
    }
    inventory = write_yaml(tmp / "hosts.yml", {"all": {"children": {"brokers": {"hosts": {"broker-test": host_vars}}}}})
    first = run_playbook(playbook, inventory, tmp)
    assert first.returncode == 0, first.output[-3000:]
    second = run_playbook(playbook, inventory, tmp)
    assert second.returncode == 0, second.output[-3000:]

    proc = ChildProcess("mosquitto", [str(binary("mosquitto")), "-c", str(root / "etc/mosquitto/mosquitto.conf")],
                        tmp / "mosquitto.log", cwd=tmp)  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while connect_code(port, tls.ca, "hub", PASSWORDS["hub"], raise_errors=False) != 0:
            if not proc.running() or time.monotonic() > deadline:
                raise proc.failure("did not accept the hub over TLS")
            time.sleep(0.1)
        yield Broker(root, port, tls.ca, first, second)
    finally:
        proc.stop()


def client_id_of(account: str | None) -> str:
    """The client id a gateway's account is bound to (the agent's own); any other account takes any."""
    if account is not None and account in {f"{site}.{gw}" for site, gw in (GATEWAY_A, GATEWAY_B)}:
        return "ioc-edge-" + account
    return f"t-{secrets.token_hex(4)}"


def new_client(
    protocol: MQTTProtocolVersion = mqtt.MQTTv5, account: str | None = None, client_id: str | None = None
) -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or client_id_of(account), protocol=protocol)


def connect_code(
    port: int,
    ca: Path,
    username: str | None,
    password: str | None,
    *,
    raise_errors: bool = True,
    client_id: str | None = None,
) -> int | None:
    """CONNECT over TLS with MQTT 5; the CONNACK reason code (None: no CONNACK, when not raising)."""
    codes: queue.Queue[ReasonCode] = queue.Queue()
    client = new_client(account=username, client_id=client_id)
    client.tls_set(ca_certs=str(ca))
    if username is not None:
        client.username_pw_set(username, password)
    client.on_connect = lambda _c, _u, _f, rc, _p: codes.put(rc)
    try:
        client.connect("localhost", port, keepalive=10)
    except OSError:
        if raise_errors:
            raise
        return None
    client.loop_start()
    try:
        return codes.get(timeout=TIMEOUT_S).value
    except queue.Empty:
        if raise_errors:
            raise
        return None
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass
class Session:
    """A connected client with what it received and the broker's acknowledgements, in queues."""

    client: mqtt.Client
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    pubacks: queue.Queue[tuple[int, int]] = field(default_factory=queue.Queue)
    subacks: queue.Queue[list[int]] = field(default_factory=queue.Queue)

    def subscribe(self, topic: str) -> int:
        """Subscribe with QoS 1; the SUBACK code (1 granted, 0x80 failure in 3.1.1, 0x87 in MQTT 5)."""
        self.client.subscribe(topic, qos=1)
        (code,) = self.subacks.get(timeout=TIMEOUT_S)
        return code

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish with QoS 1; the PUBACK reason code (always 0 in MQTT 3.1.1)."""
        info = self.client.publish(topic, payload, qos=1)
        mid, code = self.pubacks.get(timeout=TIMEOUT_S)
        assert mid == info.mid
        return code

    def received(self, wait_s: float) -> list[tuple[str, bytes]]:
        """Everything received within ``wait_s`` seconds."""
        time.sleep(wait_s)
        out = []
        while not self.messages.empty():
            msg = self.messages.get()
            out.append((msg.topic, bytes(msg.payload)))
        return out


@contextmanager
def session(broker: Broker, account: str, protocol: MQTTProtocolVersion = mqtt.MQTTv5) -> Iterator[Session]:
    client = new_client(protocol, account)
    client.tls_set(ca_certs=str(broker.ca))
    client.username_pw_set(account, PASSWORDS[account])
    s = Session(client)
    connacks: queue.Queue[int] = queue.Queue()

    def on_publish(_c: mqtt.Client, _u: object, mid: int, rc: ReasonCode, _p: Properties | None) -> None:
        s.pubacks.put((mid, rc.value))

    def on_subscribe(_c: mqtt.Client, _u: object, _mid: int, codes: list[ReasonCode], _p: Properties | None) -> None:
        s.subacks.put([c.value for c in codes])

    client.on_connect = lambda _c, _u, _f, rc, _p: connacks.put(rc.value)
    client.on_message = lambda _c, _u, msg: s.messages.put(msg)
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    client.connect("localhost", broker.port, keepalive=10)
    client.loop_start()
    try:
        assert connacks.get(timeout=TIMEOUT_S) == 0, f"{account} could not connect"
        yield s
    finally:
        client.disconnect()
        client.loop_stop()


def topic(gateway: tuple[str, str], channel: str) -> str:
    return f"ioc/v1/{gateway[0]}/{gateway[1]}/{channel}"


# ------------------------------------------------------------------------------------------------ broker tests


def test_mosquitto_role_second_run_changes_nothing(broker: Broker) -> None:
    host = "broker-test"
    assert broker.first_run.changed(host) > 0
    assert broker.second_run.changed(host) == 0, broker.second_run.output[-3000:]


def test_broker_files_are_private_and_anonymous_is_off(broker: Broker) -> None:
    etc = broker.root / "etc/mosquitto"
    for name in ("dynamic-security.json", "certs/server.key"):
        assert (etc / name).stat().st_mode & 0o777 == 0o640, name
    assert not (etc / "ioc.passwd").exists()
    assert not (etc / "ioc.acl").exists()
    conf = (etc / "mosquitto.conf").read_text(encoding="utf-8").splitlines()
    assert "allow_anonymous false" in conf
    assert "persistence true" in conf
    assert f"max_packet_size {MAX_PACKET_SIZE}" in conf
    assert f"plugin_opt_config_file {etc / 'dynamic-security.json'}" in conf
    # One listener only, the TLS one: no plain-text listener unless mosquitto_loopback_port asks for one.
    assert [line for line in conf if line.startswith("listener ")] == [f"listener {broker.port} 127.0.0.1"]
    accounts = (etc / "dynamic-security.json").read_text(encoding="utf-8")
    assert all(p not in accounts for p in PASSWORDS.values()), "a password is in the clear"


def test_broker_acl_is_the_local_stacks(broker: Broker) -> None:
    """The deployed accounts grant exactly what ioc/stack/mosquitto.py grants the hub's three accounts and each
    gateway, each gateway bound to the same client id."""
    deployed = json.loads((broker.root / "etc/mosquitto/dynamic-security.json").read_text(encoding="utf-8"))
    roles = {role["rolename"]: role["acls"] for role in deployed["roles"]}
    clients = {client["username"]: client for client in deployed["clients"]}
    stack = build_accounts([GATEWAY_A, GATEWAY_B])
    for name in ("hub", "hub-observe", "hub-cmd", "admin", "site-a.gw-1", "site-b.gw-2"):
        assert roles[name] == dynsec_acls(stack[name].acl), name
        assert clients[name].get("clientid") == stack[name].client_id, name
        assert clients[name]["roles"] == [{"rolename": name}], name
    assert set(clients) == set(roles) == set(stack)
    assert deployed["defaultACLAccess"] == dynsec_config(stack)["defaultACLAccess"]


def test_anonymous_client_is_refused(broker: Broker) -> None:
    assert connect_code(broker.port, broker.ca, None, None) == NOT_AUTHORIZED


def test_wrong_password_is_refused(broker: Broker) -> None:
    assert connect_code(broker.port, broker.ca, "site-a.gw-1", PASSWORDS["site-a.gw-1"] + "x") == NOT_AUTHORIZED
    assert connect_code(broker.port, broker.ca, "site-a.gw-1", PASSWORDS["site-b.gw-2"]) == NOT_AUTHORIZED
    # The right password works: the refusals above are about the password.
    assert connect_code(broker.port, broker.ca, "site-a.gw-1", PASSWORDS["site-a.gw-1"]) == 0


def test_a_gateway_account_connects_only_with_its_own_client_id(broker: Broker) -> None:
    """Bound in the dynamic-security plugin: another gateway's or the hub's client id is refused (so it can
    neither knock that client offline nor take its session; tests/integration/test_broker_security.py shows
    that part on the local stack, which binds them the same way)."""
    with session(broker, "site-a.gw-1") as gw_a:
        for client_id in ("ioc-edge-site-b.gw-2", "ioc-hub-central", "anything"):
            code = connect_code(broker.port, broker.ca, "site-a.gw-1", PASSWORDS["site-a.gw-1"], client_id=client_id)
            assert code == NOT_AUTHORIZED, client_id
        assert gw_a.publish(topic(GATEWAY_A, "data"), b"still connected") == 0x10  # no subscriber, but accepted


def mqtt311_connect_packet(username: str, password: str) -> bytes:
    def s(text: str) -> bytes:
        data = text.encode()
        return len(data).to_bytes(2, "big") + data

    body = s("MQTT") + bytes([4, 0xC2]) + (10).to_bytes(2, "big") + s("plain-text") + s(username) + s(password)
    return bytes([0x10, len(body)]) + body


def test_plain_text_connection_is_refused(broker: Broker) -> None:
    """A valid CONNECT (right account, right password) sent without TLS gets no CONNACK."""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(mqtt311_connect_packet("hub", PASSWORDS["hub"]))
        try:
            answer = sock.recv(64)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"\x20"), f"the broker answered a plain-text CONNECT with a CONNACK: {answer!r}"
    # And a TLS client that does not trust the CA is refused by its own side (the broker is who it claims to be).
    ctx = ssl.create_default_context()
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT_S) as sock,
        ctx.wrap_socket(sock, server_hostname="localhost"),
    ):
        pass


def test_gateway_cannot_publish_under_another_gateway_mqtt5(broker: Broker) -> None:
    with session(broker, "admin") as admin, session(broker, "site-a.gw-1") as gw_a:
        assert admin.subscribe("#") == 1
        assert gw_a.publish(topic(GATEWAY_B, "data"), b"forged") == NOT_AUTHORIZED
        assert gw_a.publish(topic(GATEWAY_B, "state"), b"forged") == NOT_AUTHORIZED
        assert gw_a.publish("ioc/v1/site-a/data", b"forged") == NOT_AUTHORIZED  # not under its gateway level
        assert gw_a.publish(topic(GATEWAY_A, "data"), b"genuine") == 0
        assert admin.received(0.5) == [(topic(GATEWAY_A, "data"), b"genuine")]


def test_gateway_cannot_publish_under_another_gateway_mqtt311(broker: Broker) -> None:
    """MQTT 3.1.1 has no reason code in PUBACK: the refused message is acknowledged and silently dropped."""
    with session(broker, "admin") as admin, session(broker, "site-a.gw-1", mqtt.MQTTv311) as gw_a:
        assert admin.subscribe("#") == 1
        assert gw_a.publish(topic(GATEWAY_B, "data"), b"forged") == 0
        assert gw_a.publish(topic(GATEWAY_A, "data"), b"genuine") == 0
        assert admin.received(0.5) == [(topic(GATEWAY_A, "data"), b"genuine")]


def test_gateway_reads_only_its_own_commands(broker: Broker) -> None:
    """Gateway A subscribing to gateway B's commands gets none of them (the dynamic-security plugin refuses the
    SUBSCRIBE with 0x87, and nothing the subscriber may not read is ever sent to it)."""
    with session(broker, "hub-cmd") as hub, session(broker, "admin") as admin, session(broker, "site-a.gw-1") as gw_a:
        for foreign in (topic(GATEWAY_B, "cmd"), topic(GATEWAY_B, "data"), "ioc/#"):
            assert gw_a.subscribe(foreign) in (1, NOT_AUTHORIZED), foreign
        assert hub.publish(topic(GATEWAY_B, "cmd"), b"for b") in (0, 0x10)
        assert admin.publish(topic(GATEWAY_B, "data"), b"b data") in (0, 0x10)
        assert admin.publish(topic(GATEWAY_A, "data"), b"a data") in (0, 0x10)
        assert gw_a.received(0.5) == []
        assert gw_a.subscribe(topic(GATEWAY_A, "cmd")) == 1
        assert hub.publish(topic(GATEWAY_A, "cmd"), b"for a") == 0
        got = gw_a.received(0.5)
    # Delivered once per matching subscription (its own cmd topic, and ioc/#): only its own command.
    assert got, "its own command did not arrive"
    assert set(got) == {(topic(GATEWAY_A, "cmd"), b"for a")}, got


def test_hub_reads_every_gateway_and_commands_them(broker: Broker) -> None:
    """The intake account reads, the command account commands; neither may do the other's part."""
    with (
        session(broker, "hub") as hub,
        session(broker, "hub-cmd") as commands,
        session(broker, "site-a.gw-1") as gw_a,
        session(broker, "site-b.gw-2") as gw_b,
    ):
        assert hub.subscribe("ioc/v1/+/+/data") == 1
        assert gw_b.subscribe(topic(GATEWAY_B, "cmd")) == 1
        assert gw_a.publish(topic(GATEWAY_A, "data"), b"a") == 0
        assert gw_b.publish(topic(GATEWAY_B, "data"), b"b") == 0
        assert sorted(hub.received(0.5)) == [(topic(GATEWAY_A, "data"), b"a"), (topic(GATEWAY_B, "data"), b"b")]
        assert hub.publish(topic(GATEWAY_B, "cmd"), b"forged") == NOT_AUTHORIZED
        assert commands.publish(topic(GATEWAY_B, "cmd"), b"restart") == 0
        assert gw_b.received(0.5) == [(topic(GATEWAY_B, "cmd"), b"restart")]
        assert commands.subscribe("ioc/v1/+/+/data") == NOT_AUTHORIZED
        # Nothing else, anywhere.
        for account in (hub, commands):
            assert account.publish("elsewhere/x", b"x") == NOT_AUTHORIZED
            assert account.publish(topic(GATEWAY_A, "data"), b"x") == NOT_AUTHORIZED


# ------------------------------------------------------------------------------------------------ edge agent


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel and its edge and hub dependencies, built by scripts/build-wheel.sh (from pip's index)."""
    out = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run(
        [str(REPO / "scripts/build-wheel.sh"), str(out)],
        cwd=REPO,
        env={**os.environ, "EXTRAS": "edge,hub", "PIP": str(BIN / "pip")},
        check=True,
        capture_output=True,
        timeout=PLAYBOOK_TIMEOUT_S,
    )
    assert list(out.glob("ioc_backbone-*.whl")), "no project wheel built"
    return out


@dataclass(frozen=True)
class Gateways:
    tmp: Path
    inventory: Path
    playbook: Path
    modbus_port: int
    first_run: PlaybookRun
    second_run: PlaybookRun

    def root(self, host: str) -> Path:
        return self.tmp / host

    def run(self, *extra: str) -> PlaybookRun:
        return run_playbook(self.playbook, self.inventory, self.tmp, "-e", "edge_rollout_batch=100%", *extra)


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory, broker: Broker, wheelhouse: Path) -> Gateways:
    """ansible/edge.yml applied twice to two gateways (local connection, each into its own temporary root)."""
    tmp = tmp_path_factory.mktemp("gateways")
    modbus_port = free_port()
    common = {
        "ansible_connection": "local",
        "ansible_python_interpreter": TARGET_PYTHON,
        "edge_agent_systemd": False,
        "edge_agent_manage_user": False,
        "edge_agent_install_venv_package": False,
        # Users that exist on this machine (the role does not create users outside a real root).
        "edge_agent_user": "nobody",
        "edge_agent_group": "nogroup",
        "edge_agent_python": TARGET_PYTHON,
        "edge_agent_wheelhouse": str(wheelhouse),
        "edge_agent_broker_host": "localhost",
        "edge_agent_broker_port": broker.port,
        "edge_agent_broker_ca_src": str(broker.ca),
    }
    hosts = {
        "gw-tcp": {
            "edge_agent_root": str(tmp / "gw-tcp"),
            "edge_agent_site": GATEWAY_A[0],
            "edge_agent_gateway": GATEWAY_A[1],
            "edge_agent_broker_password": PASSWORDS["site-a.gw-1"],
            "edge_agent_publish": {"max_delay_ms": 200},
            "edge_agent_snapshots": {"interval_s": 600},
            "edge_agent_devices": [
                {
                    "id": "weather-01",
                    "driver": "modbus_tcp",
                    "profile": "xy-md02",
                    "interval_s": 0.5,
                    "options": {"host": "127.0.0.1", "port": modbus_port, "unit_id": 1},
                }
            ],
        },
        "gw-serial": {
            "edge_agent_root": str(tmp / "gw-serial"),
            "edge_agent_site": GATEWAY_B[0],
            "edge_agent_gateway": GATEWAY_B[1],
            "edge_agent_broker_password": PASSWORDS["site-b.gw-2"],
            "edge_agent_devices": [
                {
                    "id": "water-01",
                    "driver": "modbus_rtu",
                    "profile": "water-level-rs485",
                    "interval_s": 5,
                    "options": {"port": "/dev/ttyUSB0", "unit_id": 1},
                }
            ],
        },
    }
    inventory = write_yaml(tmp / "hosts.yml", {"all": {"children": {"gateways": {"vars": common, "hosts": hosts}}}})
    playbook = ANSIBLE_DIR / "edge.yml"
    extra = ("-e", "edge_rollout_batch=100%")
    first = run_playbook(playbook, inventory, tmp, *extra)
    assert first.returncode == 0, first.output[-4000:]
    second = run_playbook(playbook, inventory, tmp, *extra)
    assert second.returncode == 0, second.output[-4000:]
    return Gateways(tmp, inventory, playbook, modbus_port, first, second)


def test_edge_agent_second_run_changes_nothing(gateways: Gateways) -> None:
    for host in ("gw-tcp", "gw-serial"):
        assert gateways.first_run.changed(host) > 0
        assert gateways.second_run.changed(host) == 0, f"{host}: {gateways.second_run.output[-3000:]}"


def test_edge_agent_release_layout(gateways: Gateways) -> None:
    home = gateways.root("gw-tcp") / "opt/ioc-edge"
    assert str((home / "current").readlink()) == "releases/0.1.0"  # relative: valid under any root
    venv = home / "releases/0.1.0/venv"
    assert (venv / "bin/ioc").is_file()
    # Its own interpreter (a virtualenv of the target's Python), not this project's.
    cfg = (venv / "pyvenv.cfg").read_text(encoding="utf-8")
    assert f"executable = {os.path.realpath(TARGET_PYTHON)}" in cfg or "home = /usr/bin" in cfg, cfg
    done = subprocess.run(
        [str(venv / "bin/python"), "-c", "import edge; print(edge.__file__)"],
        cwd=gateways.tmp, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.startswith(str(venv)), done.stdout
    assert (home / "releases/0.1.0/.installed").read_text(encoding="utf-8").strip() == "ioc-backbone[edge]==0.1.0"


@pytest.mark.parametrize("host", ["gw-tcp", "gw-serial"])
def test_rendered_config_passes_ioc_edge_check(gateways: Gateways, host: str) -> None:
    root = gateways.root(host)
    config = root / "etc/ioc-edge/gateway.yaml"
    done = subprocess.run(
        [str(root / "opt/ioc-edge/current/venv/bin/ioc"), "edge", "check", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{config}: valid" in done.stdout
    assert "with TLS" in done.stdout
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    assert data["broker"]["ca_file"] == str(root / "etc/ioc-edge/broker-ca.pem")
    # The outbox is in the state directory: the unit makes everything else read-only.
    assert data["publish"]["outbox_path"] == str(root / "var/lib/ioc-edge/outbox.sqlite")
    assert "password" not in data["broker"]
    # The cameras' snapshot settings are written only when given.
    assert data.get("snapshots") == ({"interval_s": 600} if host == "gw-tcp" else None)


def test_secrets_are_root_only_and_config_is_group_readable(gateways: Gateways) -> None:
    etc = gateways.root("gw-serial") / "etc/ioc-edge"
    secrets_env = etc / "secrets.env"
    assert secrets_env.stat().st_mode & 0o777 == 0o600
    assert secrets_env.stat().st_uid == 0
    config = etc / "gateway.yaml"
    assert config.stat().st_mode & 0o777 == 0o640
    assert config.stat().st_uid == 0
    assert config.group() == "nogroup"
    # The escaping survives: systemd (and this parser) read back the exact password.
    assert read_env_file(secrets_env) == {"IOC_EDGE_BROKER__PASSWORD": PASSWORDS["site-b.gw-2"]}
    assert PASSWORDS["site-b.gw-2"] not in config.read_text(encoding="utf-8")


def test_units_are_hardened_and_devices_only_for_serial(gateways: Gateways) -> None:
    tcp = unit_settings(gateways.root("gw-tcp") / "etc/systemd/system/ioc-edge.service")
    serial = unit_settings(gateways.root("gw-serial") / "etc/systemd/system/ioc-edge.service")
    for unit, host in ((tcp, "gw-tcp"), (serial, "gw-serial")):
        assert unit["User"] == ["nobody"]
        assert unit["ProtectSystem"] == ["strict"]
        assert unit["NoNewPrivileges"] == ["yes"]
        assert unit["CapabilityBoundingSet"] == [""]
        assert unit["PrivateTmp"] == ["yes"]
        assert unit["ReadWritePaths"] == [str(gateways.root(host) / "var/lib/ioc-edge")]
    assert tcp["PrivateDevices"] == ["yes"]
    assert "DeviceAllow" not in tcp
    assert "SupplementaryGroups" not in tcp
    assert serial["PrivateDevices"] == ["no"]
    assert serial["DevicePolicy"] == ["closed"]
    assert serial["DeviceAllow"] == ["/dev/ttyUSB0 rw"]
    assert serial["SupplementaryGroups"] == ["dialout"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("host", ["gw-tcp", "gw-serial"])
def test_units_pass_systemd_analyze(gateways: Gateways, host: str, tmp_path: Path) -> None:
    """systemd's own offline checks: the unit parses, its ExecStart exists, and its exposure score is low."""
    unit = tmp_path / "ioc-edge.service"
    # The test renders the unit with users that exist here (nobody/nogroup, which systemd rightly calls unsafe);
    # checked with the role's default user, as in production.
    text = (gateways.root(host) / "etc/systemd/system/ioc-edge.service").read_text(encoding="utf-8")
    unit.write_text(text.replace("User=nobody", "User=ioc-edge").replace("Group=nogroup", "Group=ioc-edge"))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert "ioc-edge.service" not in verify.stderr, verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for ioc-edge\.service: ([0-9.]+)", security.stdout)
    assert match, security.stdout + security.stderr
    # systemd rates 0-10 (below 2 is "OK"); these units score 1.3 (TCP) and 1.5 (serial: DeviceAllow= instead
    # of PrivateDevices=, and the dialout group). A weakened unit fails here.
    assert float(match.group(1)) <= 1.5, security.stdout


def test_installed_agent_publishes_birth_and_data_over_tls(gateways: Gateways, broker: Broker) -> None:
    root = gateways.root("gw-tcp")
    sim = ChildProcess(
        "modbus-sim",
        [str(BIN / "ioc"), "sim", "modbus", "--profile", "xy-md02", "--port", str(gateways.modbus_port)],
        gateways.tmp / "sim.log",
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IOC_")},
        **read_env_file(root / "etc/ioc-edge/secrets.env"),
    }
    with session(broker, "admin") as admin:
        assert admin.subscribe(f"ioc/v1/{GATEWAY_A[0]}/{GATEWAY_A[1]}/#") == 1
        log = (gateways.tmp / "agent.log").open("wb")
        agent = subprocess.Popen(
            [str(root / "opt/ioc-edge/current/venv/bin/ioc"), "edge", "run", str(root / "etc/ioc-edge/gateway.yaml")],
            env=env, cwd=root / "var/lib/ioc-edge", stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            birth: State | None = None
            batch: DataBatch | None = None
            deadline = time.monotonic() + 30
            while (birth is None or batch is None) and time.monotonic() < deadline:
                try:
                    msg = admin.messages.get(timeout=1)
                except queue.Empty:
                    assert agent.poll() is None, (gateways.tmp / "agent.log").read_text(errors="replace")
                    continue
                if msg.topic.endswith("/state") and msg.payload:
                    state = decode_for(Channel.STATE, bytes(msg.payload))
                    assert isinstance(state, State)
                    if state.online:
                        birth = state
                elif msg.topic.endswith("/data"):
                    decoded = decode_for(Channel.DATA, bytes(msg.payload))
                    assert isinstance(decoded, DataBatch)
                    batch = decoded
            log_text = (gateways.tmp / "agent.log").read_text(errors="replace")
            assert birth is not None, f"no birth message; agent log:\n{log_text[-3000:]}"
            assert [d.id for d in birth.devices] == ["weather-01"]
            assert batch is not None, f"no data; agent log:\n{log_text[-3000:]}"
            assert (root / "var/lib/ioc-edge/outbox.sqlite").exists()
            assert not (root / "etc/ioc-edge/state").exists(), "the agent wrote next to its config"
            assert batch.session == birth.session
            assert {r.device for r in batch.readings} == {"weather-01"}
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=20) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait(timeout=10)
            log.close()
            sim.stop()
            clear_retained_state(broker)


def clear_retained_state(broker: Broker) -> None:
    with session(broker, "admin") as admin:
        for gw in (GATEWAY_A, GATEWAY_B):
            info = admin.client.publish(topic(gw, "state"), b"", qos=1, retain=True)
            info.wait_for_publish(TIMEOUT_S)


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory: pytest.TempPathFactory, broker: Broker, wheelhouse: Path) -> Path:
    """The hub role applied into a temporary root (twice: the second run must change nothing)."""
    tmp = tmp_path_factory.mktemp("hub")
    host_vars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": TARGET_PYTHON,
        "hub_root": str(tmp / "root"),
        "hub_systemd": False,
        "hub_manage_user": False,
        "hub_install_venv_package": False,
        "hub_install_chromium": False,
        "hub_user": "nobody",
        "hub_group": "nogroup",
        "hub_python": TARGET_PYTHON,
        "hub_wheelhouse": str(wheelhouse),
        "hub_mqtt_ca_src": str(broker.ca),
        "hub_settings": {
            "mqtt": {"host": "localhost", "port": broker.port, "tls": True, "username": "hub",
                     "password": PASSWORDS["hub"], "observer_username": "hub-observe",
                     "observer_password": PASSWORDS["hub-observe"], "command_username": "hub-cmd",
                     "command_password": PASSWORDS["hub-cmd"], "client_id": f"test-hub-{secrets.token_hex(4)}"},
            "influx": {"url": "http://127.0.0.1:1", "database": "ioc"},  # the test points it at its own database
            "http": {"host": "127.0.0.1", "port": 0},
        },
    }  # fmt: skip
    inventory = write_yaml(tmp / "hosts.yml", {"all": {"children": {"hub": {"hosts": {"hub-test": host_vars}}}}})
    playbook = write_yaml(tmp / "hub.yml", [{"name": "Hub", "hosts": "hub", "gather_facts": False, "roles": ["hub"]}])
    first = run_playbook(playbook, inventory, tmp)
    assert first.returncode == 0, first.output[-4000:]
    second = run_playbook(playbook, inventory, tmp)
    assert second.returncode == 0, second.output[-4000:]
    assert second.changed("hub-test") == 0, second.output[-3000:]
    return tmp / "root"


def test_hub_role_installs_a_hardened_hub(hub_root: Path) -> None:
    assert str((hub_root / "opt/ioc-hub/current").readlink()) == "releases/0.1.0"
    assert (hub_root / "opt/ioc-hub/releases/0.1.0/.installed").read_text().strip() == "ioc-backbone[hub]==0.1.0"
    assert (hub_root / "etc/ioc-hub/hub.env").stat().st_mode & 0o777 == 0o600
    unit = unit_settings(hub_root / "etc/systemd/system/ioc-hub.service")
    assert unit["ExecStart"] == [f"{hub_root}/opt/ioc-hub/current/venv/bin/ioc hub"]
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["PrivateDevices"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"]


def test_deployed_agent_to_deployed_hub_to_influxdb(
    gateways: Gateways, broker: Broker, hub_root: Path, stack: StackEndpoints, influx_db: str
) -> None:
    """The chain as deployed: the installed agent -> the role's TLS broker -> the installed hub -> InfluxDB."""
    agent_root = gateways.root("gw-tcp")
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    hub_env = clean_env | read_env_file(hub_root / "etc/ioc-hub/hub.env")
    hub_env |= {"IOC_HUB_INFLUX__URL": stack.influx_url, "IOC_HUB_INFLUX__DATABASE": influx_db}
    agent_env = clean_env | read_env_file(agent_root / "etc/ioc-edge/secrets.env")
    sim = ChildProcess(
        "modbus-sim",
        [str(BIN / "ioc"), "sim", "modbus", "--profile", "xy-md02", "--port", str(gateways.modbus_port)],
        gateways.tmp / "sim-chain.log",
    )
    logs = [(gateways.tmp / name).open("wb") for name in ("hub-chain.log", "agent-chain.log")]
    hub = subprocess.Popen(
        [str(hub_root / "opt/ioc-hub/current/venv/bin/ioc"), "hub"],
        env=hub_env, cwd=hub_root / "var/lib/ioc-hub", stdout=logs[0], stderr=subprocess.STDOUT,
    )  # fmt: skip
    agent = subprocess.Popen(
        [str(agent_root / "opt/ioc-edge/current/venv/bin/ioc"), "edge", "run",
         str(agent_root / "etc/ioc-edge/gateway.yaml")],
        env=agent_env, cwd=agent_root / "var/lib/ioc-edge", stdout=logs[1], stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        rows: list[dict[str, Any]] = []
        deadline = time.monotonic() + 45
        while not rows and time.monotonic() < deadline:
            assert hub.poll() is None, (gateways.tmp / "hub-chain.log").read_text(errors="replace")[-3000:]
            assert agent.poll() is None, (gateways.tmp / "agent-chain.log").read_text(errors="replace")[-3000:]
            time.sleep(1)
            rows = influx_query(stack.influx_url, influx_db, "SELECT * FROM /.*/ WHERE device = 'weather-01' LIMIT 5")
        assert rows, (
            "nothing stored; hub log:\n"
            + (gateways.tmp / "hub-chain.log").read_text(errors="replace")[-2000:]
            + "\nagent log:\n"
            + (gateways.tmp / "agent-chain.log").read_text(errors="replace")[-2000:]
        )
        assert all(r.get("site") == GATEWAY_A[0] for r in rows), rows
        # The hub keeps its state where the unit lets it write.
        state = hub_root / "var/lib/ioc-hub"
        assert (state / "registry.db").exists(), sorted(p.name for p in state.iterdir())
    finally:
        for proc in (agent, hub):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for f in logs:
            f.close()
        sim.stop()
        clear_retained_state(broker)


def test_bad_device_is_refused_and_the_old_config_stays(gateways: Gateways, tmp_path: Path) -> None:
    config = gateways.root("gw-tcp") / "etc/ioc-edge/gateway.yaml"
    before = config.read_bytes()
    bad = [{"id": "weather-01", "driver": "modbus_tcp", "profile": "xy-md02", "interval_s": 1,
            "options": {"host": "127.0.0.1", "port": "not-a-port", "unit_id": 1}}]  # fmt: skip
    extra = write_yaml(tmp_path / "bad.yml", {"edge_agent_devices": bad})
    run = gateways.run("-l", "gw-tcp", "-e", f"@{extra}")
    assert run.returncode != 0
    assert failed_task(run, "gw-tcp").startswith("edge_agent : Render the gateway config"), run.output[-3000:]
    assert "weather-01" in run.output, run.output[-3000:]
    assert "options.port" in run.output, run.output[-3000:]
    assert config.read_bytes() == before


def test_release_upgrade_keeps_previous_and_rollback_needs_no_wheelhouse(gateways: Gateways) -> None:
    """Each new release is installed beside the current one; the one it replaces is kept, older ones removed."""
    home = gateways.root("gw-tcp") / "opt/ioc-edge"
    for release in ("0.1.0-b", "0.1.0-c"):
        run = gateways.run("-l", "gw-tcp", "-e", f"edge_agent_release={release}")
        assert run.returncode == 0, run.output[-3000:]
        assert str((home / "current").readlink()) == f"releases/{release}"
    assert (home / "previous").read_text(encoding="utf-8").strip() == "0.1.0-b"
    assert sorted(p.name for p in (home / "releases").iterdir()) == ["0.1.0-b", "0.1.0-c"]

    stamp = home / "releases/0.1.0-b/.installed"
    installed_at = stamp.stat().st_mtime_ns
    run = gateways.run("-l", "gw-tcp", "-e", "edge_agent_release=0.1.0-b", "-e", "edge_agent_wheelhouse=")
    assert run.returncode == 0, run.output[-3000:]
    assert str((home / "current").readlink()) == "releases/0.1.0-b"
    assert (home / "previous").read_text(encoding="utf-8").strip() == "0.1.0-c"
    assert stamp.stat().st_mtime_ns == installed_at, "the kept release was reinstalled"
    assert sorted(p.name for p in (home / "releases").iterdir()) == ["0.1.0-b", "0.1.0-c"]
