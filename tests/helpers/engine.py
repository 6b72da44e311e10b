"""A real in-process vLLM engine (CPU) with a tiny generated model, driven step by step.

Tests share one engine per session (start-up costs ~20 s). `Harness.run` feeds
requests at chosen steps and collects greedy outputs, so scenarios such as
"online requests arrive while an offline backlog runs" are deterministic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

BLOCK_SIZE = 32  # the CPU attention backend needs a multiple of 32
KV_TOKENS = 4096  # small on purpose: 128 blocks, so offline work can fill it
MAX_MODEL_LEN = 1024
MAX_BATCHED_TOKENS = 256
MAX_SEQS = 16
BYTES_PER_TOKEN = 2 * 2 * 2 * 64 * 4  # k+v, layers, kv heads, head_dim, fp32


def engine_kwargs(model: Path, scheduler_cls: Any, hygen: dict | None = None) -> dict:
    return dict(
        model=str(model),
        dtype="float32",
        enforce_eager=True,
        kv_cache_memory_bytes=KV_TOKENS * BYTES_PER_TOKEN,
        max_model_len=MAX_MODEL_LEN,
        max_num_batched_tokens=MAX_BATCHED_TOKENS,
        max_num_seqs=MAX_SEQS,
        block_size=BLOCK_SIZE,
        enable_prefix_caching=True,
        seed=0,
        scheduler_cls=scheduler_cls,
        additional_config={"hygen": hygen or {}},
    )


@dataclass
class Req:
    rid: str
    tokens: list[int]
    max_tokens: int
    offline: bool = False
    at_step: int = 0


class Harness:
    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.engine = llm.llm_engine
        self.scheduler = self.engine.engine_core.engine_core.scheduler

    def submit(self, r: Req) -> None:
        """Add one greedy request to the engine (offline ones carry the class marker)."""
        from vllm import SamplingParams

        sp = SamplingParams(
            max_tokens=r.max_tokens,
            temperature=0.0,
            ignore_eos=True,
            extra_args={"hygen_class": "offline"} if r.offline else None,
        )
        self.engine.add_request(r.rid, {"prompt_token_ids": r.tokens}, sp)

    def run(self, reqs: list[Req], max_steps: int = 20000) -> dict[str, list[int]]:
        pending = sorted(reqs, key=lambda r: r.at_step)
        done: dict[str, list[int]] = {}
        step = 0
        while pending or self.engine.has_unfinished_requests():
            while pending and pending[0].at_step <= step:
                self.submit(pending.pop(0))
            for out in self.engine.step():
                if out.finished:
                    assert out.request_id not in done, f"{out.request_id} finished twice"
                    done[out.request_id] = list(out.outputs[0].token_ids)
            step += 1
            assert step < max_steps, "engine did not drain"
        return done
