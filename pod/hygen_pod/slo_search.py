"""SLO-aware search: the largest offline setting whose online metrics stay within tolerance.

Given an evaluation function (run the workload with a budget or QPS, return the
online latency summary), find the largest value whose targeted metrics are all
<= (1 + tolerance) x their online-only values. Interference grows with the
setting, so a bisection over [lo, hi] finds the boundary in ``iters`` runs.
"""

from __future__ import annotations

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
    """Bisect for the largest setting in [lo, hi] that keeps ``targets`` within tolerance."""
    unknown = [t for t in targets if t not in METRICS]
    if unknown:
        raise ValueError(f"unknown SLO metric(s) {unknown}; choose from {METRICS}")
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    out = SearchResult(lo, False)
    ok_hi = within(evaluate(hi), baseline, targets, tolerance)
    out.probes.append((hi, ok_hi))
    if ok_hi:
        return SearchResult(hi, True, out.probes)
    good, bad = lo, hi
    for _ in range(iters):
        mid = (good + bad) / 2
        ok = within(evaluate(mid), baseline, targets, tolerance)
        out.probes.append((mid, ok))
        if ok:
            good, out.passed = mid, True
        else:
            bad = mid
    out.value = good
    return out
