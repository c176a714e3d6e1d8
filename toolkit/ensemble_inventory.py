"""The inventory's ``recovery.ensemble``: the ZooKeeper ensemble the playbook runs for the
masters, on hosts of the inventory (``fab start-all`` starts it first, ``fab stop-all`` stops
it last)::

    recovery:
      mode: zookeeper
      ensemble: [10.0.0.1, 10.0.0.2, 10.0.0.3]     # or, with ports other than ZooKeeper's:
      # ensemble: {hosts: [...], client_port: 2181, peer_port: 2888, election_port: 3888,
      #            tick_ms: 2000}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import ConfigError
from toolkit.settings import named, parsed

ENSEMBLE_KEYS = {"hosts", "client_port", "peer_port", "election_port", "tick_ms"}


@dataclass(frozen=True)
class Ensemble:
    hosts: tuple[str, ...]
    """The hosts, by name (an inventory host's address without its user), in server order."""
    client_port: int = 2181
    peer_port: int = 2888
    election_port: int = 3888
    tick_ms: int = 2000


def parse_ensemble(path: Path, value: Any) -> Ensemble:
    where = f"{path}: recovery.ensemble"
    data = {"hosts": value} if isinstance(value, list) else value
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a list of hosts or a mapping with hosts")
    unknown = sorted(set(data) - ENSEMBLE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: "
                          f"{', '.join(sorted(ENSEMBLE_KEYS))})")
    hosts = data.get("hosts")
    if not isinstance(hosts, list) or not hosts or not all(
            isinstance(h, str) and h for h in hosts):
        raise ConfigError(f"{where}.hosts must be a list of the inventory's hosts")
    names = tuple(h.rpartition("@")[2] for h in hosts)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{where}: host {twice[0]} is listed twice")
    if len(names) % 2 == 0:
        raise ConfigError(f"{where} lists {len(names)} hosts: an ensemble needs an odd number "
                          "(1, 3, 5...), or a split can leave no majority")
    ports = {}
    for key in ("client_port", "peer_port", "election_port"):
        if key in data:
            ports[key] = parsed(f"{where}.{key}", str(data[key]),
                                named("zookeeper", "client_port").parse)
    if len({ports.get(k, d) for k, d in (("client_port", 2181), ("peer_port", 2888),
                                          ("election_port", 3888))}) < 3:
        raise ConfigError(f"{where}: client_port, peer_port and election_port must differ")
    tick = parsed(f"{where}.tick_ms", str(data.get("tick_ms", 2000)),
                  named("zookeeper", "tick_ms").parse)
    return Ensemble(names, tick_ms=tick, **ports)
