"""The retuning rule: tighten near the target, relax far below it, hold otherwise."""

from hygen_operator.tuning import TuningRule, retune

T = {"p99_tbt": 50.0}


def obs(v: float | None) -> dict[str, float | None]:
    return {"mean_ttft": 10.0, "p99_ttft": 20.0, "mean_tbt": 5.0, "p99_tbt": v}


def test_tightens_when_the_worst_targeted_metric_nears_its_target():
    d = retune(10.0, 10.0, obs(48.0), T, 100)
    assert d.reason == "Tightened" and d.value == 7.0 and "96%" in d.message


def test_relaxes_when_far_below_but_never_past_the_ceiling():
    assert retune(10.0, 10.0, obs(20.0), T, 100).value == 11.5
    assert retune(14.9, 10.0, obs(20.0), T, 100).value == 15.0  # 1.5 x profiled
    assert retune(15.0, 10.0, obs(20.0), T, 100).reason == "Held"


def test_relaxing_from_zero_restarts_offline_work():
    d = retune(0.0, 10.0, obs(10.0), T, 100)
    assert d.reason == "Relaxed" and d.value > 0


def test_holds_in_the_band_and_without_samples():
    assert retune(10.0, 10.0, obs(40.0), T, 100).reason == "Held"
    assert retune(10.0, 10.0, obs(99.0), T, 3).reason == "NoSamples"
    assert retune(10.0, 10.0, obs(None), T, 100).reason == "NoSamples"


def test_only_targeted_metrics_count():
    # mean_ttft is far over 1 ms, but only p99_tbt is targeted
    assert retune(10.0, 10.0, obs(30.0), T, 100, TuningRule()).reason == "Held"
