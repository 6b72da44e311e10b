"""A stateful property test of the pod's offline routes and runner (hypothesis).

Rules interleave the dispatch routes (POST, GET, DELETE of one id, DELETE of a prefix)
with the runner starting work, the event loop stepping and a fake engine finishing calls,
in any order. Invariants: the runner's `inflight` holds only live tasks (a slot never
leaks), nothing runs twice at once, a result always belongs to the body stored under
its id; and once the engine is let go, every stored request ends done within a bound.
The routes are the real route functions on one event loop, with the store called inline,
so every interleaving is deterministic and hypothesis can shrink what it finds.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import Response
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from prometheus_client import CollectorRegistry

from hygen_pod.contract.api import OfflineSubmit
from hygen_pod.server import pod_app
from hygen_pod.server.offline_store import Conflict, NotFound
from hygen_pod.server.pod_app import Pod, PodSettings
from hygen_pod.server.start_gate import reached_engine

EP = "/v1/completions"
IDS = st.sampled_from(["a1", "a2", "b1"])
PREFIXES = st.sampled_from(["a", "b", "a1"])


class HeldEngine:
    """Each call waits until the test lets it finish; records who is inside."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, asyncio.Future]] = []
        self.running: dict[str, int] = {}
        self.calls: dict[str, int] = {}

    async def __call__(self, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        rid = body["request_id"]
        reached_engine()  # in the engine at once, as the pod's generate wrapper reports
        self.calls[rid] = self.calls.get(rid, 0) + 1
        self.running[rid] = self.running.get(rid, 0) + 1
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((rid, fut))
        try:
            await fut
            return 200, {"echo": body["prompt"]}
        finally:
            self.running[rid] -= 1
            if not self.running[rid]:
                del self.running[rid]

    def release(self, i: int) -> None:
        live = [(r, f) for r, f in self.pending if not f.done()]
        if live:
            live[i % len(live)][1].set_result(None)


class OfflineRoutes(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp())
        self.engine = HeldEngine()
        self.pod = Pod(
            PodSettings(state_dir=self.dir, control_token="t", max_inflight=2),
            self.engine,
            registry=CollectorRegistry(),
        )

        async def inline(fn, *a, **kw):  # the store on the loop's thread: no hidden races
            return fn(*a, **kw)

        self.pod.runner.db = inline  # type: ignore[method-assign]
        self.model: dict[str, str] = {}  # id -> prompt stored now
        self.calls_at_creation: dict[str, int] = {}

    def run(self, coro) -> Any:
        async def step():
            out = await coro
            await asyncio.sleep(0)  # let done-callbacks of finished tasks run
            return out

        return self.loop.run_until_complete(step())

    # ------------------------------------------------------------ operations
    async def _post(self, rid: str, prompt: str) -> None:
        sub = OfflineSubmit(id=rid, url=EP, body={"prompt": prompt})
        try:
            await pod_app.submit_offline(self.pod, sub, Response())
        except Conflict:
            assert self.model[rid] != prompt
            return
        if rid not in self.model:
            self.model[rid] = prompt
            self.calls_at_creation[rid] = self.engine.calls.get(rid, 0)

    async def _delete(self, rid: str) -> None:
        try:
            await pod_app.delete_offline(self.pod, rid)
        except NotFound:
            assert rid not in self.model
            return
        del self.model[rid]

    async def _delete_prefix(self, prefix: str) -> None:
        out = await pod_app.delete_offline_prefix(self.pod, prefix)
        gone = {r for r in self.model if r.startswith(prefix)}
        assert out.deleted == len(gone)
        for r in gone:
            del self.model[r]

    # ------------------------------------------------------------ rules
    @rule(rid=IDS, prompt=st.sampled_from(["x", "y"]))
    def post(self, rid: str, prompt: str) -> None:
        self.run(self._post(rid, prompt))

    @rule(rid=IDS)
    def delete(self, rid: str) -> None:
        self.run(self._delete(rid))

    @rule(prefix=PREFIXES)
    def delete_prefix(self, prefix: str) -> None:
        self.run(self._delete_prefix(prefix))

    @rule(rid=IDS)
    def get(self, rid: str) -> None:
        try:
            res = self.run(pod_app.get_offline(self.pod, rid))
        except NotFound:
            assert rid not in self.model
            return
        if res.state == "done":
            assert res.response == {"echo": self.model[rid]}

    @rule(
        then=st.none()
        | st.tuples(st.just("post"), IDS, st.sampled_from(["x", "y"]))
        | st.tuples(st.just("delete"), IDS)
        | st.tuples(st.just("delete_prefix"), PREFIXES)
    )
    def fill(self, then: tuple | None) -> None:
        """The runner starts work; ``then`` is a route call that lands before the new
        tasks' first step (an HTTP handler resuming on the same loop can)."""

        async def go() -> None:
            await self.pod.runner._fill()
            if then is not None:
                await getattr(self, "_" + then[0])(*then[1:])

        self.run(go())

    @rule(n=st.integers(1, 3))
    def tick(self, n: int) -> None:
        for _ in range(n):
            self.run(asyncio.sleep(0))

    @rule(i=st.integers(0, 5))
    def finish(self, i: int) -> None:
        self.engine.release(i)
        self.run(asyncio.sleep(0))

    # ------------------------------------------------------- invariants
    @invariant()
    def no_leaked_slot(self) -> None:
        dead = [r for r, t in self.pod.runner.inflight.items() if t.done()]
        assert not dead, f"inflight holds finished tasks {dead}: their slots leak"
        assert len(self.pod.runner.inflight) <= 2

    @invariant()
    def nothing_runs_twice(self) -> None:
        assert all(n == 1 for n in self.engine.running.values()), self.engine.running
        for rid in self.model:
            ran = self.engine.calls.get(rid, 0) - self.calls_at_creation[rid]
            assert ran <= 1, f"{rid} ran {ran} times"

    def teardown(self) -> None:
        try:
            for _ in range(50):  # the bound: let the engine go until nothing is queued
                self.engine.release(0)
                self.run(self.pod.runner._fill())
                self.run(asyncio.sleep(0))
                if self.pod.store.depth()["queued"] == 0:
                    break
            for rid, prompt in self.model.items():
                res = self.pod.store.get_request(rid)
                assert res.state == "done", f"{rid} stuck {res.state}"
                assert res.response == {"echo": prompt}, f"{rid} holds another's result"
            assert not self.pod.runner.inflight
        finally:
            self.run(self.pod.runner.stop())
            self.pod.store.close()
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)


OfflineRoutes.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_offline_routes_and_runner = OfflineRoutes.TestCase
