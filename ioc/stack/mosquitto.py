"""Mosquitto 2.0 for the local stack: accounts, ACLs, the generated config, and a real readiness probe.

Accounts and ACLs live in Mosquitto's dynamic-security plugin (``mosquitto_dynamic_security.so``, its JSON file
written here at every start), chosen over ``use_username_as_clientid`` because it binds a client id to one
account without changing anyone else's: a gateway's account ``{site}.{gateway}`` may connect only with the
gateway's own client id (:func:`gateway_client_id`, the one the agent uses), so no gateway account can connect
as another gateway or as the hub, knock it offline (a second connection with a client id takes over the first,
MQTT 5 section 3.1.4) or take its persistent session. ``use_username_as_clientid`` is global: it would also
rename the hub's and the people's connections, so two ``admin`` sessions or two hubs of a group on one
account would throw each other out.

- ``hub`` (the hub's intake) and ``hub-observe`` (its observer connection) read ``data``, ``state``, ``event``,
  ``cmd/ack`` and ``snapshot`` of every gateway (also as ``$share/{group}/...``) and write nothing;
- ``hub-cmd`` (the hub's command connection) writes ``cmd`` and reads ``cmd/ack``;
- ``admin`` reads and writes ``#``, for people and tests publishing by hand;
- one per gateway, ``{site}.{gateway}``, may publish only its own ``state``, ``data``, ``event``, ``cmd/ack``
  and ``snapshot`` and read only its own ``cmd`` (see ``wire/v1.py`` for the topic layout).

The hub's accounts are not bound to a client id: several hub processes of a group may share them (each with
its own ``mqtt.client_id``); what a gateway can do to them is already ruled out by the gateway's own binding.
The broker also refuses every packet larger than ``hub.mqtt.codec.MAX_PACKET_BYTES`` (``max_packet_size``,
mosquitto.conf(5); :data:`MAX_PACKET_SIZE`): the contract's largest message (``wire.v1.MAX_MESSAGE_BYTES``) plus
MQTT's overhead; a client that sends one is disconnected and the message goes nowhere.

What the broker holds for one client session is bounded in messages and in payload bytes
(:class:`SessionLimits`, the same in the ansible role). For the hub's persistent session that bound is also how
long the hub may be away: the broker acknowledges a gateway's QoS 1 message as soon as it has queued it, and the
agent then deletes the reading from its outbox, so what the broker drops beyond the bound is gone (it logs
"Outgoing messages are being dropped for client ..." once, and the hub counts the gaps in ``seq`` when it is
back). At a city of 500 gateways the defaults hold the hub's backlog for ~2.8 h at the example cabinet's rate
and ~33 min if every cabinet sent a message a second; the arithmetic is at :data:`MAX_QUEUED_BYTES` and in
docs/deployment.md. Mosquitto's ``memory_limit`` is not set: when it is reached Mosquitto refuses whichever
allocation comes next and disconnects that client (the publisher of an incoming message, the receiver of an
outgoing one; mosquitto.conf(5)), a healthy gateway or the hub as likely as the session that grew, instead of
dropping only that session's overflow.

Mosquitto holds a descriptor per connection and never raises its own open-files limit: started from a shell with
the usual soft limit of 1,024, it refuses the 1,020th client or so ("Too many open files" on accept). :func:`start`
raises the broker's soft limit to its hard one (the ansible role sets ``LimitNOFILE`` in the unit's drop-in).
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import secrets
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from common import mosquitto_dynsec
from hub.mqtt.codec import (
    CONNACK,
    DISCONNECT_PACKET,
    MAX_PACKET_BYTES,
    REASONS,
    ConnAck,
    MqttProtocolError,
    Packet,
    PacketReader,
    decode_connack,
    encode_connect,
    reason_text,
)
from ioc.stack.errors import StackError
from ioc.stack.packages import binary, find_lib_file
from ioc.stack.process import ChildProcess

log = logging.getLogger(__name__)

# What Mosquitto 2.0.11 holds per client session, read in its source (src/database.c: db__ready_for_flight,
# db__ready_for_queue, db__message_write_queued_out) and shown by tests/integration/test_broker_memory.py. Only
# QoS 1 and 2 messages count, by payload bytes (not topic, properties or Mosquitto's ~0.4 KiB per message):
# - offline (the hub restarting, or away): a new message is kept while the session holds less than
#   max_queued_bytes and fewer than max_queued_messages messages, else dropped;
# - connected: a new message is kept while the session (in flight and queued) holds less than
#   max_inflight_bytes + max_queued_bytes, and fewer than Receive Maximum + max_queued_messages, else dropped.
#   What it keeps it sends as far as the client's Receive Maximum allows: queued messages are moved in flight by
#   count, so max_inflight_bytes matters only in that sum; but at 0 (the default) a message that the Receive
#   Maximum lets in flight is never counted in bytes, and with the hub's 65,535 a connected but slow hub's
#   session had no byte bound at all (a flood of 4 MiB messages: up to 256 GiB).
# So the hub's session holds at most MAX_INFLIGHT_BYTES + MAX_QUEUED_BYTES of payload (1.25 GiB) plus ~0.4 KiB
# a message (381 B measured with a data topic: 0.36 GiB for MAX_QUEUED_MESSAGES), ~1.6 GiB; while a connected
# hub does not read its socket, the PUBLISH packets of what was sent to it hold a second copy of those payloads.

#: Messages per session at most (QoS 1 and 2 beyond those in flight); Mosquitto's default is 1000. Chosen to meet
#: :data:`MAX_QUEUED_BYTES` at ~1 KiB a message, the size of a city's data messages (the example cabinet's are
#: 531 B, the benchmark's 10-reading ones ~1 KB), so that for those it is the byte bound that holds; a count of
#: 100,000 held only 100 MB of them, 17 min at 100 msgs/s.
MAX_QUEUED_MESSAGES = 1_000_000
#: Payload bytes queued per session at most. Large enough for a hub restart or a maintenance window of a city's
#: data, small enough for the hub host (which also runs InfluxDB, the hub and Grafana): at 500 gateways,
#: - the example cabinet (edge/examples/gateway.yaml: four devices polled every 5 to 30 s, one 531 B message
#:   every 5 s on average, 106 B/s) sends 53 KB/s and 100 msgs/s in all: 1 GiB is 5.6 h and 1,000,000 messages
#:   2.8 h, so the hub may be away 2.8 h;
#: - if every cabinet sent a message a second (``publish.max_delay_ms`` 1000: an agent sends about that at most
#:   while its batches stay under 500 readings) of 1 KB: 500 KB/s and 500 msgs/s, 36 and 33 min.
#: A longer outage needs both raised (``mosquitto_max_queued_bytes`` and ``mosquitto_max_queued_messages``),
#: at ~1.4 KiB of broker memory per queued message of 1 KB.
MAX_QUEUED_BYTES = 1024**3
#: Payload bytes a connected session may hold beyond :data:`MAX_QUEUED_BYTES` (Mosquitto's default 0 counts
#: nothing sent in bytes, see above). The hub's own cap on what it holds unacknowledged, ``batch.max_pending_bytes``
#: (256 MiB by default), so that what a connected hub is working on does not eat into the queue's 1 GiB.
MAX_INFLIGHT_BYTES = 256 * 1024**2


@dataclass(frozen=True)
class SessionLimits:
    """What Mosquitto holds for one client session: ``max_queued_messages``, ``max_queued_bytes`` and
    ``max_inflight_bytes`` of mosquitto.conf(5) (0: no bound, as Mosquitto reads them)."""

    max_queued_messages: int = MAX_QUEUED_MESSAGES
    max_queued_bytes: int = MAX_QUEUED_BYTES
    max_inflight_bytes: int = MAX_INFLIGHT_BYTES

    def config_lines(self) -> list[str]:
        """The three lines of ``mosquitto.conf``."""
        return [
            f"max_queued_messages {self.max_queued_messages}",
            f"max_queued_bytes {self.max_queued_bytes}",
            f"max_inflight_bytes {self.max_inflight_bytes}",
        ]


#: The local stack's bounds, and the ansible role's defaults (tests/unit/test_ansible_defaults.py compares them).
SESSION_LIMITS: Final = SessionLimits()
#: The broker's ``max_packet_size``, so that it refuses exactly the packets larger than the contract needs
#: (``hub.mqtt.codec.MAX_PACKET_BYTES``, counted as MQTT 5 counts a packet: every byte). Mosquitto 2.0 compares
#: Remaining Length + 1 with it (``packet__read`` in lib/packet_mosq.c), leaving out the rest of the fixed header:
#: a packet of this size has a 4-byte Remaining Length (2 MiB and more), so the setting is 4 less.
MAX_PACKET_SIZE: Final = MAX_PACKET_BYTES - 4
#: The dynamic-security plugin of Debian's mosquitto package (under /usr/lib/<multiarch>/).
DYNSEC_PLUGIN: Final = "mosquitto_dynamic_security.so"
#: PBKDF2-SHA512 iterations of the plugin's password hashes (its own tool, mosquitto_ctrl, uses 101; these
#: passwords are random and the stack is local, so few is enough).
HASH_ITERATIONS: Final = 1000
#: One readiness probe: the TCP connect plus waiting for CONNACK.
PROBE_TIMEOUT_S = 2.0

#: The same rule as ``wire.v1.ID_PATTERN``; repeated so the stack does not depend on the wire package.
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


@dataclass(frozen=True)
class Account:
    """A broker account: its generated password, its ACL lines (``topic read|write|readwrite <filter>``, as in
    a Mosquitto ACL file) and the one client id it may use (None: any)."""

    username: str
    password: str
    acl: tuple[str, ...]
    client_id: str | None = None


def gateway_account(site: str, gateway: str) -> str:
    """The account name of a gateway: ``{site}.{gateway}``."""
    return f"{site}.{gateway}"


def gateway_client_id(site: str, gateway: str) -> str:
    """The client id a gateway's account is bound to: the edge agent's own (``edge.publisher.client_id``)."""
    return f"ioc-edge-{site}.{gateway}"


#: What the hub's intake and observer read (``wire.v1.INTAKE_CHANNELS`` of every gateway).
HUB_READ: Final = tuple(f"topic read ioc/v1/+/+/{c}" for c in ("data", "state", "event", "cmd/ack", "snapshot"))
#: What the hub's command connection may do.
HUB_CMD: Final = ("topic write ioc/v1/+/+/cmd", "topic read ioc/v1/+/+/cmd/ack")
#: The hub's accounts: intake, observer, commands (``mqtt.username``, ``mqtt.observer_username``,
#: ``mqtt.command_username`` in the hub's settings).
HUB_ACCOUNTS: Final = {"hub": HUB_READ, "hub-observe": HUB_READ, "hub-cmd": HUB_CMD}


def gateway_acl(site: str, gateway: str) -> tuple[str, ...]:
    root = f"ioc/v1/{site}/{gateway}"
    writes = ("state", "data", "event", "cmd/ack", "snapshot")
    return (*(f"topic write {root}/{c}" for c in writes), f"topic read {root}/cmd")


def build_accounts(gateways: Iterable[tuple[str, str]]) -> dict[str, Account]:
    """The hub's three, ``admin`` and one account per gateway, each with a fresh random password; each gateway's
    bound to its agent's client id (:func:`gateway_client_id`)."""
    accounts = {name: Account(name, secrets.token_urlsafe(24), acl) for name, acl in HUB_ACCOUNTS.items()}
    accounts["admin"] = Account("admin", secrets.token_urlsafe(24), ("topic readwrite #",))
    for site, gateway in gateways:
        for what, value in (("site", site), ("gateway", gateway)):
            if not _ID_RE.fullmatch(value):
                raise StackError(f"gateway ({site!r}, {gateway!r}): {what} must match {_ID_RE.pattern}")
        name = gateway_account(site, gateway)
        if name in accounts:
            raise StackError(f"gateway {name} is listed twice")
        accounts[name] = Account(
            name, secrets.token_urlsafe(24), gateway_acl(site, gateway), gateway_client_id(site, gateway)
        )
    return accounts


