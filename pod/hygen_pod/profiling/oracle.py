"""A GPU step-latency oracle built from measured vLLM kernel tables (aiconfigurator-core).

No GPU is needed: NVIDIA's aiconfigurator-core ships measured GEMM and attention
latencies per GPU. The oracle charges a mixed prefill/decode iteration as

* shared (non-attention) layers for all tokens of the step,
* prefill attention per request: causal attention over positions p..p+c costs
  A(p+c) - A(p), where A(n) is the measured prefill attention of a fresh n-token
  prompt; the fixed launch cost is counted once per step (vLLM runs all prefill
  chunks in one varlen kernel per layer),
* decode attention for the decode batch at its mean context (decode attention is
  linear in total context, so the mean loses nothing).

It stands in for "the GPU" in the predictor tests and the simulator, so that our
predictor is fitted on oracle samples exactly as it would be on real steps.
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from hygen_pod.policy.batch_shape import BatchShape

GPUS = {"a100": "a100_sxm", "h100": "h100_sxm", "h200": "h200_sxm"}
DEFAULT_MODEL = "meta-llama/Meta-Llama-3.1-8B"


@dataclass(frozen=True, slots=True)
class MixedBatch:
    """Per-request description of one iteration."""

    prefills: tuple[tuple[int, int], ...]  # (chunk tokens, tokens already computed)
    decodes: tuple[int, ...]  # context length of each decode

    def shape(self) -> BatchShape:
        s = BatchShape()
        for c, p in self.prefills:
            s.add_prefill(c, p)
        for ctx in self.decodes:
            s.add_decode(ctx)
        return s


class KernelOracle:
    """Step time (seconds) of a mixed batch for one model on one GPU."""

    def __init__(self, gpu: str = "h100", model: str = DEFAULT_MODEL) -> None:
        try:
            from aiconfigurator_core.sdk.engine import EngineHandle
        except ImportError as e:  # pragma: no cover - depends on the extra
            raise RuntimeError(
                "the GPU oracle needs aiconfigurator-core: pip install '.[oracle]'"
            ) from e
        if gpu not in GPUS:
            raise ValueError(f"unknown GPU {gpu!r}; choose one of {sorted(GPUS)}")
        self.gpu, self.model = gpu, model
        # The library reports table loading on stdout/stderr and its logger.
        logging.getLogger("aiconfigurator_core").setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            self._engine = EngineHandle.compile(model, GPUS[gpu], "vllm")
        self._breakdown = lru_cache(maxsize=1 << 16)(self._engine.mixed_step_breakdown)
        self._attn_floor = self._breakdown(1, 0, 1, 2, 0)[2]

    def shared_ms(self, n: int) -> float:
        """Non-attention (GEMM, norm, ...) time of one step of ``n`` prefill tokens, ms."""
        return self._breakdown(n, 0, n, 2, 0)[1]

    def _prefill_attn_work(self, n: int) -> float:
        """Measured attention of a fresh n-token prefill, less the launch floor (ms)."""
        if n <= 0:
            return 0.0
        return max(0.0, self._breakdown(n, 0, n, 2, 0)[2] - self._attn_floor)

    def step_seconds(self, batch: MixedBatch) -> float:
        ctx_tokens = sum(c for c, _ in batch.prefills)
        n_dec = len(batch.decodes)
        if ctx_tokens == 0 and n_dec == 0:
            return 0.0
        ms = 0.0
        if ctx_tokens:
            shared = self._breakdown(ctx_tokens, n_dec, 1024, 2, 0)[1]
            attn = self._attn_floor + sum(
                self._prefill_attn_work(p + c) - self._prefill_attn_work(p)
                for c, p in batch.prefills
            )
            ms += shared + attn
        else:
            mean_ctx = max(2, round(sum(batch.decodes) / n_dec))
            shared = self._breakdown(0, n_dec, mean_ctx - 1, 2, 0)[1]
            ms += shared
        if n_dec:
            mean_ctx = max(2, round(sum(batch.decodes) / n_dec))
            ms += self._breakdown(0, n_dec, mean_ctx - 1, 2, 0)[3]
        return ms / 1000.0


def random_batches(
    rng: random.Random,
    n: int,
    *,
    max_tokens: int = 8192,
    max_decodes: int = 256,
    max_context: int = 8192,
) -> list[MixedBatch]:
    """Mixed prefill/decode iterations like a chunked-prefill engine schedules them."""
    out: list[MixedBatch] = []
    while len(out) < n:
        n_dec = rng.choice([0, rng.randint(1, 16), rng.randint(1, max_decodes)])
        decodes = tuple(rng.randint(32, max_context) for _ in range(n_dec))
        budget = max_tokens - n_dec
        prefills: list[tuple[int, int]] = []
        for _ in range(rng.choice([0, 1, 1, 2, rng.randint(1, 6)])):
            if budget <= 0:
                break
            c = rng.randint(1, min(budget, 4096))
            p = rng.choice([0, 0, rng.randint(1, max_context)])
            prefills.append((c, p))
            budget -= c
        if prefills or decodes:
            out.append(MixedBatch(tuple(prefills), decodes))
    return out


def sample(
    oracle: KernelOracle, batches: Sequence[MixedBatch]
) -> tuple[list[BatchShape], list[float]]:
    """(shape, oracle seconds) pairs for fitting or scoring a predictor."""
    return [b.shape() for b in batches], [oracle.step_seconds(b) for b in batches]
