"""Admitting every running offline decode at once decides exactly as one `_offer` per
decode, even where the closed-form cost rounds differently from the running sum."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")

from hygen_pod.policy.admission import Admitter, Limits, OfflineCandidate
from hygen_pod.policy.batch_shape import BatchShape
from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.vllm_adapter.scheduler import HyGenScheduler

PRED = LatencyPredictor(
    ["intercept", "num_decodes", "decode_context", "decode_context_sq"],
    [4.1e-3, 3.3e-5, 7.7e-5, 1.9e-4],
)
BS = 16


def _limits(budget_s: float) -> Limits:
    return Limits(budget_s=budget_s, tokens=4096, free_blocks=10**6, slots=1024, block_size=BS)


def _one_by_one(online: BatchShape, computed: list[int], budget_s: float) -> Admitter:
    """The reference: `Admitter._offer` per decode, in running order."""
    a = Admitter(PRED, online, _limits(budget_s), fast_decodes=False)
    for i, c in enumerate(computed):
        a.offer(OfflineCandidate(f"r{i}", c, 1, 1, -(-(c + 1) // BS), True, (i,)))
    return a


def _at_once(online: BatchShape, computed: list[int], budget_s: float) -> tuple[bool, Admitter]:
    reqs = [SimpleNamespace(num_computed_tokens=c) for c in computed]
    total = sum(c + 1 for c in computed)
    total_sq = sum((c + 1) ** 2 for c in computed)
    sched = SimpleNamespace(block_size=BS, _held_blocks=lambda r: 0)
    a = Admitter(PRED, online, _limits(budget_s))
    ok = HyGenScheduler._admit_all_decodes(sched, a, reqs, total, total_sq, [])  # type: ignore[arg-type]
    return ok, a


def _case(rng: random.Random) -> tuple[BatchShape, list[int]]:
    online = BatchShape()
    if rng.random() < 0.7:  # else the step is empty and the first decode pays the intercept
        for _ in range(rng.randint(1, 8)):
            online.add_decode(rng.randint(20, 4000))
    return online, [rng.randint(10, 8000) for _ in range(rng.randint(2, 200))]


def test_a_budget_at_the_running_sum_admits_all_and_one_ulp_less_refuses() -> None:
    rng = random.Random(7)
    rounded = 0
    for _ in range(400):
        online, computed = _case(rng)
        exact = _one_by_one(online, computed, math.inf).predicted  # the running sum
        w_nd, w_sd, w_sd2, w_icpt = PRED.decode_weights
        s1 = sum(c + 1 for c in computed)
        s2 = sum((c + 1) ** 2 for c in computed)
        icpt = w_icpt if online.empty else 0.0
        closed = PRED.predict(online) + (len(computed) * w_nd + w_sd * s1 + w_sd2 * s2 + icpt)
        rounded += closed != exact
        for budget_s in (exact, math.nextafter(exact, 0.0)):
            ref = _one_by_one(online, computed, budget_s)
            all_fit = len(ref.allocations) == len(computed)
            ok, got = _at_once(online, computed, budget_s)
            assert ok == all_fit
            if ok:  # the same prediction carried on to the rest of the step
                assert got.predicted == pytest.approx(ref.predicted, rel=1e-12)
                assert got.shape == ref.shape
        assert _at_once(online, computed, exact)[0]
    # the cases where the closed form alone would decide otherwise did occur
    assert rounded > 20


def test_well_under_the_budget_the_closed_form_is_used() -> None:
    rng = random.Random(3)
    for _ in range(50):
        online, computed = _case(rng)
        exact = _one_by_one(online, computed, math.inf).predicted
        ok, got = _at_once(online, computed, exact * 1.01)
        assert ok and got.predicted == pytest.approx(exact, rel=1e-12)
        assert not _at_once(online, computed, exact * 0.99)[0]
