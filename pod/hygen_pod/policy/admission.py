"""Phase-2 admission: which offline work joins an iteration, and how many tokens each.

Pure policy (no vLLM): the adapter describes the iteration's online work as a
`BatchShape` and each offline candidate as an `OfflineCandidate`, and gets back
token allocations. The same function drives the simulator.

Rules, in order: offline decodes first (they hold KV and are cheap), then
prefill chunks. Every admission keeps predicted time <= budget (budget mode),
and fits the token budget, the free KV blocks and the free request slots. A
candidate may get fewer tokens than it wants (a partial chunk) only when
``allow_partial`` is set, and then it is the last admission.

Running offline requests short of KV for even their next token may preempt newer
running offline requests (`Admitter.offer_running`), as vLLM preempts the newest
of its running list: without it, offline requests that fill the cache together
would each wait for a block another holds, and the engine would stall.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hygen_pod.policy.batch_shape import BatchShape
from hygen_pod.policy.predictor import LatencyPredictor


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(slots=True)
class OfflineCandidate:
    """An offline request that could run this iteration."""

    ref: Any  # the caller's request object
    computed: int  # tokens already in its KV cache (incl. prefix-cache hits)
    wanted: int  # tokens it would compute this step if unconstrained
    num_prompt_tokens: int
    held_blocks: int  # KV blocks it holds (or would adopt from the prefix cache)
    running: bool  # already running (vs. waiting to start)
    age: tuple[Any, ...] = ()  # orders running candidates for preemption: larger = newer
    # a waiting one starts only if KV for this many tokens is free (vLLM's
    # scheduler_reserve_full_isl: its whole prompt); 0 = only this step's chunk
    start_tokens: int = 0

    @property
    def is_decode(self) -> bool:
        return self.wanted == 1 and self.computed >= self.num_prompt_tokens


@dataclass(slots=True)
class Limits:
    """What is left of this iteration after the online work."""

    budget_s: float | None  # None = no latency cap (QPS mode)
    tokens: int
    free_blocks: int
    slots: int
    block_size: int
    allow_partial: bool = True


class Admitter:
    """Admits offline candidates one at a time into an iteration that already holds
    the online work ``online``; ``offer`` returns the tokens granted (0 = not now)."""

    def __init__(
        self,
        predictor: LatencyPredictor | None,
        online: BatchShape,
        limits: Limits,
        fast_decodes: bool = True,
    ) -> None:
        if limits.budget_s is not None and predictor is None:
            raise ValueError("a latency budget needs a predictor")
        self.predictor = predictor
        self.fast_decodes = fast_decodes  # `_offer_decodes`; off = one `_offer` per candidate
        self.limits = limits
        self.shape = online.copy()
        self.tokens = limits.tokens
        self.blocks = limits.free_blocks
        self.slots = limits.slots
        self.allocations: list[tuple[OfflineCandidate, int]] = []
        self.partial: OfflineCandidate | None = None
        # Online work alone may already exceed the budget: then nothing offline fits.
        self._predicted = predictor.predict(self.shape) if predictor is not None else 0.0
        over = limits.budget_s is not None and self._predicted > limits.budget_s
        self.closed = over
        self.progress_step = False

    @property
    def full(self) -> bool:
        """No request slot or step token is left: `offer` refuses every candidate."""
        return self.slots <= 0 or self.tokens <= 0

    @property
    def predicted(self) -> float:
        """Predicted seconds of the step as admitted so far."""
        return self._predicted

    def add_admitted_decodes(
        self, count: int, context: int, context_sq: int, new_blocks: int, predicted: float
    ) -> None:
        """Record ``count`` decodes the caller admitted itself, with `_offer`'s decisions
        (`HyGenScheduler._schedule_steady`: every running offline decode fits): their
        context sums, the KV blocks they take and the step's prediction with them. They
        are not in `allocations` (the caller keeps them)."""
        self.shape.add_decodes(count, context, context_sq)
        self._predicted = predicted
        self.blocks -= new_blocks
        self.tokens -= count
        self.slots -= count

    @property
    def granted_tokens(self) -> int:
        return sum(n for _, n in self.allocations)

    def offer(self, c: OfflineCandidate) -> int:
        return self._offer(c, self.limits.budget_s)

    def offer_running(
        self, cands: Sequence[OfflineCandidate], evict: Callable[[Any], int]
    ) -> list[OfflineCandidate]:
        """Offer running candidates in the given order; returns those admitted.

        One that passes the latency budget but lacks the KV blocks for its next
        step may preempt newer candidates not yet admitted, newest first;
        ``evict(ref)`` preempts one and returns the blocks it freed. The oldest
        running request therefore always gets its block (liveness).
        """
        evicted: set[int] = set()
        admitted: list[OfflineCandidate] = []

        def room(c: OfflineCandidate, short: int) -> int:
            freed = 0
            taken = {id(a) for a, _ in self.allocations}
            newer = [v for v in cands if v.age > c.age and id(v) not in evicted | taken]
            for v in sorted(newer, key=lambda v: v.age, reverse=True):
                if freed >= short:
                    break
                evicted.add(id(v))
                freed += evict(v.ref)
            return freed

        i, end = 0, len(cands)
        # A full step refuses every candidate with no side effect (`_offer`'s first check):
        # stop there rather than offer each of the rest.
        while i < end and not self.closed and not self.full:
            if self.fast_decodes:
                i = self._offer_decodes(cands, i, evicted, admitted)
                if i >= end:
                    break
            c = cands[i]
            i += 1
            if id(c) not in evicted and self._offer(c, self.limits.budget_s, room):
                admitted.append(c)
        return admitted

    def _offer_decodes(
        self,
        cands: Sequence[OfflineCandidate],
        i: int,
        evicted: set[int],
        admitted: list[OfflineCandidate],
    ) -> int:
        """`_offer` for the run of decodes from ``cands[i]`` on, in one loop (the hot path:
        every running offline decode, every step); returns the index of the first
        candidate left to `_offer`: one that is not a decode, or that needs KV blocks freed.

        The same decisions as `_offer`, in the same order and with the same float
        arithmetic (`LatencyPredictor.decode_cost`); the shape gets the admitted decodes
        at once. A test runs both (``fast_decodes`` off) on random candidates."""
        lim, pred = self.limits, self.predictor
        bs, budget = lim.block_size, lim.budget_s
        predicted, blocks, tokens, slots = self._predicted, self.blocks, self.tokens, self.slots
        empty = self.shape.empty
        w_nd = w_sd = w_sd2 = w_icpt = 0.0
        if pred is not None:
            w_nd, w_sd, w_sd2, w_icpt = pred.decode_weights
        allocs = self.allocations
        nd = sum_ctx = sum_ctx2 = 0
        end = len(cands)
        while i < end:
            c = cands[i]
            computed = c.computed
            if c.wanted != 1 or computed < c.num_prompt_tokens or slots <= 0 or tokens <= 0:
                break
            if evicted and id(c) in evicted:
                i += 1
                continue
            ctx = computed + 1
            cost = 0.0
            if pred is not None:
                cost = w_nd + w_sd * ctx + w_sd2 * ctx * ctx
                if empty:
                    cost += w_icpt
            if budget is not None and predicted + cost > budget:
                i += 1
                continue
            new_blocks = -(-ctx // bs) - c.held_blocks
            if new_blocks > blocks:  # short of KV: `_offer` may free some
                break
            nd += 1
            sum_ctx += ctx
            sum_ctx2 += ctx * ctx
            empty = False
            predicted += cost
            if new_blocks > 0:
                blocks -= new_blocks
            tokens -= 1
            slots -= 1
            allocs.append((c, 1))
            admitted.append(c)
            i += 1
        self.shape.add_decodes(nd, sum_ctx, sum_ctx2)
        self._predicted, self.blocks, self.tokens, self.slots = predicted, blocks, tokens, slots
        return i

    def progress(self, c: OfflineCandidate, max_chunk: int) -> int:
        """Admit ``c`` with at most ``max_chunk`` tokens, ignoring the latency budget.

        Liveness for an otherwise idle engine: with no online work in the step and
        nothing fitting the budget (e.g. a long prompt whose next chunk alone
        costs more than the budget), offline work would never finish. The caller
        marks such steps; resource limits still apply.
        """
        self.closed = False
        c = dataclasses.replace(c, wanted=min(c.wanted, max_chunk))
        n = self._offer(c, None)
        self.closed = True
        self.progress_step = n > 0
        return n

    def _offer(
        self,
        c: OfflineCandidate,
        budget: float | None,
        room: Callable[[OfflineCandidate, int], int] | None = None,
    ) -> int:
        if self.closed or self.full or c.wanted <= 0:
            return 0
        lim, pred = self.limits, self.predictor
        if c.wanted == 1 and c.computed >= c.num_prompt_tokens:  # a decode: the hot path
            ctx = c.computed + 1
            cost = pred.decode_cost(self.shape, ctx) if pred is not None else 0.0
            if budget is not None and self._predicted + cost > budget:
                return 0
            new_blocks = -(-ctx // lim.block_size) - c.held_blocks
            if new_blocks > 0 and not self._has_blocks(c, 1, room):
                return 0
            self.shape.add_decode(ctx)
            # the model is linear in the shape: a decode adds exactly its cost (no re-predict)
            self._predicted += cost
            if new_blocks > 0:
                self.blocks -= new_blocks
            self.tokens -= 1
            self.slots -= 1
            self.allocations.append((c, 1))
            return 1
        else:
            n = min(c.wanted, self.tokens)
            if budget is not None:
                assert pred is not None
                n = min(n, pred.max_prefill_tokens(self.shape, budget, c.computed))
            if n <= 0 or (n < c.wanted and not lim.allow_partial):
                return 0
            need = 1 if lim.allow_partial else n
            if not c.running:
                need = max(need, c.start_tokens - c.computed)
            if not self._has_blocks(c, need, room):
                return 0
            # KV: tokens that fit in the held blocks plus the free ones.
            n = min(n, (c.held_blocks + self.blocks) * lim.block_size - c.computed)
            self.shape.add_prefill(n, c.computed)
        if pred is not None:
            self._predicted = pred.predict(self.shape)
        self.blocks -= max(0, cdiv(c.computed + n, lim.block_size) - c.held_blocks)
        self.tokens -= n
        self.slots -= 1
        self.allocations.append((c, n))
        if n < c.wanted:
            # A partial chunk must be the iteration's last item (see module doc).
            self.partial = c
            self.closed = True
        return n

    def _has_blocks(
        self,
        c: OfflineCandidate,
        tokens: int,
        room: Callable[[OfflineCandidate, int], int] | None,
    ) -> bool:
        """Whether ``tokens`` more of ``c`` fit in KV, making room first if allowed."""
        short = cdiv(c.computed + tokens, self.limits.block_size) - c.held_blocks - self.blocks
        if short > 0 and room is not None:
            self.blocks += room(c, short)
            short = cdiv(c.computed + tokens, self.limits.block_size) - c.held_blocks - self.blocks
        return short <= 0


def admit(
    predictor: LatencyPredictor | None,
    online: BatchShape,
    candidates: Iterable[OfflineCandidate],
    limits: Limits,
) -> Admitter:
    """Offer decodes first, then prefills, in the given order; returns the admitter."""
    cands = list(candidates)
    a = Admitter(predictor, online, limits)
    for c in [c for c in cands if c.is_decode] + [c for c in cands if not c.is_decode]:
        a.offer(c)
    return a
