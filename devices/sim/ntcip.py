"""An NTCIP 1203 sign simulator: an SNMPv2c agent over a real UDP socket, values moving, faults on demand.

``async with NtcipSimulator() as sim:`` listens on 127.0.0.1 (port 0 picks a free port: ``sim.port``) and serves
the objects of :mod:`devices.drivers.ntcip.mib` for one full-matrix sign: GET, GETNEXT (so ``snmpwalk`` works),
GETBULK and SET, community ``public`` for reading and ``administrator`` for writing (a wrong community is
dropped, as agents do). Messages follow the standard's state machine (NTCIP 1203 v03 clause 5.6/5.7): a
changeable row is set to ``modifyReq``, written, set to ``validateReq`` (the MULTI string is checked, the CRC
computed), and ``dmsActivateMessage`` with the right CRC makes it the current message (``dmsMsgTableSource``).

Signals: brightness follows the daylight of the simulated local time (photocell level, brightness level, light
output); temperatures follow the day with noise (the cabinet warmer than the air, the housing warmer in sun);
pixels fail now and then (``pixelFailureTableNumRows`` grows, the ``pixel`` bit of ``shortErrorStatus`` sets), and
rarely one of the two power supplies fails for a while (``dmsPowerFailureStatusMap``, the ``power`` bit).

Fault knobs: :meth:`set_silent` (requests are dropped: the client times out), :meth:`set_garbage` (answers with
wrong types, ``noSuchObject`` for everything, or undecodable bytes), :meth:`set_delay` (answers late),
:meth:`set_error` (answers ``genErr`` or another error status), :meth:`pin` (hold an object at a value),
:meth:`remove` (stop serving an object, as a sign that does not implement it), :meth:`set_max_message_size`
(answer ``tooBig`` beyond a message size, as small controllers do).

The sign itself (message table, state machine, signals) is :class:`devices.sim.ntcip_sign.SignState`; this
module is the agent around it, written on pysnmp's message layer (:mod:`pysnmp.proto.api`, BER via pyasn1)
rather than its MIB instrumentation, so that every answer, including the wrong ones the knobs ask for, is under
the test's control.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Literal, cast

from pyasn1.codec.ber import decoder, encoder  # type: ignore[import-untyped]
from pyasn1.error import PyAsn1Error  # type: ignore[import-untyped]
from pysnmp.proto import api  # type: ignore[import-untyped]

from common.tasks import cancel_and_wait
from devices.drivers.ntcip import mib
from devices.sim.ntcip_sign import GEN_ERR, NO_ERROR, TOO_BIG, Oid, SignState, Value

__all__ = ["GEN_ERR", "Garbage", "NtcipSimulator"]

log = logging.getLogger(__name__)

Garbage = Literal["wrong_type", "no_such_object", "bytes"]

_V2C: Final = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]


def _encode_value(value: Value) -> Any:
    if isinstance(value, bytes):
        return _V2C.OctetString(value)
    return _V2C.Integer(value)


def _wrong_type(value: Value) -> Any:
    """The "garbage" answer of an object: an integer where a string is due and the other way round."""
    if isinstance(value, bytes):
        return _V2C.Integer(-1)
    return _V2C.OctetString(b"\xffgarbage")


class _AgentProtocol(asyncio.DatagramProtocol):
    def __init__(self, sim: NtcipSimulator) -> None:
        self.sim = sim
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sim.handle_datagram(data, addr)


class NtcipSimulator:
    """One simulated NTCIP 1203 sign behind an SNMPv2c agent; an async context manager."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        community: str = "public",
        write_community: str = "administrator",
        update_interval_s: float = 1.0,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
        utc_offset_s: float | None = None,
        pixel_failure_probability: float = 0.002,
        power_failure_probability: float = 0.0005,
    ) -> None:
        if update_interval_s <= 0:
            raise ValueError("update_interval_s must be > 0")
        self.host = host
        self.requested_port = port
        self.community = community.encode()
        self.write_community = write_community.encode()
        self.update_interval_s = update_interval_s
        offset = time.localtime().tm_gmtoff if utc_offset_s is None else utc_offset_s
        self.state = SignState(random.Random(seed), clock, offset, pixel_failure_probability, power_failure_probability)
        self.requests = 0
        self.silent = False
        self.garbage: Garbage | None = None
        self.delay_s = 0.0
        self.error_status: int | None = None
        self.error_remaining: int | None = None
        #: Largest answer the agent sends (NTCIP controllers may be as small as 484 octets); larger is tooBig.
        self.max_message_size: int | None = None
        self._protocol: _AgentProtocol | None = None
        self._updater: asyncio.Task[None] | None = None
        self._pending: set[asyncio.TimerHandle] = set()
        self._port: int | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The UDP port actually bound (useful with ``port=0``)."""
        if self._port is None:
            raise RuntimeError("the simulator is not running")
        return self._port

    def describe(self) -> dict[str, object]:
        """What the CLI prints: where it listens and the communities."""
        return {
            "host": self.host,
            "port": self.port,
            "community": self.community.decode(),
            "write_community": self.write_community.decode(),
        }

    async def __aenter__(self) -> NtcipSimulator:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _AgentProtocol(self), local_addr=(self.host, self.requested_port)
        )
        self._protocol = protocol
        self._port = int(transport.get_extra_info("sockname")[1])
        self._updater = asyncio.create_task(self._update_loop(), name=f"ntcip-sim-{self._port}")
        log.info("NTCIP 1203 sign simulator on udp %s:%d", self.host, self._port)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop updating, drop delayed answers, close the socket."""
        updater, self._updater = self._updater, None
        if updater is not None:
            await cancel_and_wait([updater])
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
        self._port = None
        if updater is not None and updater.done() and not updater.cancelled():
            updater.result()  # an update loop that crashed is a bug of the simulator: raised once it is closed

    async def _update_loop(self) -> None:
        while True:
            await asyncio.sleep(self.update_interval_s)
            self.state.tick()

    # --- knobs ---------------------------------------------------------------------------------------------
    def set_silent(self, silent: bool = True) -> None:
        """A silent sign drops every request: the client times out."""
        self.silent = silent

    def set_garbage(self, mode: Garbage | None) -> None:
        """Answer wrongly: ``wrong_type`` (integers as strings and back), ``no_such_object`` (every object
        reported unsupported) or ``bytes`` (a datagram that is not SNMP). ``None`` answers properly again."""
        self.garbage = mode

    def set_delay(self, seconds: float) -> None:
        """Answer every request ``seconds`` late (0 is on time)."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self.delay_s = seconds

    def set_error(self, status: int | None = GEN_ERR, count: int | None = None) -> None:
        """Answer the next ``count`` requests (all while ``None``) with ``status`` (genErr by default) on the
        first binding. ``set_error(None)`` answers properly again."""
        self.error_status = status
        self.error_remaining = count

    def set_max_message_size(self, octets: int | None) -> None:
        """Answer ``tooBig`` when an answer would be longer than ``octets`` (``None``: no limit)."""
        if octets is not None and octets < 64:
            raise ValueError("octets must be >= 64")
        self.max_message_size = octets

    def pin(self, obj: mib.MibObject, value: Value, *index: int) -> None:
        """Hold an object instance (a scalar unless ``index`` is given) at ``value`` until :meth:`unpin`."""
        self.state.pinned[obj.row(*index) if index else obj.scalar()] = value

    def unpin(self, obj: mib.MibObject, *index: int) -> None:
        self.state.pinned.pop(obj.row(*index) if index else obj.scalar(), None)

    def remove(self, obj: mib.MibObject, *index: int) -> None:
        """Serve an object instance no more (``noSuchInstance``), like a sign that does not implement it."""
        self.state.removed.add(obj.row(*index) if index else obj.scalar())

    def restore(self, obj: mib.MibObject, *index: int) -> None:
        self.state.removed.discard(obj.row(*index) if index else obj.scalar())

    def value(self, obj: mib.MibObject, *index: int) -> Value:
        """What a client reads now."""
        return self.state.snapshot()[obj.row(*index) if index else obj.scalar()]

    def current_message(self) -> bytes:
        """The MULTI string the sign shows now."""
        return self.state.current.multi

    # --- the agent -----------------------------------------------------------------------------------------
    def handle_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        self.requests += 1
        if self.silent:
            return
        try:
            answer = self._answer(data)
        except (PyAsn1Error, ValueError, KeyError, IndexError, TypeError) as exc:
            log.debug("dropping an undecodable request from %s: %s", addr, exc)
            return
        if answer is None:
            return
        if self.delay_s:
            loop = asyncio.get_running_loop()
            handle = loop.call_later(self.delay_s, self._send, answer, addr)
            self._pending.add(handle)
        else:
            self._send(answer, addr)

    def _send(self, answer: bytes, addr: tuple[str, int]) -> None:
        self._pending = {h for h in self._pending if not h.cancelled() and h.when() > asyncio.get_running_loop().time()}
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None and not protocol.transport.is_closing():
            protocol.transport.sendto(answer, addr)

    def _answer(self, data: bytes) -> bytes | None:
        if api.decodeMessageVersion(data) != api.SNMP_VERSION_2C:
            return None  # v1 and v3 are not spoken here; agents drop what they do not speak
        request, _ = decoder.decode(data, asn1Spec=_V2C.Message())
        pdu = _V2C.apiMessage.get_pdu(request)
        community = bytes(_V2C.apiMessage.get_community(request))
        is_set = pdu.isSameTypeWith(_V2C.SetRequestPDU())
        if community != (self.write_community if is_set else self.community):
            return None  # wrong community: dropped (RFC 3584 agents count it, never answer)
        if self.garbage == "bytes":
            return b"\x30\x03\x02\x01" + bytes(self.state.rng.getrandbits(8) for _ in range(12))
        response = _V2C.apiMessage.get_response(request)
        rsp_pdu = _V2C.apiMessage.get_pdu(response)
        bindings = [(tuple(oid), value) for oid, value in _V2C.apiPDU.get_varbinds(pdu)]
        status, index, out = self._process(pdu, bindings)
        if self.error_status is not None and (self.error_remaining is None or self.error_remaining > 0):
            if self.error_remaining is not None:
                self.error_remaining -= 1
            status, index = self.error_status, 1
            out = [(oid, _V2C.null) for oid, _ in bindings]
        _V2C.apiPDU.set_error_status(rsp_pdu, status)
        _V2C.apiPDU.set_error_index(rsp_pdu, index)
        _V2C.apiPDU.set_varbinds(rsp_pdu, out)
        encoded = bytes(encoder.encode(response))
        if self.max_message_size is not None and len(encoded) > self.max_message_size:
            # RFC 3416 section 4.2.1: an answer that does not fit is tooBig, with the request's bindings... left
            # out: the error index is 0 and no value is sent.
            _V2C.apiPDU.set_error_status(rsp_pdu, TOO_BIG)
            _V2C.apiPDU.set_error_index(rsp_pdu, 0)
            _V2C.apiPDU.set_varbinds(rsp_pdu, [])
            encoded = bytes(encoder.encode(response))
        return encoded

    def _process(self, pdu: Any, bindings: list[tuple[Oid, Any]]) -> tuple[int, int, list[tuple[Oid, Any]]]:
        if pdu.isSameTypeWith(_V2C.SetRequestPDU()):
            status, index = self.state.set_many(bindings)
            return status, index, bindings
        snapshot = self.state.snapshot()
        if pdu.isSameTypeWith(_V2C.GetRequestPDU()):
            return NO_ERROR, 0, [(oid, self._get(snapshot, oid)) for oid, _ in bindings]
        order = sorted(snapshot)
        if pdu.isSameTypeWith(_V2C.GetNextRequestPDU()):
            return NO_ERROR, 0, [self._next(snapshot, order, oid) for oid, _ in bindings]
        if pdu.isSameTypeWith(_V2C.GetBulkRequestPDU()):
            return NO_ERROR, 0, self._bulk(pdu, snapshot, order, bindings)
        raise ValueError("unsupported PDU")

    def _get(self, snapshot: dict[Oid, Value], oid: Oid) -> Any:
        if self.garbage == "no_such_object":
            return _V2C.NoSuchObject("")
        if oid not in snapshot:
            known_column = any(oid[: len(o.oid)] == o.oid for o in mib.OBJECTS.values())
            return _V2C.NoSuchInstance("") if known_column else _V2C.NoSuchObject("")
        value = snapshot[oid]
        return _wrong_type(value) if self.garbage == "wrong_type" else _encode_value(value)

    def _next(self, snapshot: dict[Oid, Value], order: list[Oid], oid: Oid) -> tuple[Oid, Any]:
        at = bisect.bisect_right(order, oid)
        if at >= len(order):
            return oid, _V2C.EndOfMibView("")
        following = order[at]
        return following, self._get(snapshot, following)

    def _bulk(
        self, pdu: Any, snapshot: dict[Oid, Value], order: list[Oid], bindings: list[tuple[Oid, Any]]
    ) -> list[tuple[Oid, Any]]:
        non_repeaters = int(_V2C.apiBulkPDU.get_non_repeaters(pdu))
        repetitions = min(int(_V2C.apiBulkPDU.get_max_repetitions(pdu)), 50)
        out = [self._next(snapshot, order, oid) for oid, _ in bindings[:non_repeaters]]
        cursors = [oid for oid, _ in bindings[non_repeaters:]]
        for _ in range(repetitions):
            if not cursors:
                break
            step = [self._next(snapshot, order, oid) for oid in cursors]
            out.extend(step)
            cursors = [oid for oid, _ in step]
            if all(o not in snapshot for o in cursors):
                break
        return out
