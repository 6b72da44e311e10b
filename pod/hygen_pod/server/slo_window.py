"""Live latency per request class over a sliding time window, and SLO attainment.

The server records each request's token times as they arrive; the operator's
tuning loop reads `snapshot()` (via GET /control/metrics) and Prometheus reads
the same numbers. Samples older than the window are dropped as new ones come in.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from hygen_pod.contract.api import ClassWindow, SLOStatus
from hygen_pod.contract.metrics import REGISTRY, Metric
from hygen_pod.contract.settings import RequestClass
from hygen_pod.policy.latency import statistic

CLASSES: tuple[RequestClass, ...] = ("online", "offline")


class _Series:
    """(time, value) samples kept for `window_s` seconds."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque()

    def add(self, t: float, v: float) -> None:
        self.samples.append((t, v))

    def prune(self, cutoff: float) -> None:
        s = self.samples
        while s and s[0][0] < cutoff:
            s.popleft()

    def values(self) -> np.ndarray:
        return np.fromiter((v for _, v in self.samples), float, len(self.samples))


class SLOWindow:
    """TTFT/TBT samples and token counts per class over the last `window_s` seconds."""

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.window_s = window_s
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()
        self._ttft = {c: _Series() for c in CLASSES}
        self._tbt = {c: _Series() for c in CLASSES}
        self._tokens = {c: _Series() for c in CLASSES}
        self._done = {c: _Series() for c in CLASSES}
        self.observers: list[Callable[[RequestClass, str, float], None]] = []

    def _prune(self, now: float) -> None:
        cut = now - self.window_s
        for d in (self._ttft, self._tbt, self._tokens, self._done):
            for s in d.values():
                s.prune(cut)

    def first_token(self, cls: RequestClass, ttft_s: float, n_tokens: int = 1) -> None:
        self._observe(cls, "ttft", ttft_s, n_tokens)

    def next_tokens(self, cls: RequestClass, gap_s: float, n_tokens: int = 1) -> None:
        """``n_tokens`` arrived together ``gap_s`` after the previous ones: each of the
        n gaps is counted as gap/n (the engine may emit several tokens per step)."""
        self._observe(cls, "tbt", gap_s / n_tokens, n_tokens)

    def finished(self, cls: RequestClass) -> None:
        now = self._clock()
        with self._lock:
            self._done[cls].add(now, 1.0)

    def _observe(self, cls: RequestClass, kind: str, value: float, n: int) -> None:
        now = self._clock()
        with self._lock:
            self._prune(now)
            series = self._ttft[cls] if kind == "ttft" else self._tbt[cls]
            for _ in range(1 if kind == "ttft" else n):
                series.add(now, value)
            self._tokens[cls].add(now, float(n))
        for obs in self.observers:
            for _ in range(1 if kind == "ttft" else n):
                obs(cls, kind, value)

    def window(self, cls: RequestClass) -> ClassWindow:
        with self._lock:
            now = self._clock()
            self._prune(now)
            span = max(1e-9, min(self.window_s, now - self._start))
            ttft, tbt = self._ttft[cls].values(), self._tbt[cls].values()
            tokens = int(self._tokens[cls].values().sum())
            requests = len(self._done[cls].samples)
        series = {"ttft": ttft, "tbt": tbt}
        ms = {m.ms_field: statistic(m, series[m.latency]) * 1e3 for m in REGISTRY}
        return ClassWindow(
            requests=requests,
            tokens=tokens,
            tokens_per_s=tokens / span,
            **{k: None if math.isnan(v) else v for k, v in ms.items()},
        )

    def slo(self, targets_ms: dict[Metric, float]) -> list[SLOStatus]:
        """Each targeted online metric over the window against its target."""
        w = self.window("online")
        out = []
        for spec in REGISTRY:
            m = spec.name
            if m not in targets_ms:
                continue
            observed = getattr(w, spec.ms_field)
            met = None if observed is None else observed <= targets_ms[m]
            out.append(SLOStatus(metric=m, target_ms=targets_ms[m], observed_ms=observed, met=met))
        return out
