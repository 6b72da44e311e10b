"""HyGen under vLLM's async scheduling, driven as the GPU engine core drives it.

A real vLLM scheduler with a batch queue of 2 (`tests/helpers/sched_harness.py`): step N+1
is scheduled before step N's tokens are back. No model runs, so this runs on the CPU and
shows what async mode does to the schedule and the outputs.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("vllm")

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler

from hygen_pod.contract.control import OfflineControl
from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.policy.rate import TokenBucket
from hygen_pod.vllm_adapter.scheduler import HyGenAsyncScheduler, HyGenScheduler
from hygen_pod.vllm_adapter.steady_scan import SteadyCarry
from tests.helpers.sched_harness import build, drive, expected_tokens, requests, token

pytestmark = pytest.mark.engine

# ~1 ms + 10 us per prefill token + 0.1 ms per decode: a 5 ms budget admits a few hundred
# offline prefill tokens beside the online work, so budget, KV and slots all bind.
PREDICTOR = LatencyPredictor(
    ["intercept", "prefill_tokens", "num_decodes", "decode_context"], [0.001, 0.01, 0.0001, 1e-5]
)


def test_the_plugin_class_builds_the_binding_the_engine_runs(tiny_model) -> None:
    on = build(HyGenScheduler, tiny_model, async_scheduling=True)
    off = build(HyGenScheduler, tiny_model, async_scheduling=False)
    assert type(on) is HyGenAsyncScheduler and isinstance(on, AsyncScheduler)
    assert type(off) is HyGenScheduler and not isinstance(off, AsyncScheduler)


@pytest.mark.parametrize("async_on", [True, False], ids=["async", "sync"])
def test_without_offline_work_each_step_and_token_is_stock_vllms(tiny_model, async_on) -> None:
    """Online work alone is scheduled exactly as stock vLLM schedules it, in both modes:
    the same tokens per request in every schedule() call, the same outputs."""
    stock_cls = AsyncScheduler if async_on else Scheduler
    queue = 2 if async_on else 1
    reqs = lambda: requests(24, prompt=300, out=30)  # noqa: E731 - fresh Request objects
    stock = drive(build(stock_cls, tiny_model, async_scheduling=async_on), reqs(), queue)
    ours = drive(build(HyGenScheduler, tiny_model, async_scheduling=async_on), reqs(), queue)
    assert ours.steps == stock.steps
    assert ours.tokens == stock.tokens == expected_tokens(reqs())
    # decodes run in back-to-back steps: the only empty schedule() calls are the ones
    # that return the last finished requests (a plain-Scheduler binding under a batch
    # queue of 2 leaves every other step empty)
    assert sum(1 for step in ours.steps if not step) <= 2


def test_offline_work_under_a_budget_with_tokens_in_flight(tiny_model) -> None:
    """Async mode with a tight KV cache: offline work runs under the budget, offline
    requests preempted with a token in flight finish with the right tokens, online work
    is never preempted, and every step is traced once."""
    s = build(HyGenScheduler, tiny_model, async_scheduling=True, num_blocks=120)
    assert isinstance(s, HyGenAsyncScheduler)
    s.predictor = PREDICTOR
    s.set_control(OfflineControl(mode="budget", budget_ms=5.0))
    reqs = requests(6, prompt=100, out=40, prefix="on") + requests(
        20, prompt=150, out=60, prefix="off", offline=True
    )
    want = expected_tokens(reqs)
    run = drive(s, reqs, 2)
    assert run.tokens == want  # nothing lost, duplicated or wrong
    assert set(run.finished) == set(want)
    recs = list(s.trace.records)
    assert len(recs) == len(run.steps)  # one record per schedule() call, none dropped
    assert sum(r.offline_preempted for r in recs) > 0  # the KV squeeze happened
    assert sum(r.online_preempted for r in recs) == 0
    assert sum(1 for r in recs if r.offline_tokens) > len(recs) // 2
    assert not [r for r in recs if r.over_budget]
    ran = [r for r in recs if r.online_tokens + r.offline_tokens]
    assert all(r.measured_s is not None and r.measured_s >= 0 for r in ran)


@pytest.mark.parametrize("async_on", [True, False], ids=["async", "sync"])
def test_a_long_online_prompt_arriving_into_a_cache_full_of_offline_work_starts_at_once(
    tiny_model, async_on
) -> None:
    """Offline work gives way: a 1,500-token online prompt that arrives while offline
    decodes hold the KV cache is scheduled in the first step after it arrives, as it
    would be with no offline work. On vLLM 0.33 the base method admits a new request
    only if its whole prompt fits (`scheduler_reserve_full_isl`), so KV must be freed
    for the whole prompt, not for its first chunk."""
    s = build(HyGenScheduler, tiny_model, async_scheduling=async_on, num_blocks=130)
    s.predictor = PREDICTOR
    s.set_control(OfflineControl(mode="budget", budget_ms=50.0))
    offline = requests(12, prompt=150, out=200, prefix="off", offline=True)
    online = requests(1, prompt=1500, out=4, prefix="on")
    arrive = 40
    run = drive(s, offline, 2 if async_on else 1, arrivals={arrive: online}, max_calls=10_000)
    first = next(k for k, step in enumerate(run.steps) if "on0" in step)
    assert first == arrive, f"the online prompt waited {first - arrive} steps"
    assert run.tokens == expected_tokens(offline + online)
    recs = list(s.trace.records)
    assert sum(r.offline_preempted for r in recs) > 0  # the cache was full of offline work
    assert sum(r.online_preempted for r in recs) == 0


@pytest.mark.parametrize("async_on", [True, False], ids=["async", "sync"])
def test_hygens_own_prefix_cache_lookups_emit_no_kv_events(tiny_model, async_on) -> None:
    """With KV cache events in "full" report mode, vLLM's prefix-cache lookup emits a
    BlockStored event per hit for external consumers (routers). HyGen looks up queued
    requests to plan a step (phase 1's online queue, phase 2's offline queue head); those
    lookups must emit nothing, so every cache-hit event comes from the base method
    starting a request. Requests share prompts, so most starts hit the cache."""
    s = build(HyGenScheduler, tiny_model, async_scheduling=async_on, max_seqs=4)
    s.predictor = PREDICTOR
    s.set_control(OfflineControl(mode="budget", budget_ms=50.0))
    s.kv_cache_manager.enable_kv_cache_events = True
    calls = {"in base": 0, "outside": 0}

    def emitted(request: object, blocks: object) -> None:
        calls["in base" if s._inside_base else "outside"] += 1

    s.kv_cache_manager.coordinator.emit_cached_block_events = emitted  # type: ignore[method-assign]
    # the same two prompts under many ids (requests() derives a prompt from its index)
    offline = [r for k in range(8) for r in requests(2, 160, 12, prefix=f"off{k}-", offline=True)]
    online = {
        step: requests(2, 160, 6, prefix=f"on{step}-") for step in range(3, 60, 6)
    }  # fmt: skip
    everyone = offline + [r for rs in online.values() for r in rs]
    for r in everyone:
        r.kv_cache_report_mode = "full"  # type: ignore[attr-defined]
    run = drive(s, offline, 2 if async_on else 1, arrivals=online)
    assert run.tokens == expected_tokens(everyone)
    assert calls["in base"] > 0, "no start hit the prefix cache: the test checks nothing"
    assert calls["outside"] == 0


class _NoShortcutsAsync(HyGenAsyncScheduler):
    fast_paths = False


class _NoShortcuts(HyGenScheduler):
    fast_paths = False


def _case(control: OfflineControl, **kw: object) -> dict:
    base = {"blocks": 2000, "seqs": 256, "threshold": 0, "online": 4, "offline": 24,
            "online_out": 30, "offline_out": 50, "offline_prompt": 120, "online_prompt": 90,
            "arrivals": (), "arrival_prompt": 0, "stops": False,
            "bulk": False, "prompts": False, "distinct": False}  # fmt: skip
    return {"control": control, **base, **kw}


def _budget(ms: float, cap: int | None = None) -> OfflineControl:
    return OfflineControl(mode="budget", budget_ms=ms, online_prefill_cap=cap)


_CHURN = _case(
    _budget(50.0),
    blocks=400,
    seqs=16,
    online=4,
    offline=24,
    online_out=30,
    offline_out=90,
    arrivals=tuple(range(4, 120, 2)),
    arrival_prompt=120,
    stops=True,
    prompts=True,
)

# Each case reaches the steady state (everything decoding) under one of the conditions the
# steady-state step checks, so a shortcut that ignores it changes the schedule.
SHORTCUT_CASES = {
    # online prompts arriving mid-run, KV tight enough to preempt, the prefill cap
    "mixed": _case(_budget(4.0), blocks=160, arrivals=(5, 17, 40), bulk=True),
    "mixed-cap": _case(_budget(4.0, cap=64), blocks=160, arrivals=(5, 17, 40), bulk=True),
    # the budget admits some of the running offline decodes only
    "budget-binds": _case(_budget(2.2), seqs=16, offline=30, online_out=150, offline_out=150),
    # offline work alone: the first decode carries the step's intercept
    "offline-only": _case(_budget(1.8), seqs=12, online=0, offline=20, offline_out=150),
    # online decodes at block boundaries need blocks offline work holds
    "kv-tight": _case(
        _budget(50.0), blocks=120, seqs=12, offline=20, online_out=150, offline_out=150
    ),
    # queued offline work starts in freed slots, its chunk cut by the long-prefill cap
    # (vLLM's adaptive threshold: max(32, 512 tokens / 3 running) = 170 of a 400 prompt)
    "long-prefill-cap": _case(
        _budget(50.0),
        seqs=12,
        threshold=32,
        online=3,
        offline=30,
        online_out=200,
        offline_out=40,
        offline_prompt=400,
    ),
    # requests that stop (a stop token) at scattered steps while the rest decode on: the
    # carried scan (steady_scan.py) takes them out
    "stops": _case(
        _budget(50.0),
        seqs=40,
        online=12,
        offline=60,
        online_out=120,
        offline_out=120,
        stops=True,
    ),
    # the offline decodes' predicted cost grows with their contexts until the budget binds
    "budget-grows": _case(
        _budget(1.815), seqs=8, online=2, offline=6, online_out=150, offline_out=150
    ),
    # online requests run into the model length (4,096) while offline work decodes on
    "model-length": _case(
        _budget(50.0),
        seqs=8,
        online=2,
        offline=4,
        online_prompt=3700,
        online_out=500,
        offline_out=450,
    ),
    # a busy server: online prompts arriving every other step while offline work decodes,
    # some requests stopping early: the steady-state step plans the waiting prompts, and
    # (async) leaves out requests with only their last token in flight
    "churn": _CHURN,
    # the same with a KV cache that runs short: offline work is preempted for online
    # decodes at block boundaries between steady-state steps (16 preemptions)
    "churn-kv": {**_CHURN, "blocks": 120},
    # the online prefill cap (64 tokens) over 40-token prompts arriving one every 4 steps,
    # and four at once every 8: the second is cut (the step's last item), the others
    # wait, and no offline prompt (400 tokens) starts after the cut one
    "churn-cap": {
        **_CHURN,
        "control": _budget(50.0, cap=64),
        "seqs": 24,
        "offline": 60,
        "offline_prompt": 400,
        "arrivals": tuple(range(4, 120, 4)) + tuple(range(8, 120, 8)) * 3,
        "arrival_prompt": 40,
        "distinct": True,
    },
    # offline prompts of 480 tokens: whole beside the decodes alone, but not beside a
    # started online prompt, where a partial chunk may not follow it
    "churn-partial": {
        **_CHURN,
        "seqs": 24,
        "blocks": 2000,
        "offline": 60,
        "offline_prompt": 480,
        "arrivals": tuple(range(4, 160)),
        "arrival_prompt": 40,
        "distinct": True,
    },
    # yielding to prompts: a step that starts an online prompt takes no offline work
    "churn-yield": {
        **_CHURN,
        "control": OfflineControl(mode="budget", budget_ms=50.0, yield_to_prompts=True),
        "prompts": False,
    },
    # HyGen*: queued work starts at a rate
    "qps": _case(
        OfflineControl(mode="qps", qps=40.0),
        blocks=400,
        seqs=12,
        online=3,
        offline=16,
        arrivals=(9,),
    ),
}


class _NoShortcutsAsync(HyGenAsyncScheduler):
    fast_paths = False


class _NoShortcuts(HyGenScheduler):
    fast_paths = False


def _stop_early(reqs: list, first: int, every: int) -> None:
    """Give each request a stop token: the one it samples ``first + every * i`` tokens
    into its output (or earlier, if that token comes up before)."""
    for i, r in enumerate(reqs):
        pos = r.num_prompt_tokens + first + every * i
        r.sampling_params.stop_token_ids = [token(r.request_id, pos)]


def _count_carried_steps(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the steps that used a carried scan, those that first took requests out, those
    that took in requests the step before started, and those with idle requests."""
    seen = {"carried": 0, "dropped": 0, "joined": 0, "idle": 0}
    at, drop = SteadyCarry.at, SteadyCarry._drop_gone

    def counted_at(self: SteadyCarry, *a: object) -> object:
        joining = bool(self.joins)
        out = at(self, *a)
        if out is not None:
            seen["carried"] += 1
            seen["joined"] += joining
            seen["idle"] += bool(out.online_idle or out.offline_idle)
        return out

    def counted_drop(self: SteadyCarry, *a: object) -> bool:
        ok = drop(self, *a)
        seen["dropped"] += ok
        return ok

    monkeypatch.setattr(SteadyCarry, "at", counted_at)
    monkeypatch.setattr(SteadyCarry, "_drop_gone", counted_drop)
    return seen


