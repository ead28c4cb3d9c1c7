"""Sessions: a fresh id per connect, seq from 1, and birth / will / death that the contract accepts."""

from __future__ import annotations

from edge.session import Session
from wire.v1 import DeviceInfo, State, decode, encode


def test_each_session_has_its_own_id_and_sequence() -> None:
    first, second = Session(), Session()
    assert first.id != second.id
    assert [first.next_seq() for _ in range(3)] == [1, 2, 3]
    assert second.next_seq() == 1


def test_birth_will_and_death_carry_the_session_and_pass_the_contract() -> None:
    session = Session()
    device = DeviceInfo(id="aq-1", kind="air_quality", profile="pm-sensor-rs485", interval_s=5.0, driver="modbus_tcp")
    birth = decode(encode(session.birth("0.1.0", [device])), State)
    will = decode(encode(session.will()), State)
    death = decode(encode(session.death()), State)
    assert (birth.online, birth.session, birth.agent, birth.devices) == (True, session.id, "0.1.0", [device])
    assert birth.ts is not None
    assert (will.online, will.session, will.reason, will.ts) == (False, session.id, "connection lost", None)
    assert (death.online, death.session, death.reason) == (False, session.id, "shutdown")
