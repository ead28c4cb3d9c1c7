"""The hub's own health: the Prometheus text and the hub_health points, from one snapshot."""

from __future__ import annotations

import re

from hub.metrics import HealthReporter, render_prometheus
from hub.stats import GatewayCounts, HubStats, InfluxStats, IngestStats, MqttStats

_SAMPLE = re.compile(r'^ioc_hub_[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+]+$')


def snapshot(received: int, readings: int) -> HubStats:
    stats = IngestStats(messages_received=received, readings=readings, lines_written=readings, acks=received)
    stats.count_dead_letter("malformed")
    stats.write_seconds.observe(0.02)
    stats.write_seconds.observe(3.0)
    stats.batch_size_lines.observe(5000)
    return HubStats(
        **dict(stats.snapshot()),
        seq_gaps_by_gateway={"site-a/gw-1": 3},
        pending_messages=7,
        pending_bytes=700,
        queued_messages=1,
        batch_lines=0,
        ready_lines=25,
        writes_in_flight=2,
        spill_batches=1,
        spill_lines=10,
        spill_bytes=4096,
        dead_letters_unsaved=0,
        gateways=GatewayCounts(known=1, online=1),
        refusals_by_gateway={},
        mqtt=MqttStats(
            connected=True,
            received=received,
            connects=1,
            disconnects=0,
            acks_sent=received,
            acks_of_old_connection=0,
            not_handed_over=0,
            refused_packets=0,
        ),
        influx=InfluxStats(writes_failing=False),
    )


def test_prometheus_text_is_well_formed_and_carries_the_figures() -> None:
    text = render_prometheus(snapshot(100, 1000))
    assert text.endswith("\n")
    for line in text.splitlines():
        if not line.startswith("#"):
            assert _SAMPLE.match(line), line
    assert "ioc_hub_messages_received_total 100\n" in text
    assert 'ioc_hub_dead_letters_total{kind="malformed"} 1\n' in text
    assert 'ioc_hub_seq_gaps_total{gateway="site-a/gw-1"} 3\n' in text
    assert "ioc_hub_spill_bytes 4096\n" in text
    assert "ioc_hub_writes_in_flight 2\n" in text
    assert "ioc_hub_ready_lines 25\n" in text
    assert "ioc_hub_mqtt_connected 1\n" in text
    assert 'ioc_hub_write_seconds_bucket{le="0.025"} 1\n' in text
    assert 'ioc_hub_write_seconds_bucket{le="+Inf"} 2\n' in text
    assert "ioc_hub_write_seconds_count 2\n" in text
    assert "# TYPE ioc_hub_batch_size_lines histogram\n" in text


async def test_health_points_give_rates_over_the_interval_and_gaps_per_gateway() -> None:
    reporter = HealthReporter(dict, writer=None, instance="hub 1", interval_s=10)  # type: ignore[arg-type]
    first = reporter.lines(snapshot(100, 1000), now=1000.0)
    second = reporter.lines(snapshot(300, 3000), now=1010.0)
    assert first[0].startswith("hub_health,hub=hub\\ 1 ")
    assert "messages_per_s=0.0" in first[0]
    assert "messages_per_s=20.0" in second[0]
    assert "readings_per_s=200.0" in second[0]
    assert "spill_bytes=4096.0" in second[0]
    assert "storage_ok=true" in second[0]
    assert second[0].endswith(" 1010000")
    assert second[1] == "hub_seq_gaps,gateway=gw-1,hub=hub\\ 1,site=site-a seq_gaps=3.0 1010000"
