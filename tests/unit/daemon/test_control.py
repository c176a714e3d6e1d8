"""What each role instance is started with."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.daemon.control import instance_env
from toolkit.daemon.settings import load_settings
from toolkit.errors import ConfigError


def env_of(tmp_path: Path, role: str, instance: int, **extra: str) -> dict[str, str]:
    settings = load_settings({"EMBER_HOME": str(tmp_path), "USER": "op", **extra})
    return instance_env(settings, role, instance)


def test_worker_ports_step_by_instance_as_the_registry_says(tmp_path: Path) -> None:
    third = env_of(tmp_path, "worker", 3)
    assert third["EMBER_WORKER_WEBUI_PORT"] == "8083"
    assert "EMBER_WORKER_PORT" not in third  # 0, any free port: nothing to step
    fixed = env_of(tmp_path, "worker", 2, EMBER_WORKER_PORT="7000",
                   EMBER_WORKER_WEBUI_PORT="9000")
    assert (fixed["EMBER_WORKER_PORT"], fixed["EMBER_WORKER_WEBUI_PORT"]) == ("7001", "9001")
    master = env_of(tmp_path, "master", 1, EMBER_MASTER_PORT="7077")
    assert master["EMBER_MASTER_PORT"] == "7077" and "EMBER_WORKER_WEBUI_PORT" not in master


def test_a_bad_port_to_step_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="EMBER_WORKER_WEBUI_PORT: 'http' is not a port"):
        env_of(tmp_path, "worker", 2, EMBER_WORKER_WEBUI_PORT="http")
