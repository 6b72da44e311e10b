"""The discrete-event simulator with a known step-time model (fast, deterministic)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.profiling.oracle import MixedBatch
from hygen_pod.profiling.simulator import EngineSpec, RequestSpec, Simulator

# Step time: 5 ms + 20 us per prefill token + 50 us per decode; the predictor knows it.
PRED = LatencyPredictor(["intercept", "prefill_tokens", "num_decodes"], [5e-3, 2e-2, 5e-5])


def step(b: MixedBatch) -> float:
    return PRED.predict(b.shape())


def workload(seed=0, online_qps=4.0, window=30.0, n_offline=200, prefix=False, groups=5):
    rng = random.Random(seed)
    t, out = 0.0, []
    while (t := t + rng.expovariate(online_qps)) < window:
        out.append(RequestSpec(t, rng.randint(50, 600), rng.randint(5, 60)))
    heads = [tuple(range(k * 100, k * 100 + 3)) for k in range(groups)]
    for i in range(n_offline):
        pfx = heads[i % groups] + (100_000 + i,) if prefix else ()
        out.append(
            RequestSpec(
                0.0, rng.randint(200, 2000) if not prefix else 2048, rng.randint(10, 100), True, pfx
            )
        )
    return out


def test_online_only_completes_everything() -> None:
    wl = workload()
    res = Simulator(step).run(wl, "online_only", window_s=30)
    online = [s for s in wl if not s.offline]
    assert res.online.requests == len(online)
    assert [len(t.token_times) for t in res.timings] == [s.output for s in online]
    assert res.offline_tokens == 0 and res.online.mean_ttft > 0


def test_hygen_budget_holds_and_beats_naive_on_online_latency() -> None:
    wl = workload()
    sim = Simulator(step, predictor=PRED)
    base = sim.run(wl, "online_only", window_s=30)
    hygen = sim.run(wl, "hygen", window_s=30, budget_s=0.03)
    naive = sim.run(wl, "naive", window_s=30)
    assert hygen.over_budget_steps == 0
    assert hygen.online_preemptions == 0
    assert hygen.offline_tokens > 0 and naive.offline_tokens > 0
    assert hygen.online.p99_tbt <= 0.03 + 1e-9
    assert naive.online.p99_tbt > 1.3 * hygen.online.p99_tbt
    # Online work is the same in all three runs.
    assert hygen.online.tokens == naive.online.tokens == base.online.tokens


def test_qps_cap_limits_offline_starts() -> None:
    wl = workload()
    sim = Simulator(step)
    slow = sim.run(wl, "hygen_qps", window_s=30, qps=0.5)
    fast = sim.run(wl, "hygen_qps", window_s=30, qps=None)
    assert 0 < slow.offline_tokens < fast.offline_tokens


def test_kv_pressure_preempts_offline_never_online() -> None:
    wl = workload(n_offline=60)
    tight = EngineSpec(kv_blocks=600, max_batched_tokens=1024, max_seqs=64)
    res = Simulator(step, tight, predictor=PRED).run(wl, "hygen", window_s=30, budget_s=0.05)
    assert res.preemptions > 0 and res.online_preemptions == 0
    assert res.online.requests == sum(1 for s in wl if not s.offline)


def test_prefix_order_serves_more_offline_tokens_than_fifo() -> None:
    # 100 prefix groups arriving interleaved: FIFO cycles through more shared prefixes
    # than the cache holds; the trie order finishes one group before the next.
    wl = workload(online_qps=0.5, n_offline=1500, prefix=True, groups=100)
    spec = EngineSpec(kv_blocks=3000, max_seqs=16)
    dfs = Simulator(step, spec).run(wl, "offline_only", window_s=30)
    fifo = Simulator(step, spec, max_bypass=0).run(wl, "offline_only", window_s=30)
    assert dfs.offline_tokens > 1.2 * fifo.offline_tokens


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="predictor"):
        Simulator(step).run([], "hygen", window_s=1, budget_s=0.01)
    with pytest.raises(ValueError, match="unknown policy"):
        Simulator(step).run([], "fastest", window_s=1)  # type: ignore[arg-type]


def test_jitter_is_seeded_and_over_budget_counts_real_step_times() -> None:
    wl = workload(n_offline=100)
    plain = Simulator(step, predictor=PRED).run(wl, "hygen", window_s=30, budget_s=0.02)
    assert plain.over_budget_steps == plain.over_budget_predicted == 0  # step == predictor

    def noisy(seed: int):
        sim = Simulator(step, predictor=PRED, jitter_cv=0.2, jitter_seed=seed)
        return sim.run(wl, "hygen", window_s=30, budget_s=0.02)

    a, b, c = noisy(1), noisy(1), noisy(2)
    assert a.online == b.online and a.offline_tokens == b.offline_tokens  # seeded
    assert a.online != c.online
    # the predictor admitted within the budget; the noisy GPU overran it sometimes
    assert a.over_budget_predicted == 0 and 0 < a.over_budget_steps < a.steps
    assert a.online.p99_tbt > plain.online.p99_tbt  # noise lifts the tail
    with pytest.raises(ValueError, match="jitter_cv"):
        Simulator(step, jitter_cv=1.5)


def test_the_async_pipeline_hides_host_time_and_delays_new_requests_a_step() -> None:
    from hygen_pod.profiling.simulator import HostCosts

    wl = [s for s in workload() if not s.offline]
    host = HostCosts(base_s=1e-3)  # 1 ms of scheduling per step, under the 5 ms device step

    def run(queue: int, costs: HostCosts):
        return Simulator(step, EngineSpec(batch_queue=queue, host=costs)).run(
            wl, "online_only", window_s=30
        )

    device_only, sync, pipelined = run(1, HostCosts()), run(1, host), run(2, host)
    # synchronous: every step pays the host time on top of the device time
    assert sync.online.mean_tbt == pytest.approx(device_only.online.mean_tbt + 1e-3, rel=0.05)
    # async: host time hides under the device step ...
    assert pipelined.online.mean_tbt == pytest.approx(device_only.online.mean_tbt, rel=0.02)
    # ... but a request arriving during a step is first scheduled for the one after next
    assert pipelined.online.mean_ttft > device_only.online.mean_ttft
    assert pipelined.online.requests == device_only.online.requests  # all finish
    with pytest.raises(ValueError, match="batch_queue"):
        Simulator(step, EngineSpec(batch_queue=3)).run(wl, "online_only", window_s=30)


def test_host_costs_charge_hygen_only_with_offline_work() -> None:
    from hygen_pod.profiling.simulator import HostCosts

    c = HostCosts(base_s=1e-3, per_request_s=1e-5, hygen_base_s=2e-4, hygen_per_request_s=1e-6)
    assert c.step_s(100, hygen=False) == pytest.approx(2e-3)
    assert c.step_s(100, hygen=True) == pytest.approx(2e-3 + 3e-4)


def test_a_new_request_waits_until_its_whole_prompt_fits_as_in_vllm() -> None:
    """With vLLM's default (scheduler_reserve_full_isl), an online prompt larger than the
    free KV waits for a finished request's blocks; admitting on its first chunk alone, it
    would start at once and then preempt others (here: the other online request) to grow."""
    wl = [RequestSpec(0.0, 900, 200), RequestSpec(0.01, 900, 5)]
    kv = EngineSpec(kv_blocks=100, max_batched_tokens=256, max_seqs=8)
    full = Simulator(step, kv).run(wl, "online_only", window_s=60)
    first = Simulator(step, replace(kv, reserve_full_isl=False)).run(wl, "online_only", window_s=60)
    assert full.online.requests == first.online.requests == 2
    assert full.preemptions == 0 < first.preemptions


def test_yielding_to_prompts_keeps_offline_work_out_of_prompt_steps() -> None:
    """Same budget: yielding shortens online TTFT (a prompt's steps carry no offline
    tokens) and still does offline work in the other steps; other policies ignore it."""
    wl = workload()
    sim = Simulator(step, predictor=PRED)
    shared = sim.run(wl, "hygen", window_s=30, budget_s=0.03)
    yields = sim.run(wl, "hygen", window_s=30, budget_s=0.03, yield_to_prompts=True)
    assert yields.offline_tokens > 0.5 * shared.offline_tokens
    assert yields.online.mean_ttft < 0.9 * shared.online.mean_ttft
    assert yields.online.tokens == shared.online.tokens
    qps = [sim.run(wl, "hygen_qps", window_s=30, qps=2.0, yield_to_prompts=y) for y in (0, 1)]
    assert qps[0].online == qps[1].online and qps[0].offline_tokens == qps[1].offline_tokens
