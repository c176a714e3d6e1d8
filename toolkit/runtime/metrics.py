"""Prometheus metrics of a master or a worker, made when scraped.

prometheus-client is imported here, and this module is imported by the first scrape of
/metrics, so an idle role does not carry it. The values are read from the role's tables and
its Stats (stats.py) at each scrape. Served at /metrics and at Spark's paths:
``/metrics/master/prometheus`` and ``/metrics/applications/prometheus`` on a master,
``/metrics/prometheus`` on a worker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from toolkit.runtime.states import (
    ApplicationState,
    DriverState,
    ExecutorState,
    MasterState,
    WorkerState,
)

if TYPE_CHECKING:
    from toolkit.runtime.endpoint import Endpoint
    from toolkit.runtime.master import Master
    from toolkit.runtime.worker import Worker

CONTENT_TYPE = CONTENT_TYPE_LATEST
MIB = 1024 * 1024


def _by_state(name: str, doc: str, states: Any, found: Counter[str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["state"])
    for state in states:
        family.add_metric([state.value], found.get(state.value, 0))
    return family


def _common(role: str, endpoint: Endpoint) -> Iterator[Any]:
    """What every role shows: open connections, messages handled by type and their latency."""
    yield GaugeMetricFamily(f"ember_{role}_open_connections",
                            "RPC connections open now", value=endpoint.open_connections)
    handled = CounterMetricFamily(f"ember_{role}_messages_handled",
                                  "messages handled, by type", labels=["type"])
    latency = HistogramMetricFamily(f"ember_{role}_message_handling_seconds",
                                    "time to handle one message, by type", labels=["type"])
    for kind, histogram in sorted(endpoint.stats.histograms.get("messages", {}).items()):
        buckets = histogram.cumulative()
        handled.add_metric([kind], buckets[-1][1])
        latency.add_metric([kind], buckets, histogram.total)
    yield handled
    yield latency


class _MasterCollector:
    def __init__(self, master: Master) -> None:
        self.master = master

    def collect(self) -> Iterator[Any]:
        master = self.master
        workers = list(master.workers.values())
        alive = [w for w in workers if w.state == WorkerState.ALIVE]
        yield _by_state("ember_master_workers", "workers listed, by state", WorkerState,
                        Counter(w.state.value for w in workers))
        yield GaugeMetricFamily("ember_master_cores", "cores of the ALIVE workers",
                                value=sum(w.cores for w in alive))
        yield GaugeMetricFamily("ember_master_cores_used", "cores in use on the ALIVE workers",
                                value=sum(w.cores_used for w in alive))
        yield GaugeMetricFamily("ember_master_memory_bytes", "memory of the ALIVE workers",
                                value=sum(w.memory for w in alive) * MIB)
        yield GaugeMetricFamily("ember_master_memory_used_bytes",
                                "memory in use on the ALIVE workers",
                                value=sum(w.memory_used for w in alive) * MIB)
        drivers = [*master.work.drivers.values(), *master.work.drivers.completed]
        yield _by_state("ember_master_drivers", "drivers (running and kept completed), by state",
                        DriverState, Counter(d.state.value for d in drivers))
        apps = [*master.work.apps.values(), *master.work.apps.completed]
        yield _by_state("ember_master_applications", "applications, by state",
                        ApplicationState, Counter(a.state.value for a in apps))
        yield _by_state("ember_master_executors", "executors of the active applications",
                        ExecutorState, Counter(e.state.value for a in master.work.apps.values()
                                               for e in a.executors.values()))
        yield _by_state("ember_master_state", "1 for this master's state (HA: a standby is "
                        "STANDBY)", MasterState, Counter([master.state.value]))
        counters = master.stats.counters
        for name, doc in (("registrations", "workers registered"),
                          ("heartbeats", "heartbeats received"),
                          ("leaderships", "times this master came to lead (failovers)")):
            yield CounterMetricFamily(f"ember_master_{name}", doc,
                                      value=counters[name][""] if name in counters else 0)
        yield from _common("master", master)


class _ApplicationsCollector:
    def __init__(self, master: Master) -> None:
        self.master = master

    def collect(self) -> Iterator[Any]:
        cores = GaugeMetricFamily("ember_application_cores", "cores an application holds",
                                  labels=["app_id", "name"])
        executors = GaugeMetricFamily("ember_application_executors",
                                      "an application's executors running",
                                      labels=["app_id", "name"])
        runtime = GaugeMetricFamily("ember_application_runtime_seconds",
                                    "seconds since the application registered",
                                    labels=["app_id", "name"])
        now = self.master.clock()
        for app in self.master.work.apps.values():
            labels = [app.id, app.desc.name]
            running = [e for e in app.executors.values() if e.state == ExecutorState.RUNNING]
            cores.add_metric(labels, sum(e.cores for e in app.executors.values()))
            executors.add_metric(labels, len(running))
            runtime.add_metric(labels, max(0.0, now - app.submitted))
        yield cores
        yield executors
        yield runtime


class _WorkerCollector:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Any]:
        worker = self.worker
        yield GaugeMetricFamily("ember_worker_registered", "1 while registered with a master",
                                value=int(worker.registered))
        yield GaugeMetricFamily("ember_worker_cores", "cores offered",
                                value=worker.config.cores)
        yield GaugeMetricFamily("ember_worker_cores_used", "cores in use",
                                value=worker.cores_used)
        yield GaugeMetricFamily("ember_worker_memory_bytes", "memory offered",
                                value=worker.config.memory * MIB)
        yield GaugeMetricFamily("ember_worker_memory_used_bytes", "memory in use",
                                value=worker.memory_used * MIB)
        yield GaugeMetricFamily("ember_worker_drivers", "drivers running here",
                                value=len(worker.drivers))
        yield _by_state("ember_worker_executors", "executors here, by state", ExecutorState,
                        Counter(r.state.value for r in worker.executors.values() if r.state))
        launched = CounterMetricFamily("ember_worker_launches", "drivers and executors "
                                       "launched (until RUNNING)", labels=["kind"])
        latency = HistogramMetricFamily("ember_worker_launch_seconds", "from the master's "
                                        "order to RUNNING", labels=["kind"])
        for kind in ("driver", "executor"):
            histogram = worker.stats.histograms.get("launches", {}).get(kind)
            buckets = histogram.cumulative() if histogram else [("+Inf", 0)]
            launched.add_metric([kind], buckets[-1][1])
            latency.add_metric([kind], buckets, histogram.total if histogram else 0.0)
        yield launched
        yield latency
        yield from _common("worker", worker)


def render(collector: Any) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return bytes(generate_latest(registry))


def master_text(master: Master) -> bytes:
    return render(_MasterCollector(master))


def applications_text(master: Master) -> bytes:
    return render(_ApplicationsCollector(master))


def worker_text(worker: Worker) -> bytes:
    return render(_WorkerCollector(worker))
