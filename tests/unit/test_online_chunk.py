"""The online prefill cap: the policy rule, and the simulator holding it in every step."""

from __future__ import annotations

import pytest

from hygen_pod.policy.online_chunk import OnlinePrefillCap
from hygen_pod.profiling.oracle import MixedBatch
from hygen_pod.profiling.simulator import Simulator
from tests.unit.test_simulator import PRED, step, workload


def test_prefills_fit_whole_then_one_is_cut_then_the_rest_wait() -> None:
    c = OnlinePrefillCap(100, has_decodes=True)
    assert [c.grant(30), c.grant(50), c.grant(40), c.grant(5)] == [30, 50, 20, 0]
    assert c.cut and c.stopped and c.left == 0


def test_a_prefill_that_may_not_be_split_waits_instead() -> None:
    c = OnlinePrefillCap(100, has_decodes=True)
    assert [c.grant(60), c.grant(60, partial_ok=False), c.grant(10)] == [60, 0, 0]
    assert not c.cut and c.stopped


def test_no_cap_without_decodes_or_without_a_setting() -> None:
    for c in (OnlinePrefillCap(100, has_decodes=False), OnlinePrefillCap(None, has_decodes=True)):
        assert not c.active and c.grant(2048) == 2048 and not c.cut
    with pytest.raises(ValueError, match=">= 1"):
        OnlinePrefillCap(0, has_decodes=True)


@pytest.mark.parametrize("cap", [64, 256])
def test_the_simulator_never_puts_more_than_the_cap_beside_decodes(cap: int) -> None:
    seen: list[MixedBatch] = []

    def record(b: MixedBatch) -> float:
        seen.append(b)
        return step(b)

    online = [s for s in workload(online_qps=6.0) if not s.offline]
    res = Simulator(record).run(online, "online_only", window_s=30, online_prefill_cap=cap)
    assert res.online.requests == len(online)  # everything still finishes
    beside = [sum(c for c, _ in b.prefills) for b in seen if b.decodes]
    assert beside and max(beside) <= cap
    assert cap in beside  # the cap binds on this load
    alone = [sum(c for c, _ in b.prefills) for b in seen if not b.decodes]
    assert max(alone) > cap  # without decodes a step keeps the whole token budget
    seen.clear()
    Simulator(record).run(online, "online_only", window_s=30)
    assert max(sum(c for c, _ in b.prefills) for b in seen if b.decodes) > cap  # contrast


def test_hygen_with_the_cap_still_does_offline_work_and_finishes_online() -> None:
    wl = workload(online_qps=4.0, n_offline=100)
    sim = Simulator(step, predictor=PRED)
    res = sim.run(wl, "hygen", window_s=30, budget_s=0.02, online_prefill_cap=128)
    assert res.offline_tokens > 0 and res.over_budget_steps == 0
    assert res.online.requests == sum(1 for s in wl if not s.offline)


def test_the_stock_baselines_ignore_the_cap() -> None:
    wl = workload()
    sim = Simulator(step)
    a = sim.run(wl, "naive", window_s=30, online_prefill_cap=64)
    b = sim.run(wl, "naive", window_s=30)
    assert a.online == b.online and a.offline_tokens == b.offline_tokens


def test_peek_says_what_grant_would_give_without_taking_it() -> None:
    c = OnlinePrefillCap(100, has_decodes=True)
    assert c.peek(60) == 60 and c.left == 100 and not c.stopped
    assert c.grant(60) == 60
    assert c.peek(60) == 40 and c.peek(60, partial_ok=False) == 0
    assert c.left == 40 and not c.stopped and not c.cut
    assert c.grant(60) == 40 and c.cut and c.stopped
    assert c.peek(1) == 0
    assert OnlinePrefillCap(None, has_decodes=True).peek(5000) == 5000
