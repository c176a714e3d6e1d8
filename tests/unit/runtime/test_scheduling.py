"""Scheduling maths: where the master puts drivers and executors."""

from __future__ import annotations

import copy
import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.runtime.scheduling import (
    AppRequest,
    DriverRequest,
    Placement,
    WorkerOffer,
    assign_executor_cores,
    place_drivers,
    place_executors,
    schedule,
)

BIG = 1 << 30


def keep_order(workers: list[WorkerOffer]) -> None:
    """A shuffle that leaves the master's order alone, for deterministic tests."""


def reverse(workers: list[WorkerOffer]) -> None:
    workers.reverse()


def workers_of(n: int, cores: int, memory: int = 8192) -> list[WorkerOffer]:
    return [WorkerOffer(f"w{i}", cores, memory) for i in range(n)]


def per_worker(placements: list[Placement]) -> Counter[str]:
    return Counter(p.worker_id for p in placements)


# --- drivers -----------------------------------------------------------------


def test_driver_bigger_than_every_worker_waits_without_blocking_smaller_one() -> None:
    drivers = [DriverRequest("big", 16, 1024), DriverRequest("small", 1, 512)]
    placed = place_drivers(drivers, workers_of(2, 4), keep_order)
    assert [p.request_id for p in placed] == ["small"]


def test_driver_needing_more_memory_than_any_worker_waits() -> None:
    placed = place_drivers([DriverRequest("d", 1, 9000)], workers_of(3, 8), keep_order)
    assert placed == []


def test_drivers_round_robin_over_workers() -> None:
    drivers = [DriverRequest(f"d{i}", 1, 256) for i in range(4)]
    placed = place_drivers(drivers, workers_of(2, 4), keep_order)
    assert [(p.request_id, p.worker_id) for p in placed] == [
        ("d0", "w0"),
        ("d1", "w1"),
        ("d2", "w0"),
        ("d3", "w1"),
    ]
    assert all(p.cores == 1 and p.memory == 256 for p in placed)


def test_earlier_drivers_use_up_a_worker_in_the_same_round() -> None:
    drivers = [DriverRequest(f"d{i}", 1, 100) for i in range(3)]
    placed = place_drivers(drivers, [WorkerOffer("w", 2, 1000)], keep_order)
    assert [p.request_id for p in placed] == ["d0", "d1"]


def test_driver_memory_used_by_earlier_driver_counts() -> None:
    drivers = [DriverRequest("a", 1, 700), DriverRequest("b", 1, 700)]
    placed = place_drivers(drivers, [WorkerOffer("w", 8, 1000)], keep_order)
    assert [p.request_id for p in placed] == ["a"]


def test_cursor_advances_past_workers_that_did_not_fit() -> None:
    # d0 visits w0 (too small) then lands on w1; the cursor wraps back to w0 for d1.
    workers = [WorkerOffer("w0", 1, 1024), WorkerOffer("w1", 4, 1024)]
    drivers = [DriverRequest("d0", 2, 100), DriverRequest("d1", 1, 100)]
    placed = place_drivers(drivers, workers, keep_order)
    assert [(p.request_id, p.worker_id) for p in placed] == [("d0", "w1"), ("d1", "w0")]


def test_drivers_follow_the_injected_shuffle() -> None:
    placed = place_drivers([DriverRequest("d", 1, 1)], workers_of(3, 4), reverse)
    assert placed == [Placement("d", "w2", 1, 1)]


def test_no_workers_places_no_drivers() -> None:
    assert place_drivers([DriverRequest("d", 1, 1)], [], keep_order) == []


# --- executors ---------------------------------------------------------------


def test_spread_out_puts_executors_on_every_worker() -> None:
    app = AppRequest("app", 1024, 2, cores_left=6)
    placed = place_executors([app], workers_of(3, 4), spread_out=True)
    assert per_worker(placed) == {"w0": 1, "w1": 1, "w2": 1}
    assert all(p.cores == 2 and p.memory == 1024 for p in placed)


def test_consolidate_fills_the_first_worker_first() -> None:
    app = AppRequest("app", 1024, 2, cores_left=6)
    placed = place_executors([app], workers_of(3, 4), spread_out=False)
    assert [p.worker_id for p in placed] == ["w0", "w0", "w1"]


def test_assign_executor_cores_spread_vs_consolidate() -> None:
    app = AppRequest("app", 1024, 2, cores_left=6)
    assert assign_executor_cores(app, workers_of(3, 4), spread_out=True) == [2, 2, 2]
    assert assign_executor_cores(app, workers_of(3, 4), spread_out=False) == [4, 2, 0]


def test_no_cores_per_executor_gives_one_growing_executor_per_worker() -> None:
    app = AppRequest("app", 1024, None, cores_left=6)
    spread = place_executors([app], workers_of(3, 4), spread_out=True)
    assert sorted((p.worker_id, p.cores) for p in spread) == [("w0", 2), ("w1", 2), ("w2", 2)]
    packed = place_executors([app], workers_of(3, 4), spread_out=False)
    assert [(p.worker_id, p.cores) for p in packed] == [("w0", 4), ("w1", 2)]


