"""The central hub: MQTT intake, decoding against the wire contract, InfluxDB writer, HTTP API.

Imports ``wire`` and its own libraries (httpx, FastAPI, uvicorn, SQLAlchemy); never ``devices``, ``edge`` or an MQTT
library (the hub speaks MQTT itself: ``hub.mqtt``).
"""
