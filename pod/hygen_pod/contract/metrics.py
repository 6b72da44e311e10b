"""The SLO metrics, in one registry: every metric list, CLI choice, summary and label
is derived from `REGISTRY`; the statistic itself is `policy.latency.statistic`.

A metric is a statistic (mean or a percentile) of one per-token latency (TTFT or
TBT). Adding one is an entry here plus its name in `Metric`; the wire models that
carry one field per metric (`<name>_ms`) are checked against the registry by
`tests/unit/test_metric_registry.py`, which names each model to extend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Metric = Literal["mean_ttft", "p99_ttft", "mean_tbt", "p99_tbt"]
Latency = Literal["ttft", "tbt"]


@dataclass(frozen=True)
class MetricSpec:
    """One SLO metric: which latency, which statistic, and its names on every surface."""

    name: Metric
    latency: Latency
    percentile: float | None  # None: the mean

    @property
    def ms_field(self) -> str:
        """The field holding it in milliseconds (pod API, profile, CRD in camelCase)."""
        return f"{self.name}_ms"

    @property
    def camel(self) -> str:
        """Its CRD / kubectl name, e.g. ``p99TbtMs``."""
        head, *rest = self.ms_field.split("_")
        return head + "".join(p.capitalize() for p in rest)

    @property
    def title(self) -> str:
        """Human label, e.g. ``P99 TBT``."""
        stat = "mean" if self.percentile is None else f"P{self.percentile:g}"
        return f"{stat} {self.latency.upper()}"


REGISTRY: tuple[MetricSpec, ...] = (
    MetricSpec("mean_ttft", "ttft", None),
    MetricSpec("p99_ttft", "ttft", 99),
    MetricSpec("mean_tbt", "tbt", None),
    MetricSpec("p99_tbt", "tbt", 99),
)
METRICS: tuple[Metric, ...] = tuple(m.name for m in REGISTRY)
BY_NAME: dict[str, MetricSpec] = {m.name: m for m in REGISTRY}
if set(METRICS) != set(get_args(Metric)):  # pragma: no cover - a build error
    raise RuntimeError("contract.metrics: Metric and REGISTRY list different metrics")


def spec(name: str) -> MetricSpec:
    """The registry entry for ``name``; a ValueError listing the choices otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown SLO metric {name!r}; choose from {list(METRICS)}") from None
