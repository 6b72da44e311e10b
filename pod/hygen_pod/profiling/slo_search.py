"""SLO-aware search: the largest offline setting whose online metrics stay within tolerance.

Find the largest value (budget or QPS) whose targeted online metrics are all
<= (1 + tolerance) x their online-only values: `within` checks one run (a point
check), `robust_within` checks that the result holds on bootstrap resamples of
the online requests, and `within_on_slices` that it holds on several trace slices and
would on a new one. Interference grows with the setting, so a (geometric) bisection over
[lo, hi] (`largest_setting`) finds the boundary in ``iters`` runs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from hygen_pod.contract.metrics import BY_NAME, METRICS
from hygen_pod.policy.latency import LatencySummary, RequestTiming, statistic, summarize

__all__ = [
    "METRICS",
    "all_within",
    "largest_setting",
    "new_slice_within",
    "robust_within",
    "within",
    "within_on_slices",
]


def within(
    observed: LatencySummary, baseline: LatencySummary, targets: Sequence[str], tolerance: float
) -> bool:
    """Whether every targeted metric is within (1 + tolerance) x its online-only value."""
    return all(observed.metric(m) <= (1 + tolerance) * baseline.metric(m) for m in targets)


def robust_within(
    observed: Sequence[RequestTiming],
    baseline: Sequence[RequestTiming],
    targets: Sequence[str],
    tolerance: float,
    confidence: float = 0.9,
    resamples: int = 200,
    seed: int = 0,
) -> bool:
    """Whether the targets stay within tolerance on at least ``confidence`` of paired
    bootstrap resamples of the online requests (same requests in both runs).

    A point check passes a setting whose metric happens to sit just under the line on the
    profiled slice; on another slice it may not. This matters most for a P99 that sits on
    a cliff: when a small share of tokens lands in long prefill steps, a few more such
    tokens move the P99 from one mode to the other. Resampling the requests asks whether
    the setting would still pass on a similar slice. With ``confidence`` <= 0, or runs that
    are not paired (different request counts), it is the point check.
    """
    if confidence <= 0 or len(observed) != len(baseline) or not observed:
        return _within_timings(observed, baseline, targets, tolerance)
    rng = random.Random(seed)
    obs, base = _Arrays(observed), _Arrays(baseline)
    n, passed = len(observed), 0
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        passed += all(obs.metric(m, idx) <= (1 + tolerance) * base.metric(m, idx) for m in targets)
    return passed >= confidence * resamples


def all_within(
    observed: Sequence[Sequence[RequestTiming]],
    baseline: Sequence[Sequence[RequestTiming]],
    targets: Sequence[str],
    tolerance: float,
    confidence: float = 0.9,
    seed: int = 0,
) -> bool:
    """Whether every slice passes `robust_within` against its own baseline."""
    return all(
        robust_within(o, b, targets, tolerance, confidence, seed=seed)
        for o, b in zip(observed, baseline, strict=True)
    )


def within_on_slices(
    observed: Sequence[Sequence[RequestTiming]],
    baseline: Sequence[Sequence[RequestTiming]],
    targets: Sequence[str],
    tolerance: float,
    confidence: float = 0.9,
    seed: int = 0,
) -> bool:
    """Whether the targets hold on every slice (`robust_within`, each against its own
    baseline) and would on a new slice (`new_slice_within` over the per-slice ratios).

    The bootstrap covers which requests a slice holds, not what differs between stretches
    of a trace (arrival bursts, the GPU's noise): a setting that passes three slices at
    the line misses on the next one about as often as that one is the worst of four. The
    spread between the slices measures that difference.
    """
    if len(observed) != len(baseline):
        raise ValueError(f"{len(observed)} observed slices for {len(baseline)} baselines")
    if not all_within(observed, baseline, targets, tolerance, confidence, seed):
        return False
    pairs = [(_summary(o), _summary(b)) for o, b in zip(observed, baseline, strict=True)]
    ratios = {m: [_ratio(o.metric(m), b.metric(m)) for o, b in pairs] for m in targets}
    return all(new_slice_within(r, tolerance, confidence) for r in ratios.values())


def new_slice_within(ratios: Sequence[float], tolerance: float, confidence: float) -> bool:
    """Whether a new slice's ratio (observed / online-only) would be <= 1 + tolerance,
    by the one-sided ``confidence`` prediction bound of a normal sample of ``ratios``:
    mean + t(confidence, n-1) x sd x sqrt(1 + 1/n). One ratio gives no spread (True
    when it is itself within); so does ``confidence`` <= 0 (the largest ratio is used).
    """
    xs = np.asarray([r for r in ratios if math.isfinite(r)], dtype=float)
    if len(xs) != len(ratios):
        return False  # a metric with no samples cannot be judged within
    if len(xs) < 2 or confidence <= 0:
        return bool(xs.size == 0 or xs.max() <= 1 + tolerance)
    n = len(xs)
    bound = xs.mean() + stats.t.ppf(confidence, n - 1) * xs.std(ddof=1) * math.sqrt(1 + 1 / n)
    return bool(bound <= 1 + tolerance)


def _ratio(observed: float, baseline: float) -> float:
    return observed / baseline if baseline > 0 else float("nan")


def _summary(timings: Sequence[RequestTiming]) -> LatencySummary:
    return summarize(list(timings))


def _within_timings(
    observed: Sequence[RequestTiming],
    baseline: Sequence[RequestTiming],
    targets: Sequence[str],
    tolerance: float,
) -> bool:
    return within(_summary(observed), _summary(baseline), targets, tolerance)


class _Arrays:
    """Per-request TTFT and TBT arrays, for fast metrics over resampled requests."""

    def __init__(self, timings: Sequence[RequestTiming]) -> None:
        self.ttft = np.array([t.ttft if t.ttft is not None else np.nan for t in timings])
        self.tbts = [np.asarray(t.tbts, dtype=float) for t in timings]

    def metric(self, name: str, idx: list[int]) -> float:
        m = BY_NAME[name]
        if m.latency == "ttft":
            xs = self.ttft[idx]
            xs = xs[~np.isnan(xs)]
        else:
            xs = np.concatenate([self.tbts[i] for i in idx])
        return statistic(m, xs)


@dataclass
class SearchResult:
    value: float  # the largest passing setting (lo when none passes)
    passed: bool
    probes: list[tuple[float, bool]] = field(default_factory=list)


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
