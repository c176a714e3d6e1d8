"""DriverRunner and ExecutorRunner on their own, with real processes and an event loop."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from toolkit.runtime import messages as m
from toolkit.runtime import runners
from toolkit.runtime.runners import DriverRunner, ExecutorRunner

Reports = list[tuple[str, str, int | None]]


def recorder() -> tuple[Reports, asyncio.Event, Callable[[str, str, int | None], None]]:
    reports: Reports = []
    final = asyncio.Event()

    def report(state: str, message: str, code: int | None) -> None:
        reports.append((state, message, code))
        if state not in ("RUNNING", "LAUNCHING"):
            final.set()
    return reports, final, report


async def test_a_kill_before_the_runner_ran_starts_nothing(tmp_path: Path) -> None:
    reports, final, report = recorder()
    runner = DriverRunner("driver-20261122000000-0001",
                          m.DriverDescription(["sh", "-c", "touch started; sleep 60"]),
                          tmp_path, {"PATH": "/usr/bin:/bin"}, report)
    runner.start()
    runner.kill()  # LaunchDriver and KillDriver handled back to back
    await asyncio.wait_for(final.wait(), 5)
    assert reports == [("KILLED", "killed before it started", None)]
    assert not (tmp_path / "driver-20261122000000-0001").exists()

    reports, final, report = recorder()
    executor = ExecutorRunner("app-20261122000000-0001", 0,
                              m.ApplicationDescription("a", ["sleep", "60"]), 1, 64, tmp_path,
                              {"PATH": "/usr/bin:/bin"}, {}, report)
    executor.start()
    executor.kill()
    await asyncio.wait_for(final.wait(), 5)
    assert reports == [("KILLED", "killed before it started", None)]


async def test_supervise_backoff_doubles_up_to_its_cap(tmp_path: Path) -> None:
    reports, final, report = recorder()
    stamps = tmp_path / "stamps"
    runner = DriverRunner("driver-20261122000000-0002",
                          m.DriverDescription(["sh", "-c", f"date +%s.%N >> {stamps}; exit 1"],
                                              supervise=True),
                          tmp_path, {"PATH": "/usr/bin:/bin"}, report,
                          first_backoff=0.2, max_backoff=0.4)
    runner.start()
    while not stamps.exists() or len(stamps.read_text().split()) < 5:
        await asyncio.sleep(0.05)
    runner.kill()
    await asyncio.wait_for(final.wait(), 5)
    launches = len(stamps.read_text().split())
    times = [float(t) for t in stamps.read_text().split()][:5]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 0.18 < gaps[0] < 0.35          # 0.2
    assert all(0.38 < g < 0.6 for g in gaps[1:]), gaps  # 0.4, then capped at 0.4
    assert reports[0][0] == "RUNNING" and reports[-1][0] == "KILLED"
    assert "restart 4 in 0.4 s" in (tmp_path / "driver-20261122000000-0002" / "stderr").read_text()
    time.sleep(0.6)
    assert len(stamps.read_text().split()) == launches  # killed: no restart after that


async def test_the_first_launch_probes_setpriv_without_blocking_the_event_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a setpriv that takes a second to say what it can do, then runs the command it wraps
    fake = tmp_path / "bin" / "setpriv"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nif [ "$1" = --help ]; then sleep 1; echo " --pdeathsig"; '
                    'exit 0; fi\nshift 3\nexec "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    runners.death_guard.cache_clear()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.create_task(tick())
    reports, final, report = recorder()
    try:
        runner = DriverRunner("driver-20261122000000-0009", m.DriverDescription(["true"]),
                              tmp_path, {"PATH": "/usr/bin:/bin"}, report)
        runner.start()
        await asyncio.wait_for(final.wait(), 10)
    finally:
        ticker.cancel()
        runners.death_guard.cache_clear()
    assert reports[-1][0] == "FINISHED"
    assert ticks >= 10  # the loop kept running through the probe's second


async def test_a_driver_that_ends_by_itself_takes_what_it_left_running_with_it(
        tmp_path: Path) -> None:
    reports, final, report = recorder()
    child = tmp_path / "child"
    runner = DriverRunner("driver-20261122000000-0009",
                          m.DriverDescription(["sh", "-c", f"sleep 300 & echo $! > {child}"]),
                          tmp_path, {"PATH": "/usr/bin:/bin"}, report, kill_timeout=2)
    runner.start()
    await asyncio.wait_for(final.wait(), 10)
    assert reports[-1][0] == "FINISHED", reports
    pid = int(child.read_text())
    for _ in range(50):  # reaped by whoever adopted it
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the driver's child {pid} still runs")
