"""Phase 2, written once: fill an iteration with offline work after online work is planned.

The vLLM plugin and the simulator both call `fill_offline`; they differ only in how they
describe their requests (`OfflineCandidate`s) and how they preempt one. The order is the
policy: running offline requests first (decodes, then prefill chunks; older work may
take KV from newer), then queued requests in the queue's order (never skipping ahead;
under HyGen* each start takes a token from the QPS bucket), and on an otherwise idle
engine with nothing admitted, one block-sized progress chunk so offline work always
finishes (`Admitter.progress`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from hygen_pod.policy.admission import Admitter, OfflineCandidate
from hygen_pod.policy.batch_shape import BatchShape
from hygen_pod.policy.offline_queue import OfflineQueue
from hygen_pod.policy.rate import TokenBucket

T = TypeVar("T")


@dataclass
class Phase2Result(Generic[T]):
    """What phase 2 admitted; the token counts are in ``Admitter.allocations``."""

    running: list[T] = field(default_factory=list)  # running offline requests admitted
    started: list[T] = field(default_factory=list)  # popped from the queue: the caller starts them
    progress: bool = False  # a progress chunk (the latency budget was not applied)


def step_budget(
    budget_s: float | None, yield_to_prompts: bool, online: BatchShape, online_waiting: int
) -> float | None:
    """This step's latency budget: ``budget_s``, or 0 (no offline work) when yielding to
    prompts and the step serves an online prompt chunk (``online`` has a prefill) or leaves
    online requests waiting. None (no latency cap) stays None."""
    if budget_s is not None and yield_to_prompts and (online.num_prefills or online_waiting):
        return 0.0
    return budget_s


def fill_offline(
    admitter: Admitter,
    running: Sequence[OfflineCandidate],
    evict: Callable[[Any], int],
    queue: OfflineQueue[T],
    waiting: Callable[[T], OfflineCandidate],
    *,
    bucket: TokenBucket | None = None,
    progress_chunk: int | None = None,
    start_new: bool = True,
) -> Phase2Result[T]:
    """Offer ``running`` candidates, then the queue's head while it fits; ``evict(ref)``
    preempts a running request and returns the KV blocks it freed; ``waiting(ref)``
    describes a queued request. ``progress_chunk`` (tokens) allows a progress step when
    nothing was admitted: pass it only when the engine has no online work this step.
    ``start_new=False`` offers running work only (the queue waits this step)."""
    cands = sorted(running, key=lambda c: not c.is_decode)
    evicted: set[int] = set()

    def evict_and_note(ref: Any) -> int:
        evicted.add(id(ref))
        return evict(ref)

    out: Phase2Result[T] = Phase2Result(
        running=[c.ref for c in admitter.offer_running(cands, evict_and_note)] if cands else []
    )
    while start_new and not admitter.closed and queue:
        # a full step refuses any request: no need to find the head or describe it (for
        # the vLLM plugin a prefix-cache lookup), nor to take a start from the bucket
        if admitter.full:
            break
        if bucket is not None and not bucket.take():
            break
        ref = queue.peek()
        assert ref is not None
        if not admitter.offer(waiting(ref)):
            if bucket is not None:
                bucket.give_back()  # not started
            break  # keep the queue's order: do not skip ahead
        queue.pop()
        out.started.append(ref)
    if progress_chunk is not None and not admitter.allocations:
        first = next((c for c in cands if id(c.ref) not in evicted), None)
        if first is None and start_new and queue:
            head = queue.peek()
            assert head is not None
            first = waiting(head)
        if first is not None and admitter.progress(first, progress_chunk):
            if first.running:
                out.running.append(first.ref)
            else:
                queue.pop()
                out.started.append(first.ref)
            out.progress = True
    return out
