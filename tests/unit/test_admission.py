"""Phase-2 admission policy, without an engine."""

from __future__ import annotations

import pytest

from hygen_pod.policy.admission import Limits, OfflineCandidate, admit
from hygen_pod.policy.batch_shape import BatchShape
from hygen_pod.policy.predictor import LatencyPredictor

# 1 ms per step + 10 us per prefill token + 100 us per decode.
PRED = LatencyPredictor(["intercept", "prefill_tokens", "num_decodes"], [1e-3, 1e-2, 1e-4])


def cand(name, computed, wanted, prompt, held=0, running=True):
    return OfflineCandidate(name, computed, wanted, prompt, held, running)


def limits(budget_ms=None, tokens=1000, blocks=1000, slots=100, partial=True):
    return Limits(
        budget_ms / 1e3 if budget_ms is not None else None, tokens, blocks, slots, 16, partial
    )


def test_decodes_first_then_prefill_up_to_budget_with_partial_last() -> None:
    online = BatchShape()
    online.add_prefill(100)  # 1 ms + 1 ms
    cands = [cand("p1", 0, 300, 300), cand("d1", 50, 1, 40, held=4), cand("p2", 0, 50, 50)]
    a = admit(PRED, online, cands, limits(budget_ms=3.1))
    got = [(c.ref, n) for c, n in a.allocations]
    # 3.1 ms - 2 ms online - 0.1 ms decode leaves 1.0 ms = 100 prefill tokens for p1 (partial).
    assert got == [("d1", 1), ("p1", 100)]
    assert a.partial is not None and a.partial.ref == "p1" and a.closed
    assert PRED.predict(a.shape) <= 3.1e-3 + 1e-12


def test_no_partial_when_not_allowed_and_full_chunks_still_fit() -> None:
    cands = [cand("big", 0, 500, 500), cand("small", 0, 40, 40)]
    a = admit(PRED, BatchShape(), cands, limits(budget_ms=2.0, partial=False))
    assert [(c.ref, n) for c, n in a.allocations] == [("small", 40)]
    assert a.partial is None


def test_online_alone_over_budget_admits_nothing() -> None:
    online = BatchShape()
    online.add_prefill(500)
    a = admit(PRED, online, [cand("d", 10, 1, 5, held=1)], limits(budget_ms=2.0))
    assert a.allocations == [] and a.closed


def test_token_slot_and_kv_limits() -> None:
    cands = [cand(f"p{i}", 0, 64, 64) for i in range(5)]
    # Tokens: 100 -> one full chunk of 64 and a partial of 36.
    a = admit(None, BatchShape(), cands, limits(tokens=100))
    assert [n for _, n in a.allocations] == [64, 36]
    # Slots: 2.
    a = admit(None, BatchShape(), cands, limits(slots=2))
    assert len(a.allocations) == 2
    # KV: 5 blocks of 16 tokens -> 64 + 16.
    a = admit(None, BatchShape(), cands, limits(blocks=5))
    assert [n for _, n in a.allocations] == [64, 16]
    # A decode that needs a new block it cannot get is skipped.
    d = cand("d", 32, 1, 10, held=2)
    assert admit(None, BatchShape(), [d], limits(blocks=0)).allocations == []
    assert admit(None, BatchShape(), [d], limits(blocks=1)).allocations[0][1] == 1


def test_budget_without_predictor_is_an_error() -> None:
    import pytest

    with pytest.raises(ValueError, match="predictor"):
        admit(None, BatchShape(), [], limits(budget_ms=5))


def test_progress_ignores_the_budget_but_not_resources() -> None:
    from hygen_pod.policy.admission import Admitter

    # Budget below the cost of any chunk (1 ms intercept alone exceeds 0.5 ms).
    a = Admitter(PRED, BatchShape(), limits(budget_ms=0.5))
    c = cand("long", 900, 124, 1024, held=57)
    assert a.offer(c) == 0
    assert a.progress(c, max_chunk=16) == 16
    assert a.progress_step and a.closed
    assert [(x.ref, n) for x, n in a.allocations] == [("long", 16)]
    # Resource limits still hold: no free slot, no progress.
    b = Admitter(PRED, BatchShape(), limits(budget_ms=0.5, slots=0))
    assert b.progress(c, max_chunk=16) == 0 and not b.progress_step


