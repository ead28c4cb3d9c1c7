"""SNMPv2c to one sign: GET and SET of NTCIP objects with pysnmp, its errors turned into the device errors.

This is the adapter around pysnmp (its asyncio v3arch API): nothing of pysnmp crosses it.

- no answer within ``timeout_s`` (after ``retries`` re-sends), an address that does not resolve ->
  :class:`DeviceUnavailable`;
- an error-status in the answer -> :class:`SnmpErrorStatus` (a :class:`DeviceResponseError`) naming the object;
- an object of the wrong type -> :class:`DeviceResponseError` naming it (or, for an object the caller calls
  optional, left out and logged once); an object the agent does not serve is left out and logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Collection, Sequence
from typing import Any, Final

from pyasn1.type import univ  # type: ignore[import-untyped]
from pysnmp.error import PySnmpError  # type: ignore[import-untyped]
from pysnmp.hlapi.v3arch.asyncio import (  # type: ignore[import-untyped]
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    get_cmd,
    set_cmd,
)
from pysnmp.proto import errind, rfc1902, rfc1905  # type: ignore[import-untyped]

from devices.drivers.ntcip import mib
from devices.drivers.ntcip.mib import MibObject
from devices.errors import DeviceResponseError, DeviceUnavailable

log = logging.getLogger(__name__)

Oid = tuple[int, ...]
Raw = int | bytes

#: Added to the worst case of pysnmp's own timeout and re-sends, for the outer guard around each request.
TIMEOUT_MARGIN_S: Final = 0.5
#: SNMPv2 error-status names (RFC 3416 section 3).
ERROR_STATUS: Final[dict[int, str]] = {
    1: "tooBig",
    2: "noSuchName",
    3: "badValue",
    4: "readOnly",
    5: "genErr",
    6: "noAccess",
    7: "wrongType",
    8: "wrongLength",
    9: "wrongEncoding",
    10: "wrongValue",
    11: "noCreation",
    12: "inconsistentValue",
    13: "resourceUnavailable",
    14: "commitFailed",
    15: "undoFailed",
    16: "authorizationError",
    17: "notWritable",
    18: "inconsistentName",
}
#: Serialises the building of SnmpEngines in worker threads (see :meth:`SnmpClient.open`).
_ENGINE_BUILD_LOCK: Final = threading.Lock()


def _build_engine() -> Any:
    with _ENGINE_BUILD_LOCK:
        return SnmpEngine()


class SnmpErrorStatus(DeviceResponseError):
    """The sign answered with a non-zero error-status; ``status`` is its number, ``obj`` the object it names."""

    def __init__(self, message: str, status: int, obj: str) -> None:
        super().__init__(message)
        self.status = status
        self.obj = obj


def object_of(oid: Oid) -> MibObject:
    """The object an instance OID belongs to."""
    for obj in mib.OBJECTS.values():
        if oid[: len(obj.oid)] == obj.oid:
            return obj
    raise KeyError(oid)


class SnmpClient:
    """One engine (one UDP socket) talking SNMPv2c to one agent; ``where`` prefixes every error."""

    def __init__(
        self,
        where: str,
        host: str,
        port: int,
        *,
        community: str,
        write_community: str | None,
        timeout_s: float,
        retries: int,
    ) -> None:
        self.where = where
        self.host = host
        self.port = port
        self.community = community
        self.write_community = write_community
        self.timeout_s = timeout_s
        self.retries = retries
        self.guard_s = timeout_s * (retries + 1) + TIMEOUT_MARGIN_S
        self._engine: Any = None
        self._target: Any = None
        self._open_lock = asyncio.Lock()
        self._unsupported: set[str] = set()
        self._mistyped: set[str] = set()

    async def open(self) -> None:
        """Build the engine and resolve the address (UDP: nothing is sent yet); once, however many callers."""
        async with self._open_lock:  # a command and a poll may arrive together: make one engine, not two
            if self._engine is not None:
                return
            # Building an engine loads pysnmp's MIB modules: about 0.1 s of CPU that would stall every other
            # device of the agent, so it runs in a thread (one at a time: pysnmp does not promise thread-safe
            # loading).
            engine = await asyncio.to_thread(_build_engine)
            try:
                target = await UdpTransportTarget.create(
                    (self.host, self.port), timeout=self.timeout_s, retries=self.retries
                )
            except PySnmpError as exc:
                with contextlib.suppress(Exception):
                    engine.close_dispatcher()
                raise DeviceUnavailable(f"{self.where}: cannot resolve the address ({exc})") from exc
            self._engine, self._target = engine, target

    async def close(self) -> None:
        """Close the engine's socket. Never raises."""
        engine, self._engine, self._target = self._engine, None, None
        if engine is not None:
            with contextlib.suppress(Exception):  # pysnmp may raise anything while tearing down its dispatcher
                engine.close_dispatcher()

    async def get(
        self,
        objects: Sequence[MibObject],
        index: Oid | None = None,
        *,
        quiet: bool = False,
        optional: Collection[str] = (),
    ) -> dict[str, Raw]:
        """GET ``objects`` (scalars, or the table row ``index``); values by object name, checked against their
        syntax. Unsupported objects are absent (logged once unless ``quiet``); so is an object named in
        ``optional`` that comes back with the wrong type (logged once); any other wrong type is an error."""
        oids = [obj.row(*index) if index else obj.scalar() for obj in objects]
        bindings = await self._call(get_cmd, self.community, [ObjectType(ObjectIdentity(o)) for o in oids], objects)
        values: dict[str, Raw] = {}
        for obj, (_, value) in zip(objects, bindings, strict=False):
            name = obj.name
            if isinstance(value, (rfc1905.NoSuchObject, rfc1905.NoSuchInstance, rfc1905.EndOfMibView)):
                if not quiet and name not in self._unsupported:
                    self._unsupported.add(name)
                    log.warning("%s: the sign does not support %s (%s)", self.where, name, type(value).__name__)
                continue
            try:
                values[name] = self._check_type(obj, value)
            except DeviceResponseError as exc:
                if name not in optional:
                    raise
                if name not in self._mistyped:
                    self._mistyped.add(name)
                    log.warning("%s: left out of the readings: %s", self.where, exc)
        return values

    async def set(self, bindings: Sequence[tuple[Oid, Any]]) -> None:
        """SET the instances to the (pysnmp-typed) values in one PDU, with the write community."""
        if self.write_community is None:
            raise DeviceResponseError(f"{self.where}: no write community configured")
        await self._call(
            set_cmd,
            self.write_community,
            [ObjectType(ObjectIdentity(oid), value) for oid, value in bindings],
            [object_of(oid) for oid, _ in bindings],
        )

    def _check_type(self, obj: MibObject, value: Any) -> Raw:
        """The value as int or bytes; an answer of another type is the sign's error, named."""
        # Any integer type passes (Integer32, Unsigned32, Gauge32...): agents are loose with the tag of INTEGERs.
        if obj.syntax == "integer" and isinstance(value, univ.Integer):
            return int(value)
        if obj.syntax == "octets" and isinstance(value, rfc1902.OctetString):
            return bytes(value)
        wanted = "an INTEGER" if obj.syntax == "integer" else "an OCTET STRING"
        raise DeviceResponseError(f"{self.where}: {obj.name} should be {wanted}, the sign sent {type(value).__name__}")

    async def _call(self, command: Any, community: str, objects: list[Any], named: Sequence[MibObject]) -> list[Any]:
        if self._engine is None:
            raise DeviceUnavailable(f"{self.where}: not open")
        op = "SET" if command is set_cmd else "GET"
        try:
            async with asyncio.timeout(self.guard_s):
                indication, status, index, bindings = await command(
                    self._engine,
                    # NTCIP 1203 signs speak SNMPv1/v2c (v3 is optional in NTCIP 1103): the community it is.
                    CommunityData(community, mpModel=1),  # noqa: S508
                    self._target,
                    ContextData(),
                    *objects,
                    lookupMib=False,
                )
        except TimeoutError as exc:
            raise DeviceUnavailable(f"{self.where}: no answer to {op} within {self.guard_s:g} s") from exc
        except PySnmpError as exc:
            raise DeviceUnavailable(f"{self.where}: {op} failed: {exc}") from exc
        if indication:
            if isinstance(indication, errind.RequestTimedOut):
                tries = self.retries + 1
                raise DeviceUnavailable(f"{self.where}: no answer to {op} within {self.timeout_s:g} s ({tries} tries)")
            raise DeviceResponseError(f"{self.where}: {op}: {indication}")
        if int(status):
            number = int(status)
            at = int(index)
            # The error index names the binding at fault; 0 (as with tooBig) blames the request as a whole.
            name = named[at - 1].name if 0 < at <= len(named) else f"of {len(objects)} objects"
            hint = ": lower max_objects_per_request" if number == 1 else ""
            raise SnmpErrorStatus(
                f"{self.where}: {op} {name}: error-status {ERROR_STATUS.get(number, 'unknown')} ({number}){hint}",
                number,
                name,
            )
        if len(bindings) != len(objects):
            raise DeviceResponseError(
                f"{self.where}: {op}: {len(bindings)} objects in the answer, asked {len(objects)}"
            )
        return list(bindings)
