"""SLO-aware search: the largest offline setting whose online metrics stay within tolerance.

Given an evaluation function (run the workload with a budget or QPS, return the
online latency summary), find the largest value whose targeted metrics are all
<= (1 + tolerance) x their online-only values. Interference grows with the
setting, so a (geometric) bisection over [lo, hi] finds the boundary in ``iters`` runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hygen_pod.latency import LatencySummary

METRICS = ("mean_ttft", "p99_ttft", "mean_tbt", "p99_tbt")


def within(
    observed: LatencySummary, baseline: LatencySummary, targets: Sequence[str], tolerance: float
) -> bool:
    """Whether every targeted metric is within (1 + tolerance) x its online-only value."""
    return all(observed.metric(m) <= (1 + tolerance) * baseline.metric(m) for m in targets)


@dataclass
class SearchResult:
    value: float  # the largest passing setting (lo when none passes)
    passed: bool
    probes: list[tuple[float, bool]] = field(default_factory=list)


def largest_passing(
    evaluate: Callable[[float], LatencySummary],
    baseline: LatencySummary,
    targets: Sequence[str],
    tolerance: float,
    lo: float,
    hi: float,
    iters: int = 8,
) -> SearchResult:
    """Largest setting in [lo, hi] that keeps ``targets`` within tolerance.

    Bisects geometrically (settings span orders of magnitude: a few ms to hundreds
    of ms, a fraction of a request per second to dozens). ``lo`` must be > 0; when
    even ``lo`` fails the result is 0 (online only) with ``passed`` False.
    """
    unknown = [t for t in targets if t not in METRICS]
    if unknown:
        raise ValueError(f"unknown SLO metric(s) {unknown}; choose from {METRICS}")
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    if not 0 < lo < hi:
        raise ValueError("need 0 < lo < hi")
    probes: list[tuple[float, bool]] = []

    def ok(v: float) -> bool:
        good = within(evaluate(v), baseline, targets, tolerance)
        probes.append((v, good))
        return good

    if ok(hi):
        return SearchResult(hi, True, probes)
    if not ok(lo):
        return SearchResult(0.0, False, probes)
    good, bad = lo, hi
    for _ in range(iters):
        mid = math.sqrt(good * bad)
        if ok(mid):
            good = mid
        else:
            bad = mid
    return SearchResult(good, True, probes)
