"""The playbook <-> `ember daemon` protocol: orders on standard input, reports on output."""

import pytest

from toolkit.daemon.protocol import Order, Report, read_order, read_reports, read_statuses
from toolkit.errors import ConfigError


@pytest.mark.parametrize("order", [Order(True), Order(True, 7.5),
                                   Order(False, reason="no master is up")])
def test_orders_round_trip(order: Order) -> None:
    assert read_order(order.line().decode()) == order


def test_an_absent_or_unknown_order_is_a_skip_and_bad_seconds_are_named() -> None:
    assert read_order("") == Order(False, reason="nobody said to go ahead")
    assert read_order("jump\n") == Order(False, reason="nobody said to go ahead")
    with pytest.raises(ConfigError, match="'go' takes seconds, not 'soon'"):
        read_order("go soon\n")


def test_reports_are_read_for_one_role_among_other_output() -> None:
    text = "\n".join(["starting...", Report("worker", 2, 0, ["worker 2 ready"]).line(),
                      Report("master", 1, 1, []).line(), '{"role": "worker"}', "[1, 2]",
                      Report("worker", 1, 1, ["failed"]).line()])
    assert read_reports(text, "worker") == {2: Report("worker", 2, 0, ["worker 2 ready"]),
                                            1: Report("worker", 1, 1, ["failed"])}


def test_statuses_refuse_what_is_not_a_status() -> None:
    assert read_statuses('{"instance": 2, "state": "running"}\n') == {
        2: {"instance": 2, "state": "running"}}
    for garbage in ("Traceback (most recent call last):", "[1]", '{"state": "x"}'):
        with pytest.raises(ValueError):
            read_statuses(garbage)
