"""Per-request latency bookkeeping: TTFT and TBT from token arrival times, by class."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np


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
        return float(getattr(self, name))


def summarize(timings: list[RequestTiming]) -> LatencySummary:
    ttfts = [t.ttft for t in timings if t.ttft is not None]
    tbts = [g for t in timings for g in t.tbts]
    tokens = sum(len(t.token_times) for t in timings)

    def stat(xs: list[float], q: float | None) -> float:
        if not xs:
            return float("nan")
        return float(np.mean(xs)) if q is None else float(np.percentile(xs, q))

    return LatencySummary(
        requests=len(timings),
        tokens=tokens,
        mean_ttft=stat(ttfts, None),
        p99_ttft=stat(ttfts, 99),
        mean_tbt=stat(tbts, None),
        p99_tbt=stat(tbts, 99),
    )
