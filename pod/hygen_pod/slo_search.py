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
    """Largest setting in [lo, hi] that keeps ``targets`` within tolerance of ``baseline``."""
    check_targets(targets, tolerance)
    return largest_setting(
        lambda v: within(evaluate(v), baseline, targets, tolerance), lo, hi, iters
    )


def check_targets(targets: Sequence[str], tolerance: float) -> None:
    unknown = [t for t in targets if t not in METRICS]
    if unknown:
        raise ValueError(f"unknown SLO metric(s) {unknown}; choose from {METRICS}")
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")


def largest_setting(ok: Callable[[float], bool], lo: float, hi: float, iters: int) -> SearchResult:
    """Largest value in [lo, hi] for which ``ok`` holds, assuming it holds below some bound.

    Bisects geometrically (settings span orders of magnitude: a few ms to hundreds
    of ms, a fraction of a request per second to dozens). ``lo`` must be > 0; when
    even ``lo`` fails the result is 0 (online only) with ``passed`` False.
    """
    if not 0 < lo < hi:
        raise ValueError("need 0 < lo < hi")
    probes: list[tuple[float, bool]] = []

    def probe(v: float) -> bool:
        good = ok(v)
        probes.append((v, good))
        return good

    if probe(hi):
        return SearchResult(hi, True, probes)
    if not probe(lo):
        return SearchResult(0.0, False, probes)
    good, bad = lo, hi
    for _ in range(iters):
        mid = math.sqrt(good * bad)
        if probe(mid):
            good = mid
        else:
            bad = mid
    return SearchResult(good, True, probes)
