"""Per-request latency bookkeeping: TTFT and TBT from token arrival times, by class."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from hygen_pod.contract.metrics import BY_NAME, REGISTRY, MetricSpec
from hygen_pod.contract.profile import MetricValues


@dataclass(slots=True)
class RequestTiming:
    """Wall-clock times of one request: arrival and each token's emission."""

    arrival: float
    token_times: list[float] = field(default_factory=list)

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.arrival if self.token_times else None

    @property
    def tbts(self) -> list[float]:
        t = self.token_times
        return [b - a for a, b in itertools.pairwise(t)]


@dataclass(slots=True)
class LatencySummary:
    """Mean and P99 of TTFT and TBT (seconds) over a set of requests."""

    requests: int
    tokens: int
    mean_ttft: float
    p99_ttft: float
    mean_tbt: float
    p99_tbt: float

    def metric(self, name: str) -> float:
        return float(getattr(self, BY_NAME[name].name))

    def values_ms(self) -> MetricValues:
        """The summary in milliseconds, as profiles store it."""
        return MetricValues(**{m.ms_field: self.metric(m.name) * 1e3 for m in REGISTRY})


def statistic(m: MetricSpec, xs: np.ndarray) -> float:
    """Metric ``m``'s statistic (mean or percentile) of ``xs``; NaN when empty."""
    if xs.size == 0:
        return float("nan")
    return float(np.mean(xs) if m.percentile is None else np.percentile(xs, m.percentile))


def summarize(timings: list[RequestTiming]) -> LatencySummary:
    series = {
        "ttft": np.array([t.ttft for t in timings if t.ttft is not None], dtype=float),
        "tbt": np.array([g for t in timings for g in t.tbts], dtype=float),
    }
    return LatencySummary(
        requests=len(timings),
        tokens=sum(len(t.token_times) for t in timings),
        **{m.name: statistic(m, series[m.latency]) for m in REGISTRY},
    )
