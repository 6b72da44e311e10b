"""The HyGen scheduler inside the real vLLM engine (CPU, tiny random-weight Llama)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hygen_pod.contract.control import ControlFile, OfflineControl, write_control
from hygen_pod.policy.batch_shape import BatchShape
from hygen_pod.vllm_adapter.scheduler import HyGenScheduler
from tests.helpers.engine import Req
from tests.integration.conftest import random_requests

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]


def test_online_only_matches_stock_vllm_step_for_step(fresh, tiny_model, tmp_path) -> None:
    reqs = random_requests(7, 14, offline=False, hi=400, out_hi=40, arrive_by=40)
    (tmp_path / "reqs.json").write_text(json.dumps([dataclasses.asdict(r) for r in reqs]))
    env = dict(os.environ, PYTHONPATH=str(ROOT), VLLM_ENABLE_V1_MULTIPROCESSING="0")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.helpers.stock_run",
            str(tiny_model),
            str(tmp_path / "reqs.json"),
            str(tmp_path / "stock.json"),
        ],
        check=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    stock = json.loads((tmp_path / "stock.json").read_text())
    ours = fresh.run(reqs)
    assert len(stock["steps"]) > 20
    assert fresh.scheduler.steps == stock["steps"]
    assert ours == stock["outputs"]


def test_offline_work_respects_the_budget_and_never_blocks_online(fresh, fitted_predictor) -> None:
    s: HyGenScheduler = fresh.scheduler
    # Budget: an iteration of 96 fresh prefill tokens, so long prompts must be chunked.
    probe = BatchShape()
    probe.add_prefill(96)
    budget_ms = fitted_predictor.predict(probe) * 1000
    s.set_control(OfflineControl(mode="budget", budget_ms=budget_ms))
    offline = random_requests(11, 24, offline=True, lo=100, hi=600, out_hi=24)
    online = random_requests(12, 16, offline=False, hi=200, arrive_by=120)
    out = fresh.run(offline + online)

    assert set(out) == {r.rid for r in offline + online}
    for r in offline + online:
        assert len(out[r.rid]) == r.max_tokens, r.rid
    recs = list(s.trace)
    with_offline = [r for r in recs if r.offline_tokens]
    assert with_offline, "no offline work ran"
    over = [r for r in recs if r.over_budget]
    assert not over, over[:3]
    for r in with_offline:
        assert r.predicted_s is not None and r.predicted_s <= budget_ms / 1000 * (1 + 1e-9)
    # Long offline prompts were chunked to fit the budget.
    assert max(r.offline_tokens for r in with_offline) < 600
    # Idle-engine progress steps (exempt from the budget) never carry online work.
    assert all(not r.online_tokens and not r.online_waiting for r in recs if r.progress)
    # An online request left waiting means the step carried no offline tokens.
    blocked = [r for r in recs if r.online_waiting and r.offline_tokens]
    assert not blocked, blocked[:3]
    # And online work ran in steps that also carried offline work (co-location happened).
    assert any(r.online_tokens and r.offline_tokens for r in recs)


def test_budget_zero_is_online_only_and_control_file_changes_it_live(
    fresh, fitted_predictor, tmp_path
) -> None:
    s: HyGenScheduler = fresh.scheduler
    control = tmp_path / "control.json"
    s._control_file = ControlFile(control)
    write_control(control, OfflineControl(mode="budget", budget_ms=0))
    offline = random_requests(21, 6, offline=True, hi=200, out_hi=8)
    online = random_requests(22, 6, offline=False, hi=100, out_lo=30, out_hi=40)

    # Drive a few steps by hand: with budget 0 no offline token may run.
    for r in offline + online:
        fresh.submit(r)
    for _ in range(10):
        fresh.engine.step()
    assert all(rec.offline_tokens == 0 for rec in s.trace)
    assert any(rec.online_tokens for rec in s.trace)
    # Raise the budget through the file, as the control API will.
    write_control(control, OfflineControl(mode="budget", budget_ms=1000))
    n_before = len(s.trace)
    while fresh.engine.has_unfinished_requests():
        fresh.engine.step()
    after = list(s.trace)[n_before:]
    assert after[0].budget_s == pytest.approx(1.0)
    assert any(rec.offline_tokens for rec in after)
    s._control_file = None


def test_preempted_offline_requests_finish_with_the_same_output(fresh) -> None:
    s: HyGenScheduler = fresh.scheduler
    # Long offline requests that together need more KV than the engine has (128 blocks).
    offline = random_requests(31, 8, offline=True, lo=500, hi=700, out_lo=60, out_hi=80)
    alone: dict[str, list[int]] = {}
    s.set_control(OfflineControl(mode="qps", qps=None))  # no latency cap: fill the KV cache
    for r in offline:
        alone |= fresh.run([dataclasses.replace(r, at_step=0)])
    assert s.reset_prefix_cache()
    s.trace.records.clear()
    online = random_requests(
        32, 10, offline=False, lo=300, hi=500, out_lo=10, out_hi=20, arrive_by=60
    )
    online = [dataclasses.replace(r, at_step=r.at_step + 20) for r in online]
    mixed = fresh.run(offline + online)
    preempted = sum(rec.offline_preempted for rec in s.trace)
    assert preempted > 0, "scenario did not force any preemption"
    assert sum(rec.online_preempted for rec in s.trace) == 0
    for r in offline:
        assert mixed[r.rid] == alone[r.rid], r.rid


def test_offline_requests_that_outgrow_the_kv_cache_together_all_finish(fresh) -> None:
    """Offline prompts that fit the cache, with outputs that do not: older requests
    preempt newer ones for blocks (this stalled the engine forever before)."""
    s: HyGenScheduler = fresh.scheduler
    s.set_control(OfflineControl(mode="qps", qps=None))
    s.trace.records.clear()
    reqs = random_requests(71, 16, offline=True, lo=200, hi=240, out_lo=70, out_hi=90)
    done = fresh.run(reqs, max_steps=5000)
    assert sorted(done) == sorted(r.rid for r in reqs)
    assert all(len(done[r.rid]) == r.max_tokens for r in reqs)
    assert sum(rec.offline_preempted for rec in s.trace) > 0, "the cache never filled up"
    assert not s.offline_ids


def test_offline_requests_sharing_a_prefix_run_back_to_back(fresh) -> None:
    s: HyGenScheduler = fresh.scheduler
    s.set_control(OfflineControl(mode="qps", qps=None))
    import random

    rng = random.Random(5)
    heads = [[rng.randrange(10, 500) for _ in range(128)] for _ in range(3)]
    reqs = []
    for i in range(12):
        head = heads[i % 3]  # interleaved on arrival
        tail = [rng.randrange(10, 500) for _ in range(16)]
        reqs.append(Req(f"pfx-{i}", head + tail, 2, offline=True))
    # One slot at a time makes the start order observable.
    s.max_num_active_reqs_saved = s.max_num_active_reqs
    s.max_num_active_reqs = 1
    try:
        fresh.run(reqs)
    finally:
        s.max_num_active_reqs = s.max_num_active_reqs_saved
    started = []
    for step in s.steps:
        for rid in step:
            if rid not in started:
                started.append(rid)
    groups = [int(r.split("-")[1]) % 3 for r in started]
    # Three runs of four: each shared prefix is computed once, then reused from cache.
    changes = sum(1 for a, b in itertools.pairwise(groups) if a != b)
    assert changes == 2, (started, groups)


def test_qps_mode_gates_offline_starts(fresh) -> None:
    s: HyGenScheduler = fresh.scheduler
    # A rate so low that no start is due during the test: nothing offline may begin.
    s.set_control(OfflineControl(mode="qps", qps=1e-6))
    offline = random_requests(41, 4, offline=True, hi=64, out_hi=4)
    online = random_requests(42, 3, offline=False, hi=64, out_lo=8, out_hi=8)
    for r in offline + online:
        fresh.submit(r)
    for _ in range(20):
        fresh.engine.step()
    assert sum(rec.online_tokens for rec in s.trace) > 0
    assert all(rec.offline_tokens == 0 for rec in s.trace)
    assert len(s.offline_queue) == 4
    # Lifting the cap starts them all, behind online work.
    s.set_control(OfflineControl(mode="qps", qps=None))
    done = set()
    while fresh.engine.has_unfinished_requests():
        done |= {o.request_id for o in fresh.engine.step() if o.finished}
    assert {r.rid for r in offline} <= done
    assert len(s.offline_queue) == 0 and not s.offline_ids


def test_budget_below_any_chunk_still_finishes_offline_work_when_idle(
    fresh, fitted_predictor
) -> None:
    s: HyGenScheduler = fresh.scheduler
    # Far below the predicted cost of any step: nothing ever fits the budget.
    s.set_control(OfflineControl(mode="budget", budget_ms=1e-6))
    offline = random_requests(51, 3, offline=True, lo=80, hi=120, out_hi=4)
    out = fresh.run(offline)
    assert {r.rid for r in offline} == set(out)
    recs = [r for r in s.trace if r.offline_tokens]
    assert recs and all(r.progress for r in recs)
    assert all(r.offline_tokens <= 32 and r.offline_reqs == 1 for r in recs)
    # With online work present, no progress step runs and the budget holds.
    s.trace.records.clear()
    online = random_requests(52, 2, offline=False, hi=64, out_lo=6, out_hi=6)
    more = random_requests(53, 2, offline=True, hi=64, out_hi=4)
    fresh.run(online + more)
    assert all(r.offline_tokens == 0 for r in s.trace if r.online_tokens or r.online_waiting)


def test_held_offline_work_does_not_spin_the_engine_loop(fresh) -> None:
    import time

    s: HyGenScheduler = fresh.scheduler
    s.set_control(OfflineControl(mode="qps", qps=None))
    for r in random_requests(61, 2, offline=True, lo=40, hi=60, out_lo=30, out_hi=30):
        fresh.submit(r)
    for _ in range(3):
        fresh.engine.step()
    assert len(s.offline_queue) == 0 and s.offline_ids  # running, not queued
    s.set_control(OfflineControl(mode="budget", budget_ms=0))
    t0 = time.perf_counter()
    for _ in range(5):
        fresh.engine.step()
    # Nothing may run, and each empty step yields (>= 2 ms) instead of spinning.
    assert all(r.offline_tokens == 0 for r in list(s.trace)[-5:])
    assert time.perf_counter() - t0 >= 5 * 0.002
    s.set_control(OfflineControl(mode="qps", qps=None))
    while fresh.engine.has_unfinished_requests():
        fresh.engine.step()
    assert not s.offline_ids
