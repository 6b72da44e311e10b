"""Turn public traces into concrete request lists for the (tiny, CPU) engine.

Lengths are scaled down so a 2-core machine can replay them in minutes; arrival
gaps are rescaled to a target request rate. Token ids are random (the tiny model
has random weights, so content is irrelevant) but seeded, so runs repeat.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from hygen_pod.profiling.traces import TraceRequest


@dataclass
class ReplayRequest:
    """A concrete request for the real engine: token ids, class and arrival time."""

    rid: str
    prompt_token_ids: list[int]
    max_tokens: int
    offline: bool
    arrival_s: float  # relative to the replay start


def clip(x: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, x))


def online_slice(
    trace: Sequence[TraceRequest],
    *,
    start: int,
    count: int,
    qps: float,
    prompt_scale: float,
    output_scale: float,
    max_prompt: int,
    max_output: int,
) -> list[tuple[float, int, int]]:
    """(arrival s, prompt len, output len) for ``count`` requests from index ``start``,
    with inter-arrival gaps rescaled so the mean rate is ``qps``."""
    rows = list(trace[start : start + count])
    if len(rows) < count:
        raise ValueError(f"trace has only {len(trace)} requests; cannot take {start}+{count}")
    span = rows[-1].arrival_s - rows[0].arrival_s
    scale = (count - 1) / qps / span if span > 0 else 0.0
    return [
        (
            (r.arrival_s - rows[0].arrival_s) * scale,
            clip(round(r.prompt_tokens * prompt_scale), 4, max_prompt),
            clip(round(r.output_tokens * output_scale), 2, max_output),
        )
        for r in rows
    ]


def offline_backlog(
    trace: Sequence[TraceRequest],
    *,
    count: int,
    seed: int,
    prompt_scale: float,
    output_scale: float,
    max_prompt: int,
    max_output: int,
) -> list[tuple[int, int]]:
    """(prompt len, output len) of ``count`` offline requests sampled from ``trace``."""
    rng = random.Random(seed)
    rows = rng.sample(list(trace), count)
    return [
        (
            clip(round(r.prompt_tokens * prompt_scale), 4, max_prompt),
            clip(round(r.output_tokens * output_scale), 2, max_output),
        )
        for r in rows
    ]


def random_tokens(rng: random.Random, n: int, vocab: int) -> list[int]:
    # Skip the first ids (special tokens of the tiny tokenizer).
    return [rng.randrange(8, vocab) for _ in range(n)]


def cpu_online(
    azure: Sequence[TraceRequest],
    *,
    tag: str,
    start: int,
    count: int,
    qps: float,
    vocab: int,
    seed: int,
) -> list[ReplayRequest]:
    """Online requests for the tiny CPU model: Azure conversation lengths / 8 (prompt)
    and / 4 (output), arrivals rescaled to ``qps``."""
    rng = random.Random(seed)
    rows = online_slice(
        azure,
        start=start,
        count=count,
        qps=qps,
        prompt_scale=1 / 8,
        output_scale=1 / 4,
        max_prompt=512,
        max_output=64,
    )
    return [
        ReplayRequest(f"{tag}-on-{i}", random_tokens(rng, p, vocab), o, False, at)
        for i, (at, p, o) in enumerate(rows)
    ]


def cpu_offline(
    arxiv: Sequence[TraceRequest], *, tag: str, count: int, vocab: int, seed: int
) -> list[ReplayRequest]:
    """An offline backlog for the tiny CPU model: arXiv summarization lengths / 8 and / 2."""
    rng = random.Random(seed)
    rows = offline_backlog(
        arxiv,
        count=count,
        seed=seed,
        prompt_scale=1 / 8,
        output_scale=1 / 2,
        max_prompt=1024,
        max_output=64,
    )
    return [
        ReplayRequest(f"{tag}-off-{i}", random_tokens(rng, p, vocab), o, True, 0.0)
        for i, (p, o) in enumerate(rows)
    ]
