"""The recovery modes: which store a master keeps its records in, by the mode's name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.errors import ConfigError
from toolkit.runtime.master.store import FileStore, NoStore

MODES = ("none", "filesystem", "zookeeper")


def store_for(mode: str, directory: Path | None, zookeeper_url: str | None = None,
              zookeeper_dir: str = "/ember") -> Any:
    """The store of a recovery mode; an unknown mode, or one without what it needs, is an
    error that names it."""
    if mode == "none":
        return NoStore()
    if mode == "filesystem":
        if directory is None:
            raise ConfigError("recovery mode filesystem needs a directory: --recovery-dir DIR "
                              "(EMBER_RECOVERY_DIR)")
        return FileStore(directory)
    if mode == "zookeeper":
        if not zookeeper_url:
            raise ConfigError("recovery mode zookeeper needs ZooKeeper's address: "
                              "--zookeeper-url HOST:PORT[,HOST:PORT...] (EMBER_ZOOKEEPER_URL)")
        from toolkit.runtime.master.zookeeper import ZooKeeperStore

        return ZooKeeperStore(zookeeper_url, zookeeper_dir)
    raise ConfigError(f"unknown recovery mode {mode!r}: use {' or '.join(MODES)}")
