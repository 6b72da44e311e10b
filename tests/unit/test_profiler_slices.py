"""Profiling on several trace slices: each must pass, and so must a new one by their spread."""

from __future__ import annotations

import random

import pytest

from hygen_pod.contract.control import OfflineControl
from hygen_pod.policy.batch_shape import BatchShape
from hygen_pod.policy.latency import RequestTiming, summarize
from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.profiling.profiler import ProfilerSettings, RunOutcome, profile


class _Spread:
    """Slices whose mean TTFT grows with the setting at different rates: slice k's ratio
    to online only is 1 + setting x ``slopes[k]`` (settings in ms or req/s alike)."""

    model, hardware, engine_args = "fake", "cpu", {}

    def __init__(self, slopes: list[float]) -> None:
        self.slopes, self.slices = slopes, len(slopes)

    def capture(self, seed: int) -> tuple[list[BatchShape], list[float]]:
        rng = random.Random(seed)
        shapes = [BatchShape(num_decodes=rng.randint(1, 64), decode_context=rng.randint(1, 9999))
                  for _ in range(200)]  # fmt: skip
        return shapes, [0.01 + 1e-4 * s.num_decodes for s in shapes]

    def use_predictor(self, predictor: LatencyPredictor) -> None:
        pass

    def run(self, control: OfflineControl, with_offline: bool, part: int = 0) -> RunOutcome:
        setting = 0.0
        if with_offline:
            setting = control.budget_ms if control.mode == "budget" else (control.qps or 0.0)
        ttft = 1.0 + setting * self.slopes[part]
        timings = [RequestTiming(arrival=0.0, token_times=[ttft, ttft + 0.01])] * 40
        return RunOutcome(summarize(timings), 100.0 * setting, timings)


def _profile(slopes: list[float]) -> tuple[float, float, int]:
    cfg = ProfilerSettings(["mean_ttft"], 0.05, iters=12, budget_range_ms=(0.01, 10.0),
                           qps_range=(0.01, 10.0))  # fmt: skip
    doc = profile(_Spread(slopes), cfg)
    return doc.budget_ms, doc.qps, doc.slices


def test_each_slice_alone_allows_up_to_its_own_limit() -> None:
    budget, qps, slices = _profile([0.04])  # 1 + 0.04 v <= 1.05: v <= 1.25
    assert slices == 1
    assert budget == pytest.approx(1.25, rel=0.01) and qps == pytest.approx(1.25, rel=0.01)


def test_several_slices_need_a_new_slice_predicted_within() -> None:
    # every slice alone passes up to 1.25 (the steepest); the prediction bound of ratios
    # 1 + v x (0, 0.02, 0.04) is 1 + v x (0.02 + 1.886 x 0.02 x sqrt(4/3)) = 1 + 0.0636 v,
    # within 1.05 up to v = 0.787
    budget, qps, slices = _profile([0.0, 0.02, 0.04])
    assert slices == 3
    assert budget == pytest.approx(0.787, rel=0.01) and qps == pytest.approx(0.787, rel=0.01)
    # slices that agree lose nothing to the bound
    assert _profile([0.04, 0.04, 0.04])[0] == pytest.approx(1.25, rel=0.01)


def test_several_slices_need_per_request_timings() -> None:
    class _NoTimings(_Spread):
        def run(self, control: OfflineControl, with_offline: bool, part: int = 0) -> RunOutcome:
            out = super().run(control, with_offline, part)
            return RunOutcome(out.online, out.offline_tps)

    with pytest.raises(ValueError, match="per-request timings"):
        profile(_NoTimings([0.0, 0.1]), ProfilerSettings(["mean_ttft"], 0.05))
