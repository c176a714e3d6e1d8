"""A stop never kills a process that took the daemon's pid while it was stopping: in a pid
namespace of the test's own, where the next pid can be chosen (/proc/sys/kernel/ns_last_pid),
the daemon ignores SIGTERM, exits, and a bystander gets its pid before the stop timeout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

SCENARIO = r"""
import os, subprocess, sys, threading, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from toolkit.daemon.plain import PlainBackend
from toolkit.daemon.settings import DaemonSettings

here = Path(sys.argv[2])
backend = PlainBackend(DaemonSettings(here, here, here, here, "t", stop_timeout=1.5))

ready = Path(sys.argv[2]) / "ignoring-sigterm"
daemon = subprocess.Popen(["sh", "-c", f"trap '' TERM; touch {ready}; sleep 0.3"],
                          start_new_session=True)
pid = daemon.pid
while not ready.exists():  # it ignores SIGTERM from now on
    time.sleep(0.005)
ready.unlink()
result = []
stopper = threading.Thread(target=lambda: result.append(backend.stop("master", 1, pid)))
stopper.start()
daemon.wait()  # reaped: its pid is free
with open("/proc/sys/kernel/ns_last_pid", "w") as last:
    last.write(str(pid - 1))
bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)
stopper.join()
alive = bystander.poll() is None
bystander.kill()
print(bystander.pid == pid, result[0].name, alive)
"""


def test_a_stop_leaves_alone_the_process_that_took_the_daemons_pid(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (a pid namespace of its own)")
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable,
                           "-c", SCENARIO, str(ROOT), str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    took_pid, stopped, bystander_alive = done.stdout.split()
    assert took_pid == "True"  # the bystander really has the daemon's old pid
    assert stopped == "GONE"  # the daemon ended; nothing was SIGKILLed
    assert bystander_alive == "True"
