"""A real vLLM scheduler driven the way vLLM's engine core drives it, without a model.

`build` makes a scheduler (stock or ours) from a real `VllmConfig` over the tiny generated
model's config, with a KV cache of ``num_blocks`` blocks and no tensors. `drive` is
`EngineCore.step` (``queue_size=1``) or `EngineCore.step_with_batch_queue` (``2``: the GPU
default with async scheduling) with a model-free executor whose sampled token is a fixed
function of (request, position), as a real model's is of the sequence: so recomputation
after a preemption reproduces it, and a wrong, lost or duplicated token shows up.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
from vllm.sampling_params import SamplingParams
from vllm.utils.hashing import sha256_cbor
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import Request
from vllm.v1.structured_output import StructuredOutputManager

BLOCK = 16
VOCAB = 1000
init_none_hash(sha256_cbor)
_HASHER = get_request_block_hasher(BLOCK, sha256_cbor)


def build(
    cls: type[Scheduler],
    model: Path,
    *,
    async_scheduling: bool,
    num_blocks: int = 2000,
    max_seqs: int = 256,
    max_tokens: int = 512,
    hygen: dict[str, Any] | None = None,
    max_model_len: int = 4096,
    prefix_caching: bool = True,
    log_stats: bool = False,
) -> Scheduler:
    """A scheduler of class ``cls`` as the engine core builds it."""
    sc = SchedulerConfig(
        max_num_seqs=max_seqs,
        max_num_batched_tokens=max_tokens,
        max_model_len=max_model_len,
        enable_chunked_prefill=True,
        is_encoder_decoder=False,
    )
    mc = ModelConfig(model=str(model), dtype="float32", seed=0, skip_tokenizer_init=True)
    cc = CacheConfig(block_size=BLOCK, enable_prefix_caching=prefix_caching)
    vc = VllmConfig(
        scheduler_config=sc,
        model_config=mc,
        cache_config=cc,
        additional_config={"hygen": hygen or {}},
    )
    # The CPU platform resolves async scheduling off; a GPU resolves it on.
    vc.scheduler_config.async_scheduling = async_scheduling
    spec = FullAttentionSpec(BLOCK, num_kv_heads=1, head_size=1, dtype=torch.float32)
    kv = KVCacheConfig(
        num_blocks=num_blocks,
        kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(["layer"], spec)],
    )
    cc.num_gpu_blocks = num_blocks
    return cls(
        vllm_config=vc,
        kv_cache_config=kv,
        structured_output_manager=StructuredOutputManager(vc),
        block_size=BLOCK,
        log_stats=log_stats,
    )


def token(request_id: str, position: int) -> int:
    """The token the fake model samples at ``position`` of a request's sequence."""
    digest = hashlib.blake2b(f"{request_id}:{position}".encode(), digest_size=4).digest()
    return 2 + int.from_bytes(digest, "little") % (VOCAB - 2)


def requests(
    n: int,
    prompt: int,
    out: int,
    prefix: str = "r",
    offline: bool = False,
    start: int = 0,
    shared: int = 0,
    group: int = 0,
) -> list[Request]:
    """Requests ``{prefix}{i}`` for i from ``start``, each prompt a function of i after
    its first ``shared`` tokens, which are the same for all requests of a ``group``."""
    extra = {"hygen_class": "offline"} if offline else None
    return [
        Request(
            f"{prefix}{i}",
            [
                (group * 1009 + k if k < shared else i * 7 + k) % (VOCAB - 2) + 2
                for k in range(prompt)
            ],
            SamplingParams(max_tokens=out, ignore_eos=True, extra_args=extra),
            None,
            block_hasher=_HASHER,
        )
        for i in range(start, start + n)
    ]


def expected_tokens(reqs: Iterable[Request]) -> dict[str, list[int]]:
    return {
        r.request_id: [token(r.request_id, r.num_prompt_tokens + k) for k in range(r.max_tokens)]
        for r in reqs
    }


def model_output(s: Scheduler, out: Any) -> ModelRunnerOutput:
    """What the model-free executor returns for ``out``, computed right after schedule():
    one token per request that reaches a sampling position, none for a partial prefill."""
    ids = list(out.num_scheduled_tokens)
    sampled = [
        []
        if s.requests[rid].is_prefill_chunk
        else [token(rid, s.requests[rid].num_computed_tokens)]
        for rid in ids
    ]
    index = {rid: i for i, rid in enumerate(ids)}
    return ModelRunnerOutput(req_ids=ids, req_id_to_index=index, sampled_token_ids=sampled)


@dataclass
class Run:
    """What one drive produced: each schedule() call's tokens per request, the tokens
    each request received, and how each finished."""

    steps: list[dict[str, int]] = field(default_factory=list)
    tokens: dict[str, list[int]] = field(default_factory=dict)
    finished: dict[str, str] = field(default_factory=dict)


def online_split(
    steps: Iterable[dict[str, int]], online: Iterable[Request]
) -> list[tuple[int, int, int]]:
    """(online decodes, online prompt tokens, other tokens) per schedule() call, from the
    tokens it scheduled: an online request computes its prompt, then one token a step (its
    prompt must miss the prefix cache, or the count runs behind)."""
    prompt = {r.request_id: r.num_prompt_tokens for r in online}
    done = dict.fromkeys(prompt, 0)
    out = []
    for step in steps:
        decodes = prefill = other = 0
        for rid, n in step.items():
            if rid not in prompt:
                other += n
                continue
            if done[rid] >= prompt[rid]:
                decodes += 1
            else:
                prefill += min(n, prompt[rid] - done[rid])
            done[rid] += n
        out.append((decodes, prefill, other))
    return out


def drive(
    s: Scheduler,
    reqs: Sequence[Request],
    queue_size: int,
    *,
    max_calls: int = 100_000,
    arrivals: Mapping[int, Sequence[Request]] | None = None,
) -> Run:
    """Run ``reqs`` to completion as EngineCore.step (1) / step_with_batch_queue (2) do;
    ``arrivals[k]`` are added just before the k-th schedule() call (from 0)."""
    run = Run()
    for r in reqs:
        s.add_request(r)
    late = dict(arrivals or {})
    queue: deque[tuple[Any, ModelRunnerOutput]] = deque()
    calls = 0
    while s.has_requests() or queue or late:
        calls += 1
        assert calls < max_calls, "the scheduler made no progress"
        for r in late.pop(len(run.steps), ()):
            s.add_request(r)
        if (s.has_requests() or late) and len(queue) < queue_size:
            out = s.schedule()
            run.steps.append(dict(out.num_scheduled_tokens))
            queue.appendleft((out, model_output(s, out)))
            if len(queue) < queue_size and (out.total_num_scheduled_tokens > 0 or s.has_requests()):
                continue  # keep the queue full before waiting on the oldest batch
        if not queue:
            break
        out, result = queue.pop()
        for outputs in s.update_from_output(out, result).values():
            for o in outputs.outputs:
                run.tokens.setdefault(o.request_id, []).extend(o.new_token_ids)
                if o.finish_reason is not None:
                    run.finished[o.request_id] = str(o.finish_reason)
    return run
