#!/usr/bin/env python3
"""How long the master's web UI page takes with a large cluster: 5,000 workers and 1,000
running drivers in a master's own tables, the page rendered by the code that serves `/`
(toolkit.runtime.pages.master_page), the median of 10 renders (over HTTP, a real master adds
the transfer).

    .venv/bin/python bench/ui.py [--workers 5000] [--drivers 1000] [--json OUT]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import Sink, fmt, print_table, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from toolkit.runtime import messages as m  # noqa: E402
from toolkit.runtime import pages  # noqa: E402
from toolkit.runtime.config import MasterConfig  # noqa: E402
from toolkit.runtime.master import Master  # noqa: E402
from toolkit.runtime.records import WorkerInfo  # noqa: E402

TARGET_MS = 200.0


def build(workers: int, drivers: int) -> Master:
    master = Master(MasterConfig(host="127.0.0.1"))
    now = time.time()
    for n in range(workers):
        master.workers.add(WorkerInfo(
            f"worker-20261201000000-10.{n // 250}.{n % 250}.1-7078", f"10.{n // 250}.{n % 250}.1",
            7078, 8, 16384, f"http://10.{n // 250}.{n % 250}.1:8081", Sink(),  # type: ignore[arg-type]
            last_heartbeat=now, last_seen=time.monotonic()))
    client = Sink()
    for n in range(drivers):
        master.handle(m.RequestSubmitDriver(m.DriverDescription(
            ["sh", "-c", "true"], cores=1, memory=512, name=f"job-{n}")), client)  # type: ignore[arg-type]
    return master


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=5000)
    parser.add_argument("--drivers", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    master = build(args.workers, args.drivers)
    pages.master_page(master)  # the templates compiled once, as the first request does
    times = []
    for _ in range(10):
        began = time.perf_counter()
        html = pages.master_page(master)
        times.append((time.perf_counter() - began) * 1000)
    median = statistics.median(times)
    running = len(master.work.drivers.values())
    print(f"\n{args.workers} workers, {running} drivers running, "
          f"{len(master.work.drivers.completed)} completed; page {len(html) / 1024:.0f} KB\n")
    print_table(["measurement", "value", "target", "met"],
                [["master page render, median of 10 (ms)", fmt(median), f"<= {TARGET_MS:g}",
                  "yes" if median <= TARGET_MS else "NO"],
                 ["slowest of 10 (ms)", fmt(max(times)), "", ""]])
    save(args.json, workers=args.workers, drivers=args.drivers, median_ms=median,
         max_ms=max(times), page_bytes=len(html))
    return 0 if median <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
