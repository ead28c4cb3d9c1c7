"""The outbox settings: where the file goes (default next to the config, relative to it, absolute, in memory,
from the environment), and errors that name the field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.config import load_config
from edge.errors import ConfigError
from edge.outbox_sqlite import SqliteOutbox, outbox_for
from edge.outbox_store import MEMORY
from edge.stats import EdgeStats
from wire.v1 import Reading


@pytest.fixture(autouse=True)
def _no_edge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("IOC_EDGE_"):
            monkeypatch.delenv(name)


def write(folder: Path, publish: dict[str, Any] | None = None) -> Path:
    doc: dict[str, Any] = {
        "site": "site-a",
        "gateway": "gw-1",
        "broker": {"host": "127.0.0.1"},
        "devices": [],
    }
    if publish is not None:
        doc["publish"] = publish
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_the_default_outbox_is_in_a_state_folder_next_to_the_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "etc"))
    assert config.publish.outbox_path == (tmp_path / "etc" / "state" / "site-a.gw-1.outbox.sqlite").resolve()
    assert config.publish.outbox_max_bytes == 256 * 1024 * 1024
    assert config.publish.replay_rate == 2000


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("spool/box.sqlite", "etc/spool/box.sqlite"),  # relative: from the config file's folder, not the cwd
        ("/var/lib/ioc/box.sqlite", "/var/lib/ioc/box.sqlite"),
    ],
)
def test_outbox_paths(tmp_path: Path, given: str, expected: str) -> None:
    config = load_config(write(tmp_path / "etc", {"outbox_path": given}))
    assert config.publish.outbox_path == (tmp_path / expected if not expected.startswith("/") else Path(expected))


def test_memory_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert str(load_config(write(tmp_path, {"outbox_path": ":memory:"})).publish.outbox_path) == MEMORY
    monkeypatch.setenv("IOC_EDGE_PUBLISH__OUTBOX_PATH", str(tmp_path / "from-env.sqlite"))
    monkeypatch.setenv("IOC_EDGE_PUBLISH__REPLAY_RATE", "0")
    config = load_config(write(tmp_path, {"replay_rate": 50}))
    assert config.publish.outbox_path == tmp_path / "from-env.sqlite"
    assert config.publish.replay_rate == 0


@pytest.mark.parametrize(
    ("publish", "field"),
    [
        ({"outbox_max_bytes": 1000}, "publish.outbox_max_bytes"),
        ({"outbox_max_bytes": "lots"}, "publish.outbox_max_bytes"),
        ({"replay_rate": -1}, "publish.replay_rate"),
        ({"outbox_dir": "x"}, "publish.outbox_dir"),
    ],
)
def test_bad_outbox_settings_name_the_field(tmp_path: Path, publish: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, publish))
    assert f"gateway.yaml: {field}: " in str(caught.value)


async def test_the_configured_outbox_is_created_where_the_config_says(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "etc"))
    outbox = outbox_for(config.publish, EdgeStats())
    assert isinstance(outbox, SqliteOutbox)
    async with outbox:
        assert len(outbox) == 0
    assert (tmp_path / "etc" / "state" / "site-a.gw-1.outbox.sqlite").is_file()


async def test_an_outbox_folder_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    outbox = SqliteOutbox(blocker / "box.sqlite", max_bytes=1 << 20, max_readings=10, stats=EdgeStats())
    with pytest.raises(ConfigError, match=r"publish.outbox_path: outbox .*/file/box.sqlite: cannot create its folder"):
        await outbox.__aenter__()
    with pytest.raises(RuntimeError, match="not open"):
        await outbox.put([Reading(device="d-1", kind="k", ts=1_764_331_200_000, metrics={"n": 1})])
