"""The operations side of the hub: what city operators act on, beside the storing of readings.

:mod:`~hub.operations.commands` sends commands to devices through the hub's MQTT publisher and records their
outcomes; :mod:`~hub.operations.aqi` is the hourly VN_AQI job (measurement ``vn_aqi``).

Below the HTTP layer: ``hub/routes/`` reads the operations side, never the other way round
(``tests/unit/test_layering.py``).
"""
