"""The operations side of the hub: what city operators act on, beside the storing of readings.

:mod:`~hub.operations.operations` composes it (:class:`~hub.operations.operations.Operations`: database, registry,
health, alerts, webhooks, commands, tokens and live events with one lifecycle, and the ingest's observers);
:mod:`~hub.operations.commands` sends commands to devices through the hub's MQTT publisher and records their
outcomes; :mod:`~hub.operations.aqi` is the hourly VN_AQI job (measurement ``vn_aqi``).

Below the HTTP layer: ``hub/routes/`` reads the operations side, not the other way round, but for the live events'
fan-out (:class:`hub.routes.eventhub.EventHub`), which the composition feeds (``tests/unit/test_layering.py``).
"""
