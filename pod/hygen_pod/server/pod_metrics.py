"""Prometheus metrics of the pod, served on the engine's ``/metrics`` beside vLLM's own.

Histograms are fed as tokens arrive; gauges (SLO status, queue depths, budget,
scheduler status) are computed at scrape time from the live state, so a scrape
always sees the current window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hygen_pod.server.slo_window import CLASSES

if TYPE_CHECKING:
    from hygen_pod.contract.api import LiveMetrics

_TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60)
_TBT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.2, 0.5, 1, 2)


class PodMetrics(Collector):
    """All HyGen pod metrics; `live` returns the snapshot the gauges report."""

    def __init__(self, registry: CollectorRegistry, live: Callable[[], LiveMetrics]) -> None:
        self._live = live
        self.ttft = Histogram(
            "hygen_ttft_seconds",
            "time to first token, by request class (online: from when the request body was in)",
            ["class"],
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.tbt = Histogram(
            "hygen_tbt_seconds",
            "time between tokens, by request class",
            ["class"],
            buckets=_TBT_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "hygen_generated_tokens",
            "generated tokens, by request class",
            ["class"],
            registry=registry,
        )
        self.offline_results = Counter(
            "hygen_offline_results",
            "offline requests finished, by outcome",
            ["outcome"],
            registry=registry,
        )
        for c in CLASSES:  # export zeros before the first request
            self.ttft.labels(c)
            self.tbt.labels(c)
            self.tokens.labels(c)
        registry.register(self)

    def observe(self, cls: str, kind: str, value: float) -> None:
        if kind == "ttft":
            self.ttft.labels(cls).observe(value)
        else:
            self.tbt.labels(cls).observe(value)
        self.tokens.labels(cls).inc()

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterable[GaugeMetricFamily]:
        live = self._live()
        observed = GaugeMetricFamily(
            "hygen_slo_observed_seconds", "online metric over the sliding window", labels=["metric"]
        )
        target = GaugeMetricFamily("hygen_slo_target_seconds", "SLO target", labels=["metric"])
        met = GaugeMetricFamily(
            "hygen_slo_met", "1 when the windowed metric is within its target", labels=["metric"]
        )
        for s in live.slo:
            target.add_metric([s.metric], s.target_ms / 1e3)
            if s.observed_ms is not None:
                observed.add_metric([s.metric], s.observed_ms / 1e3)
                met.add_metric([s.metric], 1.0 if s.met else 0.0)
        yield from (observed, target, met)
        tps = GaugeMetricFamily(
            "hygen_tokens_per_second", "generated tokens/s over the window", labels=["class"]
        )
        tps.add_metric(["online"], live.online.tokens_per_s)
        tps.add_metric(["offline"], live.offline.tokens_per_s)
        yield tps
        depth = GaugeMetricFamily(
            "hygen_offline_requests", "offline requests in the pod's store", labels=["state"]
        )
        depth.add_metric(["queued"], live.offline_queued)
        depth.add_metric(["inflight"], live.offline_inflight)
        yield depth
        c = live.control
        yield GaugeMetricFamily(
            "hygen_offline_budget_seconds",
            "per-iteration offline latency budget (0 = online only; budget mode)",
            value=c.budget_ms / 1e3 if c.mode == "budget" else 0.0,
        )
        yield GaugeMetricFamily(
            "hygen_offline_qps_limit",
            "offline request starts per second (qps mode; -1 = uncapped)",
            value=(-1.0 if c.qps is None else c.qps) if c.mode == "qps" else 0.0,
        )
        sched = live.scheduler
        for key, help_ in (
            ("predictor_mape", "rolling mean |predicted - measured| / measured step time"),
            ("offline_waiting", "offline requests waiting in the scheduler's queue"),
            ("offline_running", "offline requests running in the engine"),
            ("over_budget_steps", "steps with offline tokens predicted over the budget"),
        ):
            if isinstance(sched.get(key), int | float):
                yield GaugeMetricFamily(f"hygen_scheduler_{key}", help_, value=float(sched[key]))
