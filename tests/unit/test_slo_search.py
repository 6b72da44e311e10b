"""SLO-aware bisection."""

import pytest

from hygen_pod.policy.latency import LatencySummary, RequestTiming, summarize
from hygen_pod.profiling.slo_search import check_targets, largest_setting, robust_within, within


def summary(x: float) -> LatencySummary:
    return LatencySummary(10, 100, mean_ttft=x, p99_ttft=2 * x, mean_tbt=x / 10, p99_tbt=x / 5)


def test_bisection_finds_the_boundary() -> None:
    base = summary(1.0)
    # Interference grows linearly with the setting: metric = 1 + setting / 100.
    res = largest_setting(
        lambda v: within(summary(1 + v / 100), base, ["p99_tbt"], 0.10), 0.01, 100, 14
    )
    assert res.passed and 9.95 < res.value <= 10.0
    assert len(res.probes) == 16  # hi, lo, then the bisection


def test_hi_passing_and_nothing_passing() -> None:
    base = summary(1.0)
    assert largest_setting(lambda v: within(base, base, ["mean_ttft"], 0.05), 1, 50, 6).value == 50
    res = largest_setting(lambda v: within(summary(5.0), base, ["mean_ttft"], 0.05), 1, 50, 4)
    assert not res.passed and res.value == 0 and len(res.probes) == 2


def test_within_and_bad_input() -> None:
    assert within(summary(1.05), summary(1.0), ["mean_ttft", "p99_tbt"], 0.05)
    assert not within(summary(1.06), summary(1.0), ["mean_ttft"], 0.05)
    with pytest.raises(ValueError, match="unknown SLO"):
        check_targets(["p50_ttft"], 0.1)
    with pytest.raises(ValueError, match="lo < hi"):
        largest_setting(lambda v: True, 0, 1, 4)


def requests(n: int, long_in: int, long_each: int = 5) -> list[RequestTiming]:
    """n requests of 50 tokens at 7 ms gaps; ``long_in`` of them have ``long_each`` - 1 gaps of
    40 ms between tokens (decode tokens that landed in a step carrying another request's
    prefill chunk); the first gap is the time to the first token."""
    out = []
    for i in range(n):
        gaps = [0.040 if i < long_in and k < long_each else 0.007 for k in range(50)]
        t, times = float(i), []
        for g in gaps:
            t += g
            times.append(t)
        out.append(RequestTiming(arrival=float(i) - 0.05, token_times=times))
    return out


def test_robust_check_rejects_a_p99_sitting_just_under_a_cliff() -> None:
    base = requests(100, long_in=6)  # 24 of 4,900 gaps long: P99 in the 7 ms mode
    near = requests(100, long_in=12)  # 48 long: P99 still 7 ms, 49 would make it 40 ms
    assert summarize(near).p99_tbt == pytest.approx(summarize(base).p99_tbt)
    assert robust_within(near, base, ["p99_tbt"], 0.1, confidence=0) is True  # point check
    assert robust_within(near, base, ["p99_tbt"], 0.1, confidence=0.9) is False
    far = requests(100, long_in=6)
    assert robust_within(far, base, ["p99_tbt"], 0.1, confidence=0.9) is True
    # the mean is not on a cliff: 48 vs 24 long gaps moves it by 2%
    assert robust_within(near, base, ["mean_tbt"], 0.1, confidence=0.9) is True
    # unpaired runs (different request counts) fall back to the point check
    assert robust_within(near[:-1], base, ["p99_tbt"], 0.1, confidence=0.9) is True
