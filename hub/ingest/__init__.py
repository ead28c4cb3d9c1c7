"""The ingest pipeline: decode -> lines -> batch -> write -> acknowledge.

Messages arrive on a bounded queue from the intake (the MQTT adapter), unacknowledged. Each is decoded against
the wire contract by its channel, turned into InfluxDB lines (:mod:`hub.ingest.points`), and added to the current batch;
a batch is closed when it holds ``max_lines`` lines or its first message has waited ``max_delay_ms``, and written
with up to ``max_in_flight`` writes at once. A closed batch that finds every slot taken waits in a ready queue
while decoding goes on (the CPU work is done while InfluxDB is busy, not after); batches that waited go out merged,
up to four times ``max_lines`` lines per write, so a backlog after a slow moment is written in fewer, larger
requests. Everything waiting counts toward ``max_pending_messages``, and the waiting lines are capped at eight
times ``max_lines`` (past that the intake waits too), so memory stays bounded by lines as well as by messages.

Acknowledgements go back to the broker **only after storage** (InfluxDB answered 204), and in the order the
messages arrived (MQTT 5 section 4.6 asks a receiver to send PUBACKs in order): a message that needs no write
(a bad payload, a command ack, a stale will) is acknowledged once everything received before it is.

- Retryable write failures (:class:`~hub.errors.StorageUnavailable`) are retried with capped exponential backoff
  and jitter, holding the acknowledgements; memory stays bounded because the pipeline stops taking messages at
  ``max_pending_messages`` unacknowledged messages, the queue fills, and the MQTT thread blocks (back-pressure to
  the broker, which keeps the messages in the hub's session).
- A refused write (:class:`~hub.errors.StorageRejected`, HTTP 400/413) is split in halves by message until the
  message that causes it is found; that one is dead-lettered and acknowledged. Lines InfluxDB already stored
  from a partial write are written again, which is harmless: a point with the same series and time overwrites.
- Bad topics and payloads are dead-lettered, counted by kind, logged once per kind, and acknowledged once the
  quarantine (:class:`~hub.storage.deadletter.Quarantine`) has saved them when it is persistent.
- With a spill (:mod:`hub.storage.spill`), a batch InfluxDB cannot take (down, timing out) is appended to the spill
  instead, and its messages are acknowledged once it is fsynced there; while InfluxDB is down every batch goes
  straight to the spill, and so does a batch that finds every write slot taken by writes running for
  ``spill_after_s`` (InfluxDB slow but answering). A write-back task writes the spill back to InfluxDB
  oldest first (its first success is what ends the outage), while intake goes on. A full spill falls back to
  holding the acknowledgements.
- Cardinality guard (:class:`~hub.ingest.points.MetricCap`): metric names beyond the per-device cap are left out of
  the lines and the message is also quarantined with what was refused; the rest of it is stored.

Hooks for the rest of the hub (the device registry, health tracking):

- :meth:`Pipeline.add_observer`: called synchronously, in the event loop, with ``(site, gateway, payload)`` for
  every message that decodes (state, event, data, cmd/ack), before it is stored. Observers must be cheap (a dict
  update, no I/O, no awaiting): they run on the hot path. One that raises is logged (once per observer and error
  type) and counted in ``observer_errors``; the message is stored all the same.
- :meth:`Pipeline.set_enrichment`: ``device -> {tag: value}`` (e.g. the district), checked against the tag
  allow-list and swapped in atomically; every line built afterwards carries the device's tags.

The package: :mod:`hub.ingest.messages` (what flows in and the interfaces around the pipeline),
:mod:`hub.ingest.decode` (the fast ``data`` decoder), :mod:`hub.ingest.pipeline` (intake side: decode, lines,
dead letters, observers; control and status) and :mod:`hub.ingest.storage` (batches, writes, spill, write-back,
acknowledgements in order).
"""

from hub.ingest.messages import Acker, InboundMessage, LineWriter, MessageSource, Observer, RetryPolicy
from hub.ingest.pipeline import Pipeline

__all__ = ["Acker", "InboundMessage", "LineWriter", "MessageSource", "Observer", "Pipeline", "RetryPolicy"]
