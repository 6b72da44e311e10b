"""The profiler never reports a setting that met the targets only by doing no offline work."""

from __future__ import annotations

import random

from hygen_pod.contract.control import OfflineControl
from hygen_pod.policy.batch_shape import BatchShape
from hygen_pod.policy.latency import LatencySummary
from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.profiling.profiler import ProfilerSettings, RunOutcome, profile


class _SlowBox:
    """A runner whose steps are too slow for any small budget to admit offline work.

    Budgets under 50 ms and QPS under 1 admit nothing (targets hold); anything that
    admits offline work breaks the P99 TBT target.
    """

    model, hardware, engine_args, slices = "fake", "cpu", {}, 1

    def capture(self, seed: int) -> tuple[list[BatchShape], list[float]]:
        rng = random.Random(seed)
        shapes = [BatchShape(num_decodes=rng.randint(1, 64), decode_context=rng.randint(1, 9999))
                  for _ in range(200)]  # fmt: skip
        return shapes, [0.05 + 1e-4 * s.num_decodes for s in shapes]

    def use_predictor(self, predictor: LatencyPredictor) -> None:
        pass

    def run(self, control: OfflineControl, with_offline: bool, part: int = 0) -> RunOutcome:
        base = LatencySummary(10, 100, 0.1, 0.2, 0.05, 0.06)
        if not with_offline:
            return RunOutcome(base, 0.0)
        idle = (control.budget_ms < 50) if control.mode == "budget" else (control.qps < 1)
        if idle:
            return RunOutcome(base, 0.0)
        return RunOutcome(LatencySummary(10, 100, 0.1, 0.2, 0.05, 0.6), 500.0)


def test_a_budget_that_did_nothing_is_reported_as_zero() -> None:
    doc = profile(_SlowBox(), ProfilerSettings(["p99_tbt"], 0.5, iters=3, confidence=0))
    # the search's lowest probes pass (nothing admitted) ...
    assert any(ok for _, ok in doc.probes["budget_ms"])
    assert any(ok for _, ok in doc.probes["qps"])
    # ... but none of them did offline work, so the profile says online only
    assert doc.budget_ms == 0 and doc.offline_tps_budget == 0
    assert doc.qps == 0 and doc.offline_tps_qps == 0
