"""Device simulators: real protocol servers on loopback sockets, for tests, the demo and bench work.

- :mod:`devices.sim.modbus`: :class:`~devices.sim.modbus.ModbusSimulator`, one Modbus TCP unit per profile,
  values moving per the profiles' ``sim`` hints, faults on demand (offline, busy, pinned values).

Run one from the shell with ``ioc sim modbus --profile ID [--profile ID ...] --port 0`` (:mod:`devices.cli`).
"""
