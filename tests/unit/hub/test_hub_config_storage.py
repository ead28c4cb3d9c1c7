"""Settings of the storage side: spill, quarantine, cardinality, database creation, the hub's own metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from hub_settings_support import hub_env_only, write_hub_yaml

from hub.config import load_settings
from hub.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    hub_env_only(monkeypatch)


def test_defaults_keep_the_spill_off_the_quarantine_in_memory_and_a_metric_cap() -> None:
    s = load_settings()
    assert s.spill.dir is None
    assert s.spill.max_bytes == 1024**3
    assert s.dead_letters.path is None
    assert s.cardinality.max_metrics_per_device == 512
    assert s.cardinality.enrichment_tags == ("district", "zone", "area", "operator")
    assert (s.influx.create_database, s.influx.retention) == (True, None)
    assert s.metrics.interval_s == 10.0


def test_a_full_storage_config_is_read(tmp_path: Path) -> None:
    path = write_hub_yaml(
        tmp_path,
        "spill: {dir: /var/lib/ioc-hub/spill, max_bytes: 1048576}\n"
        "dead_letters: {path: /var/lib/ioc-hub/dead.sqlite, keep: 5000}\n"
        "cardinality: {enrichment_tags: [district, ward], max_metrics_per_device: 64}\n"
        "influx: {retention: 90d}\n"
        "metrics: {interval_s: 30, instance: hub-a}\n",
    )
    s = load_settings(path)
    assert s.spill.dir == Path("/var/lib/ioc-hub/spill")
    assert s.dead_letters.keep == 5000
    assert s.cardinality.enrichment_tags == ("district", "ward")
    assert s.influx.retention == "90d"
    assert s.metrics.instance == "hub-a"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("cardinality: {enrichment_tags: [site]}\n", "cardinality.enrichment_tags: site are tags of their own"),
        ("cardinality: {enrichment_tags: [Bad Tag]}\n", "cardinality.enrichment_tags.0: String should match"),
        ("influx: {retention: 3 days}\n", "influx.retention: String should match"),
        ("spill: {max_bytes: 10}\n", "spill.max_bytes: Input should be greater than or equal to 1024"),
        ("spill: {folder: /tmp}\n", "spill.folder: unknown key"),
        ("metrics: {interval_s: -1}\n", "metrics.interval_s: Input should be greater than or equal to 0"),
    ],
)
def test_bad_storage_settings_name_the_file_and_field(tmp_path: Path, text: str, error: str) -> None:
    path = write_hub_yaml(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"{path}: {error}"):
        load_settings(path)
