"""The online prefill cap inside a real vLLM scheduler (model-free harness, both modes).

In every step that carries online decodes, online prefill tokens stay within the cap,
whatever else the step holds; outputs are unchanged; offline work still runs beside it.
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

CAP = 96
PREDICTOR = LatencyPredictor(
    ["intercept", "prefill_tokens", "num_decodes", "decode_context"], [0.001, 0.01, 0.0001, 1e-5]
)


def _workload(offline: bool) -> list[Request]:
    reqs = requests(6, prompt=40, out=80, prefix="chat")  # decoding while the long ones prefill
    # i = 6..9: prompts that share no prefix with the chat ones (no cached tokens, so the
    # scheduled tokens below are exactly each request's prompt)
    reqs += requests(10, prompt=900, out=8, prefix="long")[6:]
    if offline:
        reqs += requests(12, prompt=300, out=30, prefix="off", offline=True)
    return reqs


def _online_split(run: Run, reqs: list[Request]) -> list[tuple[int, int]]:
    """(online decodes, online prefill tokens) per schedule() call."""
    online = [r for r in reqs if not r.request_id.startswith("off")]
    return [(d, p) for d, p, _ in online_split(run.steps, online)]


def _run(tiny_model, async_on: bool, control: OfflineControl | None, offline: bool) -> Run:
    s = build(HyGenScheduler, tiny_model, async_scheduling=async_on, max_tokens=512)
    s.predictor = PREDICTOR
    if control is not None:
        s.set_control(control)
    reqs = _workload(offline)
    run = drive(s, reqs, 2 if async_on else 1)
    assert run.tokens == expected_tokens(_workload(offline))  # nothing lost or wrong
    assert not [r for r in s.trace.records if r.online_preempted]
    return run


@pytest.mark.parametrize("async_on", [True, False], ids=["async", "sync"])
@pytest.mark.parametrize("offline", [True, False], ids=["with-offline", "online-only"])
def test_cap_holds_in_every_step_with_online_decodes(tiny_model, async_on, offline) -> None:
    control = OfflineControl(mode="budget", budget_ms=8.0 if offline else 0.0,
                             online_prefill_cap=CAP)  # fmt: skip
    run = _run(tiny_model, async_on, control, offline)
    split = _online_split(run, _workload(offline))
    with_decodes = [p for d, p in split if d]
    assert with_decodes and max(with_decodes) <= CAP
    assert CAP in with_decodes  # the cap was reached, not merely unused
    # steps with no online decode keep the engine's whole token budget for prefill
    assert max(p for d, p in split if not d) > CAP
    if offline:
        off = [sum(n for rid, n in step.items() if rid.startswith("off")) for step in run.steps]
        capped = [o for (d, p), o in zip(split, off, strict=True) if d and p]
        assert sum(o > 0 for o in capped) > 0  # offline work ran beside capped prefills


def test_without_the_cap_online_prefill_fills_the_step(tiny_model) -> None:
    """The contrast: vLLM's own chunking puts far more than the cap beside decodes."""
    run = _run(tiny_model, False, OfflineControl(mode="budget", budget_ms=8.0), True)
    split = _online_split(run, _workload(True))
    assert max(p for d, p in split if d) > 2 * CAP
