"""Health of gateways and devices: a state machine each, with hysteresis, persisted and written to InfluxDB."""