#: ACL-file lines as the plugin's ACLs (what the ansible role deploys is compared with the local stack's by it).
dynsec_acls = mosquitto_dynsec.dynsec_acls


def dynsec_config(accounts: dict[str, Account], iterations: int = HASH_ITERATIONS) -> dict[str, Any]:
    """The dynamic-security plugin's file (``common/mosquitto_dynsec.py``, as the ansible role writes it), each
    password hashed with a fresh random salt."""
    return mosquitto_dynsec.dynsec_config(
        accounts.values(), lambda _username, _password: secrets.token_bytes(mosquitto_dynsec.SALT_BYTES), iterations
    )


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds passwords or their hashes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    path.chmod(0o600)


def write_dynsec_file(path: Path, accounts: dict[str, Account]) -> None:
    _write_private(path, json.dumps(dynsec_config(accounts), indent=1) + "\n")


def write_config(
    state_dir: Path, host: str, port: int, accounts: dict[str, Account], *, limits: SessionLimits = SESSION_LIMITS
) -> Path:
    """Write ``mosquitto.conf`` and ``dynamic-security.json`` under ``state_dir``; return the config. ``limits``:
    the per-session bounds (:data:`SESSION_LIMITS` unless a test needs small ones)."""
    persistence = state_dir / "mosquitto-data"
    persistence.mkdir(mode=0o700, exist_ok=True)
    plugin = find_lib_file(DYNSEC_PLUGIN)
    if plugin is None:
        raise StackError(f"{DYNSEC_PLUGIN} not found (Debian package mosquitto 2.0); run `ioc stack ensure`")
    dynsec = state_dir / "dynamic-security.json"
    write_dynsec_file(dynsec, accounts)
    lines = [
        "# generated by ioc.stack; rewritten on every start",
        f"listener {port} {host}",
        "allow_anonymous false",
        f"plugin {plugin}",
        f"plugin_opt_config_file {dynsec}",
        f"max_packet_size {MAX_PACKET_SIZE}",
        "persistence true",
        f"persistence_location {persistence}/",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        *limits.config_lines(),
        "set_tcp_nodelay true",
    ]
    if os.geteuid() == 0:
        # Started as root, Mosquitto 2 switches to the user "mosquitto" (mosquitto.conf(5), "user"), which can
        # neither read our 0600 files nor enter a 0700 state dir; and a uid change clears PR_SET_PDEATHSIG.
        # "user root" keeps it as it was started.
        lines.append("user root")
    conf = state_dir / "mosquitto.conf"
    _write_private(conf, "\n".join(lines) + "\n")
    return conf