def test_no_cores_per_executor_takes_the_whole_worker_when_uncapped() -> None:
    app = AppRequest("app", 512, None, cores_left=BIG)
    placed = place_executors([app], [WorkerOffer("w", 8, 512)], spread_out=True)
    assert placed == [Placement("app", "w", 8, 512)]


def test_memory_limits_executors_on_a_worker() -> None:
    app = AppRequest("app", 1024, 2, cores_left=BIG)
    placed = place_executors([app], [WorkerOffer("w", 8, 3072)], spread_out=False)
    assert len(placed) == 3
    assert sum(p.cores for p in placed) == 6


def test_worker_without_memory_for_one_executor_is_unused() -> None:
    app = AppRequest("app", 2048, 1, cores_left=BIG)
    workers = [WorkerOffer("small", 16, 1024), WorkerOffer("big", 2, 4096)]
    placed = place_executors([app], workers, spread_out=True)
    assert per_worker(placed) == {"big": 2}


def test_max_cores_respected() -> None:
    app = AppRequest("app", 256, 2, cores_left=5)
    for spread_out in (True, False):
        placed = place_executors([app], workers_of(3, 8), spread_out)
        assert sum(p.cores for p in placed) == 4


def test_app_with_fewer_cores_left_than_one_executor_gets_nothing() -> None:
    app = AppRequest("app", 256, 4, cores_left=3)
    assert place_executors([app], workers_of(2, 8), spread_out=True) == []


def test_fifo_first_app_takes_what_it_can_before_the_second() -> None:
    first = AppRequest("first", 512, 2, cores_left=6)
    second = AppRequest("second", 512, 2, cores_left=BIG)
    placed = place_executors([first, second], workers_of(2, 4), spread_out=True)
    cores = Counter[str]()
    for p in placed:
        cores[p.request_id] += p.cores
    assert cores == {"first": 6, "second": 2}
    assert [p.request_id for p in placed] == ["first"] * 3 + ["second"]


def test_app_needing_more_cores_per_executor_than_any_worker_gets_nothing() -> None:
    app = AppRequest("app", 256, 8, cores_left=BIG)
    assert place_executors([app], workers_of(3, 4), spread_out=True) == []
    assert place_executors([app], workers_of(3, 4), spread_out=False) == []


def test_workers_with_most_free_cores_are_used_first() -> None:
    app = AppRequest("app", 256, 2, cores_left=2)
    workers = [WorkerOffer("few", 2, 4096), WorkerOffer("many", 8, 4096)]
    placed = place_executors([app], workers, spread_out=False)
    assert [p.worker_id for p in placed] == ["many"]


def test_ties_in_free_cores_keep_the_given_order() -> None:
    app = AppRequest("app", 256, 2, cores_left=2)
    workers = [WorkerOffer("b", 4, 4096), WorkerOffer("a", 4, 4096)]
    placed = place_executors([app], workers, spread_out=True)
    assert [p.worker_id for p in placed] == ["b"]


# --- a whole round -------------------------------------------------------------


def test_schedule_places_drivers_before_executors() -> None:
    drivers = [DriverRequest("driver", 1, 1024)]
    apps = [AppRequest("app", 1024, None, cores_left=BIG)]
    placed_drivers, placed_execs = schedule(
        drivers, apps, [WorkerOffer("w", 4, 4096)], shuffle=keep_order
    )
    assert placed_drivers == [Placement("driver", "w", 1, 1024)]
    assert placed_execs == [Placement("app", "w", 3, 1024)]


def test_schedule_executors_cannot_use_memory_taken_by_a_driver() -> None:
    drivers = [DriverRequest("driver", 1, 3072)]
    apps = [AppRequest("app", 2048, 1, cores_left=BIG)]
    _, placed_execs = schedule(drivers, apps, [WorkerOffer("w", 8, 4096)], shuffle=keep_order)
    assert placed_execs == []


def test_schedule_with_nothing_to_do() -> None:
    assert schedule([], [], workers_of(2, 4), shuffle=keep_order) == ([], [])


# --- properties ----------------------------------------------------------------

worker_lists = st.lists(
    st.builds(
        WorkerOffer,
        id=st.just(""),
        cores_free=st.integers(0, 16),
        memory_free=st.integers(0, 8192),
    ),
    max_size=8,
).map(lambda ws: [WorkerOffer(f"w{i}", w.cores_free, w.memory_free) for i, w in enumerate(ws)])

driver_lists = st.lists(st.tuples(st.integers(1, 8), st.integers(0, 4096)), max_size=8).map(
    lambda ds: [DriverRequest(f"d{i}", c, m) for i, (c, m) in enumerate(ds)]
)