def test_a_running_request_short_of_kv_preempts_newer_ones_never_older() -> None:
    from hygen_pod.policy.admission import Admitter

    # Three decodes, each at a block boundary (needs one new block); the cache is full.
    cands = [
        OfflineCandidate(f"r{i}", 32, 1, 32, held_blocks=2, running=True, age=(float(i), f"r{i}"))
        for i in range(3)
    ]
    evicted: list[str] = []

    def evict(ref: str) -> int:
        evicted.append(ref)
        return 2  # the blocks it held

    a = Admitter(None, BatchShape(), limits(blocks=0))
    got = a.offer_running(cands, evict)
    # The oldest takes the newest's blocks and so does the middle one; nobody waits forever.
    assert evicted == ["r2"]
    assert [c.ref for c in got] == ["r0", "r1"]
    # Without evict() there is no way forward: this was a stall on the real engine.
    assert admit(None, BatchShape(), cands, limits(blocks=0)).allocations == []


def test_preemption_for_kv_never_happens_for_work_the_budget_refuses() -> None:
    from hygen_pod.policy.admission import Admitter

    cands = [
        OfflineCandidate(f"r{i}", 32, 1, 32, held_blocks=2, running=True, age=(float(i), f"r{i}"))
        for i in range(2)
    ]
    a = Admitter(PRED, BatchShape(), limits(budget_ms=0.5, blocks=0))
    assert a.offer_running(cands, lambda ref: pytest.fail(f"evicted {ref}")) == []


def test_a_new_request_starts_only_if_its_whole_sequence_fits_when_reserved() -> None:
    """vLLM's scheduler_reserve_full_isl: a waiting request whose whole prompt does not fit
    in free KV is not started (its first chunk alone would fit); a running one is not
    held to it."""
    waiting = OfflineCandidate("w", 0, 1000, 1000, 0, False, start_tokens=1000)
    assert admit(None, BatchShape(), [waiting], limits(tokens=256, blocks=62)).allocations == []
    got = admit(None, BatchShape(), [waiting], limits(tokens=256, blocks=63)).allocations
    assert [n for _, n in got] == [256]  # 63 blocks hold the 1,000-token prompt
    unreserved = OfflineCandidate("w", 0, 1000, 1000, 0, False)
    got = admit(None, BatchShape(), [unreserved], limits(tokens=256, blocks=62)).allocations
    assert [n for _, n in got] == [256]
    running = OfflineCandidate("r", 256, 744, 1000, 16, True, start_tokens=1000)
    got = admit(None, BatchShape(), [running], limits(tokens=256, blocks=16)).allocations
    assert [n for _, n in got] == [256]


@pytest.mark.parametrize("seed", range(100))
def test_bulk_decode_admission_decides_exactly_as_one_offer_per_candidate(seed: int) -> None:
    """`Admitter._offer_decodes` (the hot path) against `_offer` alone, on random running
    candidates: decodes at and off block boundaries, prefills among them, budgets that
    bind, caches short enough that older work evicts newer. Same admissions, evictions,
    shape, prediction (to the bit) and remaining limits."""
    import random

    from hygen_pod.policy.admission import Admitter

    rng = random.Random(seed)
    pred = LatencyPredictor(
        ["intercept", "prefill_tokens", "num_decodes", "decode_context", "decode_context_sq"],
        [1e-3, 1e-2, 1e-4, 3e-7, 1e-11],
    )
    cands = []
    for i in range(rng.randint(1, 60)):
        prompt = rng.randint(1, 300)
        if rng.random() < 0.8:  # a decode: held blocks cover it, or it needs one more
            comp = prompt + rng.randint(0, 200)
            held = -(-(comp + 1) // 16) - (1 if rng.random() < 0.3 else 0)
            c = OfflineCandidate(f"r{i}", comp, 1, prompt, held, True, (float(i), f"r{i}"))
        else:
            comp = rng.randint(0, prompt - 1)
            c = OfflineCandidate(
                f"r{i}", comp, prompt - comp, prompt, -(-comp // 16), True, (float(i), f"r{i}")
            )
        cands.append(c)
    online = BatchShape()
    if rng.random() < 0.5:
        online.add_prefill(rng.randint(1, 200))
    lim = limits(
        budget_ms=rng.choice([None, 1.5, 3.0, 8.0]),
        tokens=rng.randint(1, 400),
        blocks=rng.randint(0, 20),
        slots=rng.randint(1, 70),
        partial=rng.random() < 0.5,
    )
    freed = {c.ref: c.held_blocks for c in cands}
    runs = []
    for fast in (True, False):
        evicted: list[str] = []

        def evict(ref: str, evicted: list[str] = evicted) -> int:
            evicted.append(ref)
            return freed[ref]

        a = Admitter(pred if lim.budget_s is not None else None, online, lim, fast_decodes=fast)
        got = a.offer_running(sorted(cands, key=lambda c: not c.is_decode), evict)
        runs.append((
            [c.ref for c in got], [(c.ref, n) for c, n in a.allocations], evicted,
            a.shape.as_dict(), a._predicted, a.blocks, a.tokens, a.slots, a.closed,
        ))  # fmt: skip
    assert runs[0] == runs[1]
