"""Admission to a handshake: sources, the strangers' pool, and refusals logged sparingly."""

from __future__ import annotations

import logging

import pytest

from tests.unit.runtime.fakes import Clock
from toolkit.runtime.admission import Admission, source_of


@pytest.mark.parametrize(("host", "source"), [
    ("10.0.0.7", "10.0.0.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),  # the same /64: one source
    ("[2001:db8:1:3::9]", "2001:db8:1:3::/64"),
    ("::ffff:10.0.0.7", "10.0.0.7"),
    ("worker-7.example", "worker-7.example"),
])
def test_an_ipv6_peer_counts_by_its_64(host: str, source: str) -> None:
    assert source_of(host) == source


def test_known_sources_pass_a_full_strangers_pool_but_keep_their_own_cap() -> None:
    admission = Admission(handshakes=2, per_source=2)
    admission.end("10.0.0.1", admission.begin("10.0.0.1"), authenticated=True)  # now known
    strangers = [admission.begin(s) for s in ("10.6.6.1", "10.6.6.2")]
    assert admission.over_limit("10.6.6.3") == (
        "pending handshakes from unknown peers (limit 2)")
    assert admission.over_limit("10.0.0.1") is None
    assert admission.begin("10.0.0.1") is False and admission.begin("10.0.0.1") is False
    assert admission.over_limit("10.0.0.1") == "pending handshakes from 10.0.0.1 (limit 2)"
    admission.end("10.6.6.1", strangers[0], authenticated=False)  # a stranger stays one
    assert admission.over_limit("10.6.6.3") is None and "10.6.6.1" not in admission.known


def test_refusals_are_logged_once_a_minute_per_source_with_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(0.0)
    admission = Admission(1, 1, monotonic=clock)
    with caplog.at_level(logging.WARNING):
        for n in range(100):
            admission.refused("master", "10.6.6.6:1", "10.6.6.6", f"frame of {n} bytes")
        admission.refused("master", "10.6.6.6:3", "10.6.6.6", "bad proof")  # another reason
        clock.now += 61
        admission.refused("master", "10.6.6.6:2", "10.6.6.6", "frame of 7 bytes")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["master: refused connection from 10.6.6.6:1: frame of 0 bytes",
                     "master: refused connection from 10.6.6.6:3: bad proof",
                     "master: refused connection from 10.6.6.6:2: frame of 7 bytes (and 99 "
                     "more like it from 10.6.6.6 in the last minute)"]