app_requests = st.builds(
    AppRequest,
    id=st.just(""),
    memory_per_executor=st.integers(0, 3072),
    cores_per_executor=st.none() | st.integers(1, 8),
    cores_left=st.integers(0, 64) | st.just(BIG),
)

app_lists = st.lists(app_requests, max_size=4).map(
    lambda apps: [
        AppRequest(
            f"app{i}",
            a.memory_per_executor,
            a.cores_per_executor,
            a.cores_left,
        )
        for i, a in enumerate(apps)
    ]
)


@settings(max_examples=300)
@given(driver_lists, app_lists, worker_lists, st.booleans(), st.randoms(use_true_random=False))
def test_schedule_invariants(
    drivers: list[DriverRequest],
    apps: list[AppRequest],
    workers: list[WorkerOffer],
    spread_out: bool,
    rnd: random.Random,
) -> None:
    before = (copy.deepcopy(drivers), copy.deepcopy(apps), copy.deepcopy(workers))
    placed_drivers, placed_execs = schedule(drivers, apps, workers, spread_out, rnd.shuffle)
    assert (drivers, apps, workers) == before  # inputs untouched

    by_id = {w.id: w for w in workers}
    cores_used = Counter[str]()
    memory_used = Counter[str]()
    for p in placed_drivers + placed_execs:
        assert p.worker_id in by_id
        cores_used[p.worker_id] += p.cores
        memory_used[p.worker_id] += p.memory
    for wid, w in by_id.items():
        assert cores_used[wid] <= w.cores_free
        assert memory_used[wid] <= w.memory_free

    driver_by_id = {d.id: d for d in drivers}
    placed_ids = [p.request_id for p in placed_drivers]
    assert len(placed_ids) == len(set(placed_ids))
    for p in placed_drivers:
        d = driver_by_id[p.request_id]
        assert (p.cores, p.memory) == (d.cores, d.memory)
    # A driver left waiting fits on no worker even after the round's driver placements.
    left = {w.id: [w.cores_free, w.memory_free] for w in workers}
    for p in placed_drivers:
        left[p.worker_id][0] -= p.cores
        left[p.worker_id][1] -= p.memory
    for d in drivers:
        if d.id not in placed_ids:
            assert all(not (c >= d.cores and m >= d.memory) for c, m in left.values())

    app_by_id = {a.id: a for a in apps}
    granted = Counter[str]()
    for p in placed_execs:
        app = app_by_id[p.request_id]
        assert p.memory == app.memory_per_executor
        assert p.cores > 0
        if app.cores_per_executor is not None:
            assert p.cores == app.cores_per_executor
        granted[app.id] += p.cores
    for app in apps:
        assert granted[app.id] <= app.cores_left
        if app.cores_per_executor is None:
            app_workers = [p.worker_id for p in placed_execs if p.request_id == app.id]
            assert len(app_workers) == len(set(app_workers))  # one executor per worker


@settings(max_examples=300)
@given(app_requests, worker_lists, st.booleans())
def test_single_app_takes_all_it_can(
    app: AppRequest, workers: list[WorkerOffer], spread_out: bool
) -> None:
    app = AppRequest("app", app.memory_per_executor, app.cores_per_executor or 1, app.cores_left)
    assert app.cores_per_executor is not None
    placed = place_executors([app], workers, spread_out)
    granted = sum(p.cores for p in placed)
    if app.cores_left - granted >= app.cores_per_executor:
        for w in workers:
            cores = w.cores_free - sum(p.cores for p in placed if p.worker_id == w.id)
            memory = w.memory_free - sum(p.memory for p in placed if p.worker_id == w.id)
            assert cores < app.cores_per_executor or memory < app.memory_per_executor


@settings(max_examples=300)
@given(app_requests, worker_lists)
def test_spread_out_uses_at_least_as_many_workers_as_consolidate(
    app: AppRequest, workers: list[WorkerOffer]
) -> None:
    spread = place_executors([app], workers, spread_out=True)
    packed = place_executors([app], workers, spread_out=False)
    assert len(per_worker(spread)) >= len(per_worker(packed))
    assert sum(p.cores for p in spread) == sum(p.cores for p in packed)


@settings(max_examples=300)
@given(app_requests, worker_lists, st.booleans())
def test_assign_executor_cores_fits_each_worker(
    app: AppRequest, workers: list[WorkerOffer], spread_out: bool
) -> None:
    min_cores = app.cores_per_executor or 1
    usable = [w for w in workers if w.cores_free >= min_cores]
    before = list(usable)
    assigned = assign_executor_cores(app, usable, spread_out)
    assert usable == before
    assert len(assigned) == len(usable)
    assert sum(assigned) <= app.cores_left
    for cores, w in zip(assigned, usable, strict=True):
        assert 0 <= cores <= w.cores_free
        assert cores % min_cores == 0
