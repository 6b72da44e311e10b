"""SLO-aware bisection."""

import pytest

from hygen_pod.policy.latency import LatencySummary, RequestTiming, summarize
from hygen_pod.profiling.slo_search import (
    check_targets,
    largest_setting,
    new_slice_within,
    robust_within,
    within,
    within_on_slices,
)


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


def test_new_slice_bound_rejects_slices_that_pass_at_the_line_but_spread() -> None:
    # mean 1.02, sd 0.02: bound 1.02 + t(0.9, 2)=1.886 x 0.02 x sqrt(4/3) = 1.0636
    assert new_slice_within([1.0, 1.02, 1.04], 0.05, 0.9) is False
    assert new_slice_within([1.0, 1.02, 1.04], 0.07, 0.9) is True
    assert new_slice_within([1.0, 1.02, 1.04], 0.05, 0) is True  # 0: the largest ratio
    assert new_slice_within([1.03, 1.031, 1.029], 0.05, 0.9) is True  # tight: 1.0322
    assert new_slice_within([1.04], 0.05, 0.9) is True  # one slice: no spread to judge
    assert new_slice_within([1.06], 0.05, 0.9) is False
    assert new_slice_within([1.0, float("nan")], 0.05, 0.9) is False  # a metric with no data


def ttfts(values: list[float]) -> list[RequestTiming]:
    return [RequestTiming(arrival=0.0, token_times=[v, v + 0.01]) for v in values]


def test_slices_must_each_pass_and_predict_a_new_one_passing() -> None:
    base = [ttfts([1.0] * 50) for _ in range(3)]
    spread = [ttfts([r] * 50) for r in (1.0, 1.02, 1.04)]  # each within 5%, spread wide
    tight = [ttfts([r] * 50) for r in (1.03, 1.031, 1.029)]
    one_over = [ttfts([r] * 50) for r in (1.03, 1.031, 1.06)]
    assert within_on_slices(spread, base, ["mean_ttft"], 0.05) is False
    assert within_on_slices(spread, base, ["mean_ttft"], 0.05, confidence=0) is True
    assert within_on_slices(tight, base, ["mean_ttft"], 0.05) is True
    assert within_on_slices(one_over, base, ["mean_ttft"], 0.05) is False  # a slice fails
    # every target is judged: TBT gaps are the same 10 ms in all runs
    assert within_on_slices(tight, base, ["mean_ttft", "p99_tbt"], 0.05) is True
    assert within_on_slices(spread, base, ["p99_tbt", "mean_ttft"], 0.05) is False
    with pytest.raises(ValueError, match="2 observed slices for 3"):
        within_on_slices(spread[:2], base, ["mean_ttft"], 0.05)
