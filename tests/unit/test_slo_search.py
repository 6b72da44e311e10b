"""SLO-aware bisection."""

import pytest

from hygen_pod.latency import LatencySummary
from hygen_pod.slo_search import largest_passing, within


def summary(x: float) -> LatencySummary:
    return LatencySummary(10, 100, mean_ttft=x, p99_ttft=2 * x, mean_tbt=x / 10, p99_tbt=x / 5)


def test_bisection_finds_the_boundary() -> None:
    base = summary(1.0)
    # Interference grows linearly with the setting: metric = 1 + setting / 100.
    res = largest_passing(lambda v: summary(1 + v / 100), base, ["p99_tbt"], 0.10, 0.01, 100, 14)
    assert res.passed and 9.95 < res.value <= 10.0
    assert len(res.probes) == 16  # hi, lo, then the bisection


def test_hi_passing_and_nothing_passing() -> None:
    base = summary(1.0)
    assert largest_passing(lambda v: base, base, ["mean_ttft"], 0.05, 1, 50).value == 50
    res = largest_passing(lambda v: summary(5.0), base, ["mean_ttft"], 0.05, 1, 50, 4)
    assert not res.passed and res.value == 0 and len(res.probes) == 2


def test_within_and_bad_input() -> None:
    assert within(summary(1.05), summary(1.0), ["mean_ttft", "p99_tbt"], 0.05)
    assert not within(summary(1.06), summary(1.0), ["mean_ttft"], 0.05)
    with pytest.raises(ValueError, match="unknown SLO"):
        largest_passing(lambda v: summary(1), summary(1), ["p50_ttft"], 0.1, 0.1, 1)
    with pytest.raises(ValueError, match="lo < hi"):
        largest_passing(lambda v: summary(1), summary(1), ["mean_tbt"], 0.1, 0, 1)