def start(conf: Path, log_path: Path) -> ChildProcess:
    """Start the broker with ``conf``, its open-files soft limit raised to its hard one (:func:`raise_open_files`)."""
    child = ChildProcess("mosquitto", [str(binary("mosquitto")), "-c", str(conf)], log_path, cwd=conf.parent)
    raise_open_files(child.pid)
    return child


def raise_open_files(pid: int) -> tuple[int, int] | None:
    """Raise ``pid``'s ``RLIMIT_NOFILE`` soft limit to its hard one (prlimit(2): allowed for a process of our own
    user); its limits (soft, hard) now, or None where it cannot be done (not Linux, the process gone, refused),
    which is logged: the broker then serves as many clients as its inherited limit lets it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))
    except OSError as exc:  # ProcessLookupError (it died at once: its readiness check says why), PermissionError
        log.warning("mosquitto (pid %d): could not raise its open files limit: %s", pid, exc)
        return None
    if soft < hard:
        log.info("mosquitto (pid %d): open files limit raised from %d to %d", pid, soft, hard)
    return hard, hard


class ConnectRefused(StackError):
    """The broker answered CONNACK with a failure reason code (MQTT 5 section 3.2.2.2): ``reason_code`` its value,
    ``reason`` its name (``bad user name or password``, ``not authorized``...)."""

    def __init__(self, reason_code: int, reason_string: str = "") -> None:
        detail = f": {reason_string}" if reason_string else ""
        super().__init__(f"broker refused the connection: {reason_text(reason_code)}{detail}")
        self.reason_code = reason_code
        self.reason = REASONS.get(reason_code, f"reason code 0x{reason_code:02X}")


#: The largest CONNACK the probe reads: Mosquitto's is a few bytes (its properties: limits it announces).
_PROBE_MAX_PACKET: Final = 64 * 1024


def probe(host: str, port: int, username: str, password: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """One MQTT 5 CONNECT as ``username``: returns on a successful CONNACK, after a normal DISCONNECT.

    ``timeout`` bounds the whole probe, the TCP connect (to every address of ``host`` tried) and the wait for
    CONNACK together; the name lookup is the system resolver's and not bounded by it. Raises
    :class:`ConnectRefused` on a failure CONNACK; :class:`StackError` when no TCP connection is made (refused,
    unreachable, or none within ``timeout``), no CONNACK arrives within ``timeout``, the broker closes the
    connection first or answers with anything but a CONNACK.
    """
    where = f"{host}:{port}"
    deadline = time.monotonic() + timeout
    connect = encode_connect(
        f"ioc-stack-probe-{secrets.token_hex(4)}",
        keepalive_s=10,
        clean_start=True,
        username=username,
        password=password,
    )
    try:
        with _connect_by(host, port, where, timeout, deadline) as sock:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.sendall(connect)
            connack = _read_connack(sock, where, deadline)
            if connack.reason_code >= 0x80:  # MQTT 5 section 2.4: 0x80 and above are failures
                raise ConnectRefused(connack.reason_code, connack.reason_string)
            sock.sendall(DISCONNECT_PACKET)
    except TimeoutError as exc:
        raise StackError(f"no CONNACK from {where} within {timeout:.1f} s") from exc
    except OSError as exc:
        raise StackError(f"cannot connect to {where}: {exc}") from exc


def _connect_by(host: str, port: int, where: str, timeout: float, deadline: float) -> socket.socket:
    """A TCP connection to the first of ``host``'s addresses that takes one, each tried with what is left until
    ``deadline`` (``socket.create_connection`` would give each address the whole timeout, so a name with two
    addresses that drop SYNs would take twice as long). :class:`StackError` when none connects: "no TCP
    connection within" when time ran out, else each address's error (refused, unreachable)."""
    try:
        addresses = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except OSError as exc:  # socket.gaierror: an unknown name
        raise StackError(f"cannot connect to {where}: {exc}") from exc
    errors: list[str] = []
    timed_out = False
    for family, kind, proto, _canonname, address in addresses:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        try:
            sock = socket.socket(family, kind, proto)
        except OSError as exc:  # a family this host does not support
            errors.append(str(exc))
            continue
        try:
            sock.settimeout(left)
            sock.connect(address)
        except TimeoutError:
            sock.close()
            timed_out = True
        except OSError as exc:
            sock.close()
            errors.append(str(exc))
        else:
            return sock
    others = "; ".join(dict.fromkeys(errors))
    if timed_out:
        also = f" ({others})" if others else ""
        raise StackError(f"cannot connect to {where}: no TCP connection within {timeout:.1f} s{also}")
    raise StackError(f"cannot connect to {where}: {others or 'the name has no address'}")


