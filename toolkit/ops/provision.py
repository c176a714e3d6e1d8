"""``fab deploy`` and ``fab doctor``: every host runs the locked dependency set, and says so.

Deploy fetches the locked wheels here once (hashes checked), builds Ember's own wheel, ships
both with ``lock/runtime.txt`` and installs them offline on each host, where pip checks every
hash again; packages the lock does not name are removed. Doctor compares each host's installed
set with the lock and names every difference.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import __version__
from toolkit.errors import EmberError
from toolkit.lock import DEV, RUNTIME, drift, expected, extras, lock_dir, read_lock
from toolkit.ops import probe
from toolkit.ops.group import Outcome

if TYPE_CHECKING:
    from toolkit.ops.cluster import Cluster, Target

HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"
PROBE = Path(probe.__file__).read_text()


def _outcome(target: Target, task: str, ok: bool, message: str) -> Outcome:
    return Outcome(target.address, task, 0, ok, message)


def build_wheels(into: Path) -> dict[str, bytes]:
    """The locked runtime wheels (hash-checked by pip) and Ember's own, by file name."""
    locked = lock_dir() / RUNTIME
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    steps = [
        # wheels only: a wheel built here from a source archive would not match the lock's hash
        [*pip, "download", "-q", "--require-hashes", "--no-deps", "--only-binary", ":all:",
         "-d", str(into), "-r", str(locked)],
        # Ember's own wheel, from this checkout, with the locked setuptools of this
        # environment when it has one: nothing unpinned
        [*pip, "wheel", "-q", "--no-deps", "-w", str(into),
         *(["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []),
         str(Path(__file__).resolve().parents[2])],
    ]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise EmberError(f"{shlex.join(argv)} failed (exit {done.returncode}):\n"
                             f"{done.stderr[-2000:]}")
    wheels = {p.name: p.read_bytes() for p in into.glob("*.whl")}
    wheels[RUNTIME] = locked.read_bytes()
    return wheels


def host_facts(target: Target, python: str, *args: str) -> tuple[dict[str, Any] | None, str]:
    """toolkit/probe.py run by ``python`` on the host: its facts, or None and why not."""
    result = target.host.run([python, "-c", PROBE, *args], timeout=60)
    if result.ok:
        try:
            facts: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
            return facts, ""
        except (ValueError, IndexError):
            pass
    return None, f"{python} does not run here (exit {result.exited}): {result.tail(3)}"


def runtime_set(facts: dict[str, Any]) -> dict[str, str]:
    """lock/runtime.txt's versions for the host these facts describe."""
    return expected(read_lock(lock_dir() / RUNTIME), facts.get("environment"))


def lock_drift(facts: dict[str, Any]) -> list[str]:
    """How a host's installed set differs from lock/runtime.txt (development tools tolerated)."""
    dev = lock_dir() / DEV
    tolerated = expected(read_lock(dev), facts.get("environment")) if dev.is_file() else {}
    return drift(runtime_set(facts), facts["installed"], tolerated)


def deploy(cluster: Cluster, system_python: str = "python3") -> list[Outcome]:
    """Build here once; on each host: upload, create the venv, install offline, prune."""
    with tempfile.TemporaryDirectory(prefix="ember-wheels-") as tmp:
        wheels = build_wheels(Path(tmp))
    own = next(name for name in wheels if name.startswith("ember_toolkit-"))
    count = sum(name.endswith(".whl") for name in wheels) - 1
    cluster.events.note(f"built ember-toolkit {__version__} and fetched {count} locked wheels "
                f"(lock/{RUNTIME}, hashes checked)")

    def install(target: Target) -> list[Outcome]:
        if target.entries[0].local:
            facts, why = host_facts(target, sys.executable)
            problems = lock_drift(facts) if facts else [why]
            return [_outcome(target, "deploy", not problems,
                             f"local host: uses this installation ({sys.executable})" +
                             ("" if not problems else
                              "; it differs from the lock (run scripts/setup):\n  " +
                              "\n  ".join(problems)))]
        venv = target.python.rpartition("/bin/")[0]
        if venv != f"{target.home}/venv":  # never a system's own Python: it would be pruned
            return [_outcome(target, "deploy", False,
                             f"python is {target.python}: deploy makes and fills only "
                             f"{target.home}/venv (leave python unset, or set it to "
                             f"{target.home}/venv/bin/python)")]
        probe = target.host.run([system_python, "-c",
                                 "import sys; print('%d.%d' % sys.version_info[:2])"])
        there = probe.stdout.strip()
        if not probe.ok or there != HERE:
            return [_outcome(target, "deploy", False,
                             f"{system_python} there is {there or 'missing'}; the wheels are "
                             f"for Python {HERE} (pass --python)")]
        folder = f"{target.home}/wheels"
        clear = [system_python, "-c", "import shutil, sys; shutil.rmtree(sys.argv[1], True)",
                 folder]
        if not (result := target.host.run(clear)).ok:
            return [_failed(target, clear, result)]
        for name, data in wheels.items():
            target.host.put(f"{folder}/{name}", data)
        pip = [target.python, "-m", "pip", "--disable-pip-version-check"]
        offline = ["install", "-q", "--no-index", "--find-links", folder, "--no-deps"]
        steps = [[system_python, "-m", "venv", venv],
                 [*pip, *offline, "--require-hashes", "-r", f"{folder}/{RUNTIME}"],
                 # the same version number may be a newer build: always replace the toolkit
                 [*pip, *offline, "--force-reinstall", f"{folder}/{own}"]]
        for argv in steps:
            result = target.host.run(argv, timeout=600)
            if not result.ok:
                return [_failed(target, argv, result)]
        facts, why = host_facts(target, target.python)
        if facts is None:
            return [_outcome(target, "deploy", False, why)]
        # a host runs the runtime set only: whatever else an earlier deploy left goes
        extra = extras(runtime_set(facts), facts["installed"])
        if extra:
            prune = [*pip, "uninstall", "-q", "-y", *extra]
            if not (result := target.host.run(prune, timeout=600)).ok:
                return [_failed(target, prune, result)]
            facts = host_facts(target, target.python)[0] or facts
        problems = lock_drift(facts)
        if problems:
            return [_outcome(target, "deploy", False, "installed, but differs from the lock:\n  "
                             + "\n  ".join(problems))]
        removed = f"; removed {', '.join(extra)}" if extra else ""
        return [_outcome(target, "deploy", True,
                         f"ember-toolkit {__version__} and {count} locked packages "
                         f"installed in {venv}{removed}")]

    return cluster.each(list(cluster.targets.values()), install, label="deploy")


def _failed(target: Target, argv: list[str], result: Any) -> Outcome:
    return _outcome(target, "deploy", False,
                    f"{shlex.join(argv)} failed (exit {result.exited})\n{result.tail(8)}")


def doctor(cluster: Cluster) -> list[Outcome]:
    """Preflight checks per host; every problem is named."""

    def check(target: Target) -> list[Outcome]:
        ports = []
        for entry in target.entries:
            bind = cluster.inventory.advertised(entry)
            if entry.group == "masters":
                ports += [f"{bind}:{cluster.inventory.setting(entry, k)}"
                          for k in ("port", "webui_port")]
            else:
                base = int(cluster.inventory.setting(entry, "worker_webui_port"))
                count = int(cluster.inventory.setting(entry, "instances"))
                ports += [f"{bind}:{base + i}" for i in range(count)]
        facts, why = host_facts(target, target.python, target.home, *ports)
        if facts is None:
            return [_outcome(target, "doctor", False, f"{why}; run fab deploy")]
        problems = []
        if tuple(int(x) for x in facts["python"].split(".")[:2]) < (3, 11):
            problems.append(f"python {facts['python']} is older than 3.11")
        if facts["toolkit"] is None:
            problems.append("the toolkit is not installed (run fab deploy)")
        elif facts["toolkit"] != __version__:
            problems.append(f"toolkit {facts['toolkit']} differs from this {__version__} "
                            f"(run fab deploy)")
        elif drifted := lock_drift(facts):
            fix = "scripts/setup" if target.entries[0].local else "fab deploy"
            problems.append(f"installed packages differ from lock/{RUNTIME} (run {fix}): "
                            + "; ".join(drifted))
        if not facts["writable"]:
            problems.append(f"{target.home} is not writable")
        running = {r for r, i in target.roles
                   if cluster.status_of(target, r, i)["code"] == 0} if facts["busy"] else set()
        if facts["busy"] and not running:
            problems.append(f"ports in use: {', '.join(facts['busy'])}")
        reach = ("local host (no SSH)" if target.entries[0].local
                 else "ssh ok, host key verified")
        ok_line = (f"{reach}, python {facts['python']}, toolkit {facts['toolkit']}, "
                   f"packages as locked, {target.home} writable, "
                   + ("ports in use by running ember roles" if running else "ports free"))
        return [_outcome(target, "doctor", not problems,
                         "; ".join(problems) if problems else ok_line)]

    return cluster.each(list(cluster.targets.values()), check, label="doctor")
