"""Predictor accuracy on GPU step times from measured vLLM kernel tables (no GPU needed)."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("aiconfigurator_core", reason="needs the 'oracle' extra")

from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.profiling.oracle import KernelOracle, MixedBatch, random_batches, sample

pytestmark = pytest.mark.oracle


@pytest.mark.parametrize("gpu", ["a100", "h100"])
def test_predictor_mape_under_5_percent_on_held_out_mixed_batches(gpu: str) -> None:
    oracle = KernelOracle(gpu)
    train = sample(oracle, random_batches(random.Random(10), 800))
    # Held-out: different seed, and only mixed prefill+decode batches.
    held = [b for b in random_batches(random.Random(11), 1200) if b.prefills and b.decodes][:400]
    test = sample(oracle, held)
    model, table = LatencyPredictor.select_and_fit(*train)
    mape = model.mape(*test)
    print(f"\n{gpu}: features {model.features}, held-out MAPE on mixed batches {mape:.2%}")
    assert len(held) == 400
    assert mape < 0.05, table


def test_oracle_is_physical() -> None:
    o = KernelOracle("h100")
    one = o.step_seconds(MixedBatch(((512, 0),), ()))
    assert 1e-3 < one < 0.1
    # More work never takes less time; a later chunk of a long prompt costs more.
    assert o.step_seconds(MixedBatch(((1024, 0),), ())) > one
    assert o.step_seconds(MixedBatch(((512, 4096),), ())) > one
    assert o.step_seconds(MixedBatch(((512, 0),), (2048,) * 64)) > one
    # A100 is slower than H100 for the same batch.
    assert KernelOracle("a100").step_seconds(MixedBatch(((512, 0),), ())) > one
    with pytest.raises(ValueError, match="unknown GPU"):
        KernelOracle("tpu")
