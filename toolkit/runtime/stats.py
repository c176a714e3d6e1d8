"""What a role counts while it runs, for /metrics: counters and latency histograms.

Plain integers and lists, always on and cheap (a dictionary update per message): the
Prometheus text is made from them by metrics.py, which imports prometheus-client only when
/metrics is first asked for, so an idle role does not carry it.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0)
"""Upper bounds, in seconds, of the latency histograms (the last bucket is +Inf)."""


class Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at most that), Prometheus's buckets, +Inf last."""
        running, out = 0, []
        for bound, count in zip([*map(str, BUCKETS), "+Inf"], self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class Stats:
    """A role's counters (by name, then by label value) and histograms (likewise)."""

    def __init__(self) -> None:
        self.counters: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int))
        self.histograms: defaultdict[str, dict[str, Histogram]] = defaultdict(dict)

    def count(self, name: str, label: str = "", by: int = 1) -> None:
        self.counters[name][label] += by

    def observe(self, name: str, seconds: float, label: str = "") -> None:
        found = self.histograms[name].get(label)
        if found is None:
            found = self.histograms[name][label] = Histogram()
        found.observe(seconds)
