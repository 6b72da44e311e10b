"""Prompts that share a prefix and start in the same step run as their suffixes (vLLM's
prefix cache holds the first one's blocks by the time it starts the next): HyGen must
plan them so, or the step it predicts is not the step that runs."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("vllm")

from hygen_pod.contract.control import OfflineControl
from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.vllm_adapter.scheduler import HyGenScheduler
from tests.helpers.sched_harness import build, drive, expected_tokens, requests

# ~1 ms + 10 us per prefill token + 0.1 ms per decode: a 4 ms budget admits one whole
# 200-token prompt and a few hundred tokens more at most
PREDICTOR = LatencyPredictor(
    ["intercept", "prefill_tokens", "num_decodes", "decode_context"], [0.001, 0.01, 0.0001, 1e-5]
)
SHARED, PROMPT = 192, 200  # 12 blocks of 16 shared; each prompt's last 8 tokens its own


def _checked(s: HyGenScheduler) -> list[tuple[int, dict[str, int], dict[str, int]]]:
    """The steps whose run differed from HyGen's plan: (step, planned, ran)."""
    differ: list[tuple[int, dict[str, int], dict[str, int]]] = []
    record = s._record

    def checking(out: Any) -> Any:
        plan = s._plan
        if plan is not None and out.num_scheduled_tokens != plan.tokens:
            differ.append((s._step, dict(plan.tokens), dict(out.num_scheduled_tokens)))
        return record(out)

    s._record = checking  # type: ignore[method-assign]
    return differ


@pytest.mark.parametrize("async_on", [True, False], ids=["async", "sync"])
def test_prompts_sharing_a_prefix_started_in_one_step_are_planned_as_they_run(
    tiny_model, async_on
) -> None:
    s = build(HyGenScheduler, tiny_model, async_scheduling=async_on, max_seqs=16)
    s.predictor = PREDICTOR
    s.set_control(OfflineControl(mode="budget", budget_ms=4.0))
    differ = _checked(s)
    offline = requests(6, prompt=PROMPT, out=20, prefix="off", offline=True, shared=SHARED)
    # two chats with the same system prompt arrive together while offline work decodes
    online = requests(2, PROMPT, 10, prefix="chat", start=50, shared=SHARED, group=1)
    run = drive(s, offline, 2 if async_on else 1, arrivals={6: online})

    assert run.tokens == expected_tokens(offline + online)
    # all six start in the first step: the first whole, the rest as their own 8 tokens
    # (planned as 200 each, two would fill the budget and the rest would wait)
    assert run.steps[0] == {"off0": PROMPT, **{f"off{i}": PROMPT - SHARED for i in range(1, 6)}}
    started = next(st for st in run.steps if "chat50" in st)
    assert (started["chat50"], started["chat51"]) == (PROMPT, PROMPT - SHARED)
    assert differ == [], "HyGen planned a step other than the one that ran"
    assert not [r for r in s.trace.records if r.over_budget]
