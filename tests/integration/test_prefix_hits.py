"""HyGen's own walk for prefix-cache hits must count exactly what vLLM's lookup counts,
pending blocks of the step included (`PrefixHits`): the plan is only exact if it does."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("vllm")

from hygen_pod.vllm_adapter.prefix_hits import PrefixHits
from hygen_pod.vllm_adapter.scheduler import HyGenScheduler
from tests.helpers.sched_harness import BLOCK, build, drive, requests


def _warm_cache(s: HyGenScheduler) -> None:
    """Finish prompts of four prefix groups, in a pool small enough that later ones
    evict some of the earlier ones' blocks: cached runs of every length."""
    done = []
    for g, (shared, prompt) in enumerate([(192, 200), (96, 256), (40, 64), (16, 48)]):
        done += requests(6, prompt, 4, prefix=f"w{g}-", shared=shared, group=g)
    drive(s, done, 1)


def _candidates() -> list:
    """Prompts of seen and unseen groups, sharing 0 to all of a group's prefix, at and
    off block boundaries (the lookup stops a token short of the prompt)."""
    out = []
    i = 0
    for g in range(6):
        for shared in (0, 16, 40, 96, 192, 200):
            for prompt in (10, 16, 32, 48, 200, 256):
                out += requests(1, prompt, 4, prefix="c", start=i, shared=min(shared, prompt),
                                group=g)  # fmt: skip
                i += 1
    return out


def test_the_walk_counts_what_vllms_lookup_counts(tiny_model) -> None:
    s = build(HyGenScheduler, tiny_model, async_scheduling=False, num_blocks=120, max_seqs=8)
    _warm_cache(s)
    hits: PrefixHits = s._hits
    assert hits.walk and hits.same_step  # the harness's layout is the walk's
    rng = random.Random(7)
    cands = _candidates()
    seen = set()
    for r in cands:
        others = rng.sample(cands, 3)
        # pending: nothing; a prefix of another prompt's blocks (as `note` adds); or
        # stray blocks with a gap (a hash chain never hits past a miss, pending or not)
        for pending in (
            set(),
            set(others[0].block_hashes[: rng.randint(1, 16)]),
            set(others[1].block_hashes[1:]) | set(others[2].block_hashes[:2]),
        ):
            hits.pending = pending
            want = hits.vllm_tokens(r)
            assert hits.tokens(r) == want, (r.request_id, r.num_tokens, len(pending))
            seen.add((want > 0, want == (r.num_tokens - 1) // BLOCK * BLOCK, bool(pending)))
    hits.pending = set()
    # the cases were there: misses, partial and whole hits, with and without pending
    assert len(seen) >= 6, seen
