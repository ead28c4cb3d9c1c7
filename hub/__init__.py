"""The central hub: MQTT intake, decoding against the wire contract, InfluxDB writer, HTTP API.

Imports ``wire`` and its own libraries (paho-mqtt, httpx, FastAPI, uvicorn); never ``devices`` or ``edge``.
"""