def _read_connack(sock: socket.socket, where: str, deadline: float) -> ConnAck:
    """The CONNACK that must be the broker's first packet, read in as many pieces as it arrives in, each read
    bounded by what is left until ``deadline`` (TimeoutError past it)."""
    reader = PacketReader(_PROBE_MAX_PACKET)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        data = sock.recv(4096)
        if not data:
            raise StackError(f"{where} closed the connection before CONNACK")
        try:
            packets = reader.feed(data)
            if packets and isinstance(packets[0], Packet) and packets[0].type == CONNACK:
                return decode_connack(packets[0].body)
        except MqttProtocolError as exc:
            raise StackError(f"{where} did not answer CONNECT with a CONNACK: {exc}") from exc
        if packets:
            raise StackError(f"{where} did not answer CONNECT with a CONNACK: its first packet is {packets[0]!r:.80}")


def wait_ready(proc: ChildProcess, host: str, port: int, *, username: str, password: str, timeout: float) -> None:
    """Until ``timeout``: a real MQTT CONNECT as ``username`` succeeds. :class:`StackError` with the log's tail."""
    deadline = time.monotonic() + timeout
    last: StackError | None = None
    while time.monotonic() < deadline:
        if not proc.running():
            raise proc.failure("exited during start-up")
        try:
            probe(host, port, username, password, min(PROBE_TIMEOUT_S, max(0.1, deadline - time.monotonic())))
        except ConnectRefused as exc:
            raise proc.failure(f"refused the {username} account ({exc})") from exc
        except StackError as exc:
            last = exc
            time.sleep(0.05)
        else:
            log.debug("mosquitto ready on %s:%d", host, port)
            return
    raise proc.failure(f"did not accept an MQTT connection within {timeout:.0f} s (last: {last})")
