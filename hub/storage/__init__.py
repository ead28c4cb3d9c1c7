"""Where accepted data is kept: the InfluxDB writer (:mod:`~hub.storage.influx`) over the hub's own HTTP client
(:mod:`~hub.storage.httpclient`), line protocol (:mod:`~hub.storage.lineproto`), the on-disk spill while InfluxDB is
down or slow (:mod:`~hub.storage.spill`) and the persistent quarantine of dead letters
(:mod:`~hub.storage.deadletter`).

Below the ingest pipeline and the operations side: it imports none of them (``tests/unit/test_layering.py``).
"""
