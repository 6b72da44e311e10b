"""Every surface that carries one field per SLO metric matches the metric registry.

Adding a metric is an entry in `hygen_pod.contract.metrics`; this test names each wire
model (pod API, profile, CRD) that then needs its ``<metric>_ms`` field.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hygen_operator.resources import ObservedMetrics, SLOTargets
from hygen_pod.contract.api import ClassWindow
from hygen_pod.contract.metrics import METRICS, REGISTRY, spec
from hygen_pod.contract.profile import MetricValues
from hygen_pod.policy.latency import LatencySummary, RequestTiming, statistic, summarize

MS_FIELDS = {m.ms_field for m in REGISTRY}


@pytest.mark.parametrize("model", [ClassWindow, MetricValues, SLOTargets, ObservedMetrics])
def test_wire_models_carry_one_field_per_metric(model) -> None:
    fields = {f for f in model.model_fields if f.endswith("_ms")}
    assert fields == MS_FIELDS, (
        f"{model.__module__}.{model.__name__}: add/remove {fields ^ MS_FIELDS}"
    )


def test_latency_summary_has_every_metric() -> None:
    names = {f.name for f in dataclasses.fields(LatencySummary)} - {"requests", "tokens"}
    assert names == set(METRICS)


def test_names_and_statistics_derive_from_the_registry() -> None:
    assert [m.camel for m in REGISTRY] == ["meanTtftMs", "p99TtftMs", "meanTbtMs", "p99TbtMs"]
    assert spec("p99_tbt").title == "P99 TBT" and spec("mean_ttft").title == "mean TTFT"
    with pytest.raises(ValueError, match="choose from"):
        spec("p50_tbt")
    xs = np.arange(1.0, 101.0)
    assert statistic(spec("mean_tbt"), xs) == pytest.approx(50.5)
    assert statistic(spec("p99_tbt"), xs) == pytest.approx(np.percentile(xs, 99))
    assert np.isnan(statistic(spec("p99_ttft"), np.array([])))


def test_summary_and_profile_values_agree() -> None:
    timings = [RequestTiming(0.0, [0.1 * (i + 1) + 0.01 * k for k in range(5)]) for i in range(20)]
    s = summarize(timings)
    v = s.values_ms()
    for m in REGISTRY:
        assert getattr(v, m.ms_field) == pytest.approx(s.metric(m.name) * 1e3)


def test_crd_targets_error_names_every_field() -> None:
    with pytest.raises(ValueError, match="meanTtftMs, p99TtftMs, meanTbtMs, p99TbtMs"):
        SLOTargets()
