"""Reading `ember daemon ... --json` output into one outcome per instance (pure)."""

from __future__ import annotations

import json

from toolkit.ops.cluster import Cluster, Target
from toolkit.ops.transport import LocalHost, Result


def target() -> Target:
    return Target("h1", [], LocalHost("h1"), "/e", "/e/venv/bin/python",
                  [("worker", 1), ("worker", 2), ("worker", 3)])


def report(instance: int, code: int, *lines: str) -> str:
    return json.dumps({"role": "worker", "instance": instance, "code": code,
                       "lines": list(lines)})


def test_each_instance_gets_its_own_outcome() -> None:
    stdout = "\n".join([
        report(2, 1, "starting worker 2, logging to /l", "failed to launch worker 2: it exited",
               "  Traceback ..."),
        "supervisord stopped, with every program it ran",  # not a report: ignored
        report(1, 0, "starting worker 1, logging to /l", "worker 1 ready as process 42"),
    ])
    result = Result("h1", "cmd", 1, stdout + "\n", "boom on stderr")
    one, two, three = Cluster.outcomes(target(), "start", "worker", result)
    assert (one.instance, one.ok, one.message) == (1, True, "ready as process 42")
    assert (two.instance, two.ok) == (2, False)
    assert two.message.splitlines() == ["failed to start (exit 1)",
                                        "starting worker 2, logging to /l",
                                        "failed to launch worker 2: it exited", "  Traceback ..."]
    assert (three.instance, three.ok) == (3, False)  # never reported: the command's tail
    assert three.message.splitlines()[0] == "failed to start (exit 1)"
    assert "boom on stderr" in three.message


def test_told_not_to_go_ahead_is_a_failure_with_the_reason() -> None:
    result = Result("h1", "cmd", 1, report(1, 1, "worker 1 not started: no master is up"), "")
    outcome = Cluster.outcomes(target(), "start", "worker", result)[0]
    assert (outcome.ok, outcome.message) == (False, "not started: no master is up")
