"""The example rules file parses; a bad rules file or inventory stops ``ioc hub`` with exit code 2 and a message
naming the file, the entry and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.alerts.rules import BitsRule, OfflineRule, StaleRule, ThresholdRule, load_rules
from hub.cli import check_operations_files
from hub.config import AlertSettings, HubSettings, RegistrySettings
from hub.errors import ConfigError

EXAMPLE = Path(__file__).parents[3] / "hub" / "alerts" / "example-rules.yaml"


def test_example_rules_file_parses() -> None:
    rules = load_rules(EXAMPLE)
    kinds = {type(r) for r in rules.rules}
    assert kinds == {ThresholdRule, BitsRule, OfflineRule, StaleRule}
    assert rules.webhooks[0].min_severity == "major"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("rules.yaml", "rules:\n  - {id: x, type: threshold, metric: pm25, above: 1, clear: 5}\n",
         "rules[0] (x): clear (5) must not be above 'above' (1)"),
        ("rules.yaml", "rules: [", "not valid YAML"),
        ("inventory.csv", "id,kind\nA,camera\n", "inventory.csv: row 2 (A): id: String should match"),
    ],
)  # fmt: skip
def test_bad_operations_files_are_config_errors(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    if name.startswith("rules"):
        settings = HubSettings(alerts=AlertSettings(rules_file=path))
    else:
        settings = HubSettings(registry=RegistrySettings(inventory_file=path))
    with pytest.raises(ConfigError) as err:
        check_operations_files(settings)
    assert expected in str(err.value)
    assert str(path) in str(err.value)
