"""`Engine.replay`'s clock: the offline backlog is queued before it starts, so an online
request arriving at 0 does not wait behind the engine adding the whole backlog."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")

from hygen_pod.profiling.workload import ReplayRequest
from hygen_pod.vllm_adapter.engine import Engine


class _FakeLLMEngine:
    """Adds requests (noting when), and gives each unfinished one a token a step."""

    def __init__(self) -> None:
        self.added: dict[str, float] = {}
        self.left: dict[str, int] = {}
        self.got: dict[str, int] = {}

    def add_request(self, rid: str, prompt: dict, sp) -> None:  # type: ignore[no-untyped-def]
        self.added[rid] = time.perf_counter()
        self.left[rid] = sp.max_tokens
        self.got[rid] = 0

    def has_unfinished_requests(self) -> bool:
        return bool(self.left)

    def abort_request(self, rids: list[str]) -> None:
        for rid in rids:
            self.left.pop(rid, None)

    def step(self) -> list:
        outs = []
        for rid in list(self.left):
            self.got[rid] += 1
            self.left[rid] -= 1
            done = self.left[rid] == 0
            if done:
                del self.left[rid]
            tokens = SimpleNamespace(token_ids=[7] * self.got[rid])
            outs.append(SimpleNamespace(request_id=rid, outputs=[tokens], finished=done))
        return outs


def _engine() -> tuple[Engine, _FakeLLMEngine]:
    eng = Engine.__new__(Engine)
    fake = _FakeLLMEngine()
    eng.engine = fake  # type: ignore[assignment]
    return eng, fake


def _req(rid: str, offline: bool, arrival: float, max_tokens: int = 3) -> ReplayRequest:
    return ReplayRequest(rid, [1, 2, 3], max_tokens, offline, arrival)


def test_the_backlog_is_queued_before_the_clock_starts() -> None:
    eng, fake = _engine()
    backlog = [_req(f"off{i}", True, 0.0, max_tokens=50) for i in range(200)]
    online = [_req("on0", False, 0.0), _req("on1", False, 0.01)]
    late = _req("off-late", True, 0.005)
    res = eng.replay([online[0], *backlog, late, online[1]], until_online_done=True)
    first_online = res.timings["on0"].arrival
    # every request of the backlog was in the engine before the online request at 0 arrived
    assert max(fake.added[r.rid] for r in backlog) <= first_online
    assert fake.added["on0"] >= first_online
    # an offline request arriving later is fed at its time, like any other
    assert fake.added["off-late"] > first_online
    assert {r.rid for r in backlog} | {"off-late"} == res.offline_ids
    assert all(res.timings[r.rid].arrival == first_online for r in backlog)
    assert res.outputs["on0"] == [7, 7, 7] and res.outputs["on1"] == [7, 7, 7]


def test_online_requests_at_zero_are_still_fed_in_arrival_order() -> None:
    eng, fake = _engine()
    reqs = [_req("on-b", False, 0.002), _req("on-a", False, 0.0), _req("off", True, 0.0)]
    res = eng.replay(reqs)
    assert list(fake.added) == ["off", "on-a", "on-b"]
    assert set(res.outputs) == {"on-a", "on-b", "off"}
