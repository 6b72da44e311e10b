"""Yielding to prompts inside a real vLLM scheduler (model-free harness, both modes).

With ``yield_to_prompts``, no step that serves an online prompt chunk carries offline
tokens; offline work still runs in the other steps and every output is unchanged.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from vllm.v1.request import Request

from hygen_pod.contract.control import OfflineControl
from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.vllm_adapter.scheduler import HyGenScheduler
from tests.helpers.sched_harness import (
    Run,
    build,
    drive,
    expected_tokens,
    online_split,
    requests,
)

pytestmark = pytest.mark.engine

PREDICTOR = LatencyPredictor(
    ["intercept", "prefill_tokens", "num_decodes", "decode_context"], [0.001, 0.01, 0.0001, 1e-5]
)


def _workload() -> tuple[list[Request], dict[int, list[Request]]]:
    """Offline work and a first chat at the start; more chats arrive while offline runs."""
    offline = requests(10, prompt=200, out=40, prefix="off", offline=True)
    # prompts unlike the offline ones: no prefix-cache hit, so a request's scheduled tokens
    # are its prompt, then one a step
    chats = requests(8, prompt=120, out=12, prefix="chat", start=50)
    return [*offline, chats[0]], {6 * i: [r] for i, r in enumerate(chats[1:], 1)}


def _run(tiny_model, async_on: bool, yields: bool) -> tuple[Run, list[tuple[int, int]]]:
    """The run, and (online prompt tokens, offline tokens) per schedule() call."""
    s = build(HyGenScheduler, tiny_model, async_scheduling=async_on, max_tokens=256)
    s.predictor = PREDICTOR
    s.set_control(OfflineControl(mode="budget", budget_ms=20.0, yield_to_prompts=yields))
    first, arrivals = _workload()
    run = drive(s, first, 2 if async_on else 1, arrivals=arrivals)
    first, arrivals = _workload()
    every = [*first, *(r for rs in arrivals.values() for r in rs)]
    assert run.tokens == expected_tokens(every)  # nothing lost, duplicated or mixed up
    online = [r for r in every if not r.request_id.startswith("off")]
    split = [(p, o) for _, p, o in online_split(run.steps, online)]
    return run, split


@pytest.mark.parametrize("async_on", [True, False], ids=["async", "sync"])
def test_no_step_serving_a_prompt_carries_offline_tokens(tiny_model, async_on) -> None:
    _, split = _run(tiny_model, async_on, yields=True)
    assert sum(p > 0 for p, _ in split) >= 8  # every chat's prompt was served
    assert [(p, o) for p, o in split if p and o] == []
    assert sum(o for p, o in split if not p) > 0  # offline work ran in the other steps


def test_without_yielding_offline_work_shares_the_prompt_steps(tiny_model) -> None:
    """The contrast: the same workload puts offline tokens beside online prompt chunks."""
    _, split = _run(tiny_model, False, yields=False)
    assert any(p and o for p, o in split)
