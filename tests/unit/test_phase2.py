"""The phase-2 driver both the plugin and the simulator use: order, QPS bucket, progress."""

from __future__ import annotations

from hygen_pod.policy.admission import Admitter, Limits, OfflineCandidate
from hygen_pod.policy.batch_shape import BatchShape
from hygen_pod.policy.offline_queue import OfflineQueue
from hygen_pod.policy.phase2 import fill_offline
from hygen_pod.policy.rate import TokenBucket


def _limits(**kw) -> Limits:
    base = dict(budget_s=None, tokens=2048, free_blocks=1000, slots=64, block_size=16)
    return Limits(**{**base, **kw})


def _queue(*names: str) -> OfflineQueue[str]:
    q: OfflineQueue[str] = OfflineQueue(max_bypass=0)
    for i, n in enumerate(names):
        q.add(n, (-1 - i,), n)
    return q


def _waiting(prompt: int):
    return lambda ref: OfflineCandidate(ref, 0, prompt, prompt, 0, False)


def test_running_decodes_first_then_queue_in_order() -> None:
    prefill = OfflineCandidate("run-prefill", 0, 100, 200, 7, True, (0, 1))
    decode = OfflineCandidate("run-decode", 300, 1, 200, 20, True, (0, 2))
    adm = Admitter(None, BatchShape(), _limits())
    got = fill_offline(adm, [prefill, decode], lambda r: 0, _queue("a", "b"), _waiting(50))
    assert [c.ref for c, _ in adm.allocations] == ["run-decode", "run-prefill", "a", "b"]
    assert got.running == ["run-decode", "run-prefill"] and got.started == ["a", "b"]
    assert not got.progress


def test_queue_stops_at_the_first_misfit_and_gives_the_token_back() -> None:
    t = [0.0]
    bucket = TokenBucket(2.0, clock=lambda: t[0])
    t[0] = 1.0  # two starts available
    q = _queue("a", "b", "c")
    adm = Admitter(None, BatchShape(), _limits(tokens=120, allow_partial=False))
    got = fill_offline(adm, [], lambda r: 0, q, _waiting(100), bucket=bucket)
    assert got.started == ["a"] and len(q) == 2  # "b" does not fit: it stays first
    assert bucket.take() and not bucket.take()  # "b"'s start was given back, only that


def test_progress_only_when_nothing_fits_and_asked_for() -> None:
    from hygen_pod.policy.predictor import LatencyPredictor

    slow = LatencyPredictor(["intercept", "prefill_tokens"], [0.05, 10.0])  # > any budget
    limits = _limits(budget_s=0.001)
    adm = Admitter(slow, BatchShape(), limits)
    got = fill_offline(adm, [], lambda r: 0, _queue("a"), _waiting(500))
    assert not adm.allocations and not got.progress
    adm = Admitter(slow, BatchShape(), limits)
    got = fill_offline(adm, [], lambda r: 0, _queue("a"), _waiting(500), progress_chunk=16)
    assert got.progress and got.started == ["a"] and adm.allocations[0][1] == 16