def _count_bulk_admissions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the general method's steps that admitted every running offline decode at once
    (the steady-state step uses the same admission; its calls are not counted)."""
    taken, inside = [0], [False]
    admit, steady = HyGenScheduler._admit_all_decodes, HyGenScheduler._schedule_steady

    def in_steady(self: HyGenScheduler, *a: object) -> object:
        inside[0] = True
        try:
            return steady(self, *a)  # type: ignore[arg-type]
        finally:
            inside[0] = False

    def counted(self: HyGenScheduler, *a: object) -> bool:
        ok = admit(self, *a)  # type: ignore[arg-type]
        taken[0] += ok and not inside[0]
        return ok

    monkeypatch.setattr(HyGenScheduler, "_schedule_steady", in_steady)
    monkeypatch.setattr(HyGenScheduler, "_admit_all_decodes", counted)
    return taken


def _count_steady_steps(s: HyGenScheduler) -> dict[str, int]:
    """Count the steps the steady-state shortcut scheduled (it returns None otherwise),
    those of them that planned online prompts from the waiting queue, and those that left
    offline requests out with only their last token in flight."""
    seen = {"steps": 0, "prompts": 0, "idle": 0}
    inner, plan = s._schedule_steady, s._step_plan

    def planned(items: dict, prefills: list, *a: Any, **kw: Any) -> Any:
        seen["plan"] = bool(prefills)  # online prompts, before offline starts join them
        return plan(items, prefills, *a, **kw)

    def counted(throttle_prefills: bool) -> Any:
        seen["plan"] = False
        idle = [r for r in s.running if r.request_id in s.offline_ids]
        out = inner(throttle_prefills)
        if out is not None:
            seen["steps"] += 1
            seen["prompts"] += seen["plan"]
            seen["idle"] += any(r.request_id not in out.num_scheduled_tokens for r in idle)
        return out

    s._step_plan = planned  # type: ignore[method-assign]
    s._schedule_steady = counted  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("async_on", [True, False], ids=["async", "sync"])
@pytest.mark.parametrize("case", list(SHORTCUT_CASES))
def test_the_per_step_shortcuts_change_no_step_and_no_record(
    tiny_model, async_on, case, monkeypatch
) -> None:
    """The scheduler's hot-path shortcuts (the steady-state step, bulk offline decode
    admission, the step record taken from the plan) against the scheduler without them,
    on workloads that take their branches: online arrivals, preemption, a binding budget,
    offline work alone, block boundaries in a small cache, the prefill caps, HyGen*.
    Every schedule() call, every token and every step record (all but its measured time)
    must be the same."""
    c = SHORTCUT_CASES[case]
    carried = _count_carried_steps(monkeypatch)
    bulk = _count_bulk_admissions(monkeypatch)
    control = c["control"]
    runs = []
    for cls in (HyGenScheduler, _NoShortcutsAsync if async_on else _NoShortcuts):
        s = build(
            cls, tiny_model, async_scheduling=async_on, num_blocks=c["blocks"], max_seqs=c["seqs"]
        )
        s.scheduler_config.long_prefill_token_threshold = c["threshold"]
        s.predictor = PREDICTOR
        s.set_control(control)
        if control.mode == "qps":  # the bucket on a step clock (10 ms a step): repeatable
            s._bucket = TokenBucket(control.qps, clock=lambda s=s: s._step * 0.01)
        offline = requests(
            c["offline"], prompt=c["offline_prompt"], out=c["offline_out"], prefix="off",
            offline=True,
        )  # fmt: skip
        online = requests(c["online"], prompt=c["online_prompt"], out=c["online_out"], prefix="on")
        if c["stops"]:
            _stop_early(online, 15, 7)
            _stop_early(offline, 25, 3)
        late: dict[int, list] = {}  # a step listed j + 1 times gets j + 1 arrivals
        for i, k in enumerate(c["arrivals"]):
            j = len(late.get(k, ()))
            late.setdefault(k, []).extend(
                requests(
                    1, prompt=c["arrival_prompt"] or 300 + 10 * k, out=12,
                    prefix=f"late{k}-" if not j else f"late{k}.{j}-",
                    # else they share a cached prefix (and offline prompts use 0 ..)
                    start=1000 + i if c["distinct"] else 0,
                )
            )  # fmt: skip
        steady = _count_steady_steps(s)
        run = drive(s, online + offline, 2 if async_on else 1, arrivals=late)
        recs = [r.to_dict(exclude={"measured_s"}) for r in s.trace.records]
        runs.append((run.steps, run.tokens, recs))
        if s.fast_paths:  # the case reached the steady state: the comparison covers it
            assert steady["steps"] > 0, "the steady-state step never ran"
            assert carried["carried"] > 0, "no step used a carried scan"
            if c["stops"]:
                assert carried["dropped"] > 0, "no carried scan took out a stopped request"
            if c["bulk"]:
                assert bulk[0] > 0, "no general step admitted the offline decodes at once"
            if c["prompts"]:
                assert steady["prompts"] > 0, "no steady-state step planned a waiting prompt"
                assert carried["joined"] > 0, "no carried scan took in a started request"
                if async_on:
                    assert steady["idle"] > 0, "no steady-state step left an idle request out"
                    assert carried["idle"] > 0, "no carried scan had an idle request"
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == runs[1][1]
    assert runs[0][2] == runs[1][2]
