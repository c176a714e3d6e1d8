#!/usr/bin/env python3
"""The fuzz tests of tests/unit/runtime/test_fuzz.py, run long: every role's wire decoder on
any bytes and on message-shaped JSON, and every message a decoder lets through handled by a
master and a worker, with no handler failing.

    .venv/bin/python bench/fuzz.py [--examples 20000]

Prints the time taken and the peak memory of the run, which includes hypothesis's own records
of the examples (it grows with them). Then, without hypothesis: 5,000 masters in turn, each
handling every kind of message a master accepts, and the process's memory at the first and the
last (it must not grow: nothing a handler keeps outlives its master).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20000)
    args = parser.parse_args()
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "unit" / "runtime" / "test_fuzz.py")],
        env={**os.environ, "EMBER_FUZZ_EXAMPLES": str(args.examples)}, cwd=ROOT, check=False)
    took = time.monotonic() - began
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\n{args.examples} examples per test: {took:.0f} s, peak memory {peak:.0f} MB, "
          f"{'passed' if done.returncode == 0 else 'FAILED'}")
    first, last = steady_memory(5000)
    print(f"5,000 masters handling every kind of message, one after another: {first} MB at the "
          f"first, {last} MB at the last")
    return done.returncode


def steady_memory(rounds: int) -> tuple[int, int]:
    import gc

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    sys.path.insert(0, str(ROOT))
    from tests.unit.runtime.fakes import Clock
    from tests.unit.runtime.test_fuzz import bodies, decoded, handle_all
    from toolkit.runtime import wire
    from toolkit.runtime.config import MasterConfig
    from toolkit.runtime.master import Master

    corpus: list[bytes] = []

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(bodies(wire.TO_MASTER), min_size=8, max_size=8))
    def collect(raw: list[bytes]) -> None:
        corpus.extend(raw)

    collect()
    messages = decoded(wire.TO_MASTER, corpus)

    def rss() -> int:
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) // 1024

    seen = []
    for n in range(rounds):
        clock = Clock()
        master = Master(MasterConfig(host="10.0.0.1", port=7077), clock=clock,
                        monotonic=clock)
        handle_all(master, messages[n % 50::50])
        if n in (0, rounds - 1):
            gc.collect()
            seen.append(rss())
    return seen[0], seen[1]


if __name__ == "__main__":
    sys.exit(main())
