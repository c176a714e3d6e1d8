"""Under CI a skipped test is a failure, so a missing install step cannot hide behind a green run.

CI sets ``CI`` (to ``true``); then every skip, from a test, a fixture, a ``skipif`` mark or a
whole module, is turned into a failure that keeps the skip's reason. Outside CI skips stay
allowed; each skip's reason says what to install. ``xfail`` is not a skip and is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _failed_instead(report: pytest.TestReport | pytest.CollectReport) -> None:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    report.outcome = "failed"
    report.longrepr = (f"skipped under CI, which must install what every test needs: "
                       f"{reason.removeprefix('Skipped: ')}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                         pytest.TestReport]:
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and under_ci():
        _failed_instead(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
        collector: pytest.Collector) -> Generator[None, pytest.CollectReport,
                                                  pytest.CollectReport]:
    report = yield
    if report.skipped and under_ci():
        _failed_instead(report)
    return report
