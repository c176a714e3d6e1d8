"""Scheduling maths of the master: where drivers and executors go.

A pure port of Spark standalone's ``Master.schedule`` (3.x/4.x): drivers are placed
round-robin over shuffled workers, then executors are placed FIFO per application,
spread out over workers or consolidated on as few as possible. Kept free of I/O and of
the rest of ``toolkit`` so it can be tested exhaustively. Worker ids must be unique.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class WorkerOffer:
    """An ALIVE worker's free resources, listed in the master's order."""

    id: str
    cores_free: int
    memory_free: int  # MiB


@dataclass(frozen=True, slots=True)
class DriverRequest:
    """A waiting driver and the resources it needs on one worker."""

    id: str
    cores: int
    memory: int  # MiB


@dataclass(frozen=True, slots=True)
class AppRequest:
    """A waiting application's executor shape and how many cores it still wants.

    ``cores_per_executor`` None means Spark's "one executor per worker that grows". (Spark's
    executor limit belongs to dynamic allocation, which Ember does not have.)
    """

    id: str
    memory_per_executor: int  # MiB
    cores_per_executor: int | None
    cores_left: int


@dataclass(frozen=True, slots=True)
class Placement:
    """One driver or executor the master should launch on a worker."""

    request_id: str
    worker_id: str
    cores: int
    memory: int  # MiB


def place_drivers(
    drivers: Sequence[DriverRequest],
    workers: Sequence[WorkerOffer],
    shuffle: Callable[[list[WorkerOffer]], None] = random.shuffle,
) -> list[Placement]:
    """Place drivers round-robin over shuffled workers; a driver that fits nowhere waits.

    The cursor advances after every visit, exactly like Spark's ``curPos``, so drivers
    spread over workers and a big driver never blocks a smaller one behind it.
    """
    shuffled = list(workers)
    shuffle(shuffled)
    cores = [w.cores_free for w in shuffled]
    memory = [w.memory_free for w in shuffled]
    n = len(shuffled)
    placements: list[Placement] = []
    cur = 0
    total_cores, total_memory = sum(cores), sum(memory)
    for driver in drivers:
        if driver.cores > total_cores or driver.memory > total_memory:
            continue  # fits nowhere: visiting all n workers would leave cur where it is
        for _ in range(n):
            if memory[cur] >= driver.memory and cores[cur] >= driver.cores:
                cores[cur] -= driver.cores
                memory[cur] -= driver.memory
                total_cores -= driver.cores
                total_memory -= driver.memory
                placements.append(
                    Placement(driver.id, shuffled[cur].id, driver.cores, driver.memory)
                )
                cur = (cur + 1) % n
                break
            cur = (cur + 1) % n
    return placements


def assign_executor_cores(
    app: AppRequest, usable: Sequence[WorkerOffer], spread_out: bool
) -> list[int]:
    """Cores to grant the app on each usable worker (Spark's scheduleExecutorsOnWorkers).

    Spread-out hands out one executor's worth of cores per worker per pass, so the app
    lands on as many workers as possible; otherwise each worker is filled before the next.
    """
    min_cores = app.cores_per_executor or 1
    one_per_worker = app.cores_per_executor is None
    mem = app.memory_per_executor
    cores_to_assign = min(app.cores_left, sum(w.cores_free for w in usable))
    assigned_cores = [0] * len(usable)
    assigned_execs = [0] * len(usable)

    def can_launch(pos: int) -> bool:
        keep = cores_to_assign >= min_cores
        enough_cores = usable[pos].cores_free - assigned_cores[pos] >= min_cores
        if not one_per_worker or assigned_execs[pos] == 0:
            enough_memory = usable[pos].memory_free - assigned_execs[pos] * mem >= mem
            return keep and enough_cores and enough_memory
        return keep and enough_cores

    free = [pos for pos in range(len(usable)) if can_launch(pos)]
    while free:
        for pos in free:
            while can_launch(pos):
                cores_to_assign -= min_cores
                assigned_cores[pos] += min_cores
                assigned_execs[pos] = 1 if one_per_worker else assigned_execs[pos] + 1
                if spread_out:
                    break
        free = [pos for pos in free if can_launch(pos)]
    return assigned_cores


def place_executors(
    apps: Sequence[AppRequest], workers: Sequence[WorkerOffer], spread_out: bool
) -> list[Placement]:
    """Place executors for apps in FIFO order; later apps see what earlier apps took."""
    offers = list(workers)
    placements: list[Placement] = []
    for app in apps:
        min_cores = app.cores_per_executor or 1
        if app.cores_left < min_cores:
            continue
        usable_idx = sorted(
            (
                i
                for i, w in enumerate(offers)
                if w.cores_free >= min_cores and w.memory_free >= app.memory_per_executor
            ),
            key=lambda i: -offers[i].cores_free,
        )
        usable = [offers[i] for i in usable_idx]
        assigned = assign_executor_cores(app, usable, spread_out)
        for pos, cores in enumerate(assigned):
            if cores <= 0:
                continue
            per_exec = app.cores_per_executor or cores
            count = cores // app.cores_per_executor if app.cores_per_executor else 1
            worker = usable[pos]
            for _ in range(count):
                placements.append(Placement(app.id, worker.id, per_exec, app.memory_per_executor))
            offers[usable_idx[pos]] = replace(
                worker,
                cores_free=worker.cores_free - per_exec * count,
                memory_free=worker.memory_free - app.memory_per_executor * count,
            )
    return placements


def _subtract(workers: Sequence[WorkerOffer], placements: Sequence[Placement]) -> list[WorkerOffer]:
    """Workers' offers minus what the placements take (matched by worker id)."""
    cores: dict[str, int] = {}
    memory: dict[str, int] = {}
    for p in placements:
        cores[p.worker_id] = cores.get(p.worker_id, 0) + p.cores
        memory[p.worker_id] = memory.get(p.worker_id, 0) + p.memory
    return [
        replace(
            w,
            cores_free=w.cores_free - cores.get(w.id, 0),
            memory_free=w.memory_free - memory.get(w.id, 0),
        )
        for w in workers
    ]


def schedule(
    drivers: Sequence[DriverRequest],
    apps: Sequence[AppRequest],
    workers: Sequence[WorkerOffer],
    spread_out: bool = True,
    shuffle: Callable[[list[WorkerOffer]], None] = random.shuffle,
) -> tuple[list[Placement], list[Placement]]:
    """One scheduling round: drivers first, then executors on what is left.

    Returns (driver placements, executor placements).
    """
    driver_placements = place_drivers(drivers, workers, shuffle)
    remaining = _subtract(workers, driver_placements)
    return driver_placements, place_executors(apps, remaining, spread_out)
