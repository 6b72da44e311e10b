"""The dispatch loop against scripted pods: backpressure, lost pods, expiry, torn output."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hygen_operator.batch_io import FileSink, result_ok
from hygen_operator.dispatch import Dispatcher, Progress
from hygen_operator.pod_client import PodAddress, PodError
from hygen_operator.resources import BatchJobSpec
from hygen_pod.contract.api import (
    OfflineForgotten,
    OfflineOutcome,
    OfflineResult,
    OfflineSubmit,
    OfflineSubmitted,
    request_digest,
)

EP = "/v1/completions"
A, B = PodAddress("a", "10.0.0.1", 8000), PodAddress("b", "10.0.0.2", 8000)


class Pods:
    """Pods that queue a request, report it finished from the second listing on, and can
    refuse (429)."""

    def __init__(self, refuse: dict[str, int] | None = None, bulk: bool = True) -> None:
        self.refuse = dict(refuse or {})
        self.bulk, self.bulk_calls = bulk, 0
        self.store: dict[tuple[str, str], OfflineResult] = {}
        self.submits: list[tuple[str, str]] = []
        self.acks: list[str] = []
        self.forgets: list[tuple[str, str]] = []

    def put(self, pod: str, rid: str, body: dict | None = None) -> None:
        """A request left queued on ``pod``: by an earlier run (the line's own body, as
        `lines` makes it), or by someone else (another ``body``)."""
        body = body if body is not None else {"prompt": str(int(rid.rsplit("-", 1)[1]) - 1)}
        self.store[(pod, rid)] = OfflineResult(
            id=rid, state="queued", url=EP, created_at=0.0, digest=request_digest(EP, body)
        )

    async def submit(self, pod: PodAddress, req: OfflineSubmit) -> OfflineResult:
        if self.refuse.get(pod.name, 0) > 0:
            self.refuse[pod.name] -= 1
            raise PodError(429, "full", retry_after_s=0.01)
        held = self.store.get((pod.name, req.id))
        digest = request_digest(req.url, req.body)
        assert req.digest == digest, "the dispatcher sends each line's digest"
        if held is not None and held.digest != digest:
            raise PodError(409, "same id, another body")  # as the pod answers
        self.submits.append((pod.name, req.id))
        r = OfflineResult(id=req.id, state="queued", url=req.url, created_at=0.0, digest=digest)
        self.store.setdefault((pod.name, req.id), r)
        return r

    async def submit_many(self, pod: PodAddress, reqs: list[OfflineSubmit]) -> OfflineSubmitted:
        """The bulk route, as the pod answers it: one outcome per request, in order."""
        if not self.bulk:
            raise PodError(404, "no bulk offline API")
        outcomes = []
        for req in reqs:
            try:
                res = await self.submit(pod, req)
                outcomes.append(OfflineOutcome(id=req.id, status=202, result=res))
            except PodError as e:
                if e.status in (401, 403):  # the token is checked for the whole call
                    raise
                outcomes.append(OfflineOutcome(id=req.id, status=e.status, error=e.message))
        self.bulk_calls += 1
        full = any(o.status == 429 for o in outcomes)
        return OfflineSubmitted(outcomes=outcomes, retry_after_s=1 if full else None)

    async def ack_many(self, pod: PodAddress, ids: list[str]) -> OfflineForgotten:
        if not self.bulk:
            raise PodError(404, "no bulk offline API")
        self.bulk_calls += 1
        gone = [rid for rid in ids if (pod.name, rid) in self.store]
        for rid in ids:
            await self.ack(pod, rid)
        return OfflineForgotten(deleted=gone, missing=[r for r in ids if r not in gone], refused=[])

    async def requests(self, pod: PodAddress, prefix: str) -> list[OfflineResult]:
        held = sorted(
            (k, r) for k, r in self.store.items() if k[0] == pod.name and r.id.startswith(prefix)
        )
        for k, r in held:
            done = {"state": "done", "status_code": 200, "response": {"ok": r.id, "of": r.digest}}
            self.store[k] = r.model_copy(update=done)
        return [r for _, r in held]

    async def ack(self, pod: PodAddress, rid: str) -> None:
        self.acks.append(rid)
        self.store.pop((pod.name, rid), None)

    async def forget_prefix(self, pod: PodAddress, prefix: str) -> int:
        self.forgets.append((pod.name, prefix))
        gone = [k for k, r in self.store.items() if k[0] == pod.name and r.id.startswith(prefix)]
        for k in gone:
            del self.store[k]
        return len(gone)


class MemorySink:
    def __init__(self) -> None:
        self.lines: dict[int, str] = {}
        self.writes = 0

    async def written(self) -> dict[int, bool]:
        return {n: result_ok(v) for n, v in self.lines.items()}

    async def finish(self) -> None:
        pass

    async def cleanup(self) -> None:
        pass

    async def write(self, results: dict[int, str]) -> None:
        self.writes += 1
        for n, v in results.items():
            assert n not in self.lines, f"line {n} written twice"
            self.lines[n] = v


def spec(**kw) -> BatchJobSpec:
    return BatchJobSpec.model_validate({"servingSlo": "s", "endpoint": "/v1/completions",
                                        "input": {"inline": [{}]},
                                        "output": {"configMap": {"name": "o"}}, **kw})  # fmt: skip


def lines(n: int) -> bytes:
    one = {"method": "POST", "url": "/v1/completions"}
    rows = [{"custom_id": f"c{i}", **one, "body": {"prompt": str(i)}} for i in range(n)]
    return "\n".join(json.dumps(r) for r in rows).encode()


def dispatcher(pods: Pods, sink, data: bytes, live, **kw) -> Dispatcher:
    async def read() -> AsyncIterator[bytes]:
        yield data

    async def ready() -> list[PodAddress]:
        return list(live())

    async def report(p: Progress) -> None:
        pass

    return Dispatcher(pods, "uid", kw.pop("spec", spec()), read, sink, ready, report,  # type: ignore[arg-type]
                      poll_s=0.001, **kw)  # fmt: skip


def test_backpressure_and_a_lost_pod_still_give_one_result_per_line():
    pods, sink = Pods(refuse={"a": 3}), MemorySink()
    rounds = {"n": 0}

    def live():
        rounds["n"] += 1
        return [A, B] if rounds["n"] < 2 else [A]  # b disappears after the first round

    d = dispatcher(pods, sink, lines(20), live, lost_after_s=0.0)
    outcome, p = asyncio.run(d.run(lambda: None))
    assert outcome == "Succeeded" and (p.completed, p.failed) == (20, 0)
    assert sorted(json.loads(v)["custom_id"] for v in sink.lines.values()) == sorted(
        f"c{i}" for i in range(20)
    )
    moved = {rid for pod, rid in pods.submits if pod == "b"} & {
        rid for pod, rid in pods.submits if pod == "a"
    }
    assert moved, "lines of the lost pod were resubmitted to the other"
    assert len(pods.acks) == 20


def test_parallelism_bounds_outstanding_requests_per_pod():
    pods, sink = Pods(), MemorySink()
    seen = []
    orig = pods.submit

    async def submit(pod, req):
        seen.append(
            sum(1 for (pn, _), r in pods.store.items() if pn == pod.name and r.state == "queued")
        )
        return await orig(pod, req)

    pods.submit = submit  # type: ignore[method-assign]
    d = dispatcher(pods, sink, lines(30), lambda: [A], spec=spec(parallelism=4))
    asyncio.run(d.run(lambda: None))
    assert max(seen) < 4 and len(sink.lines) == 30


def test_a_passed_completion_window_expires_the_rest():
    pods, sink = Pods(), MemorySink()
    d = dispatcher(pods, sink, lines(5), lambda: [A], spec=spec(completionWindow="1m"),
                   started_at=time.time() - 120)  # fmt: skip
    outcome, p = asyncio.run(d.run(lambda: None))
    assert outcome == "Expired" and (p.completed, p.failed) == (0, 5)
    assert {json.loads(v)["error"]["code"] for v in sink.lines.values()} == {"batch_expired"}


@pytest.mark.parametrize(("reason", "cancels"), [("Cancelled", True), ("Stopped", False)])
def test_cancel_stops_and_cancels_queued_work_but_shutdown_does_not(reason: str, cancels: bool):
    pods, sink = Pods(), MemorySink()
    calls = {"n": 0}

    def stop() -> str | None:
        calls["n"] += 1
        return reason if calls["n"] > 1 else None

    pods.put("b", "uid-49")  # left on b by a run that crashed
    d = dispatcher(pods, sink, lines(50), lambda: [A, B], spec=spec(parallelism=10))
    outcome, _ = asyncio.run(d.run(stop))
    assert outcome == reason
    if cancels:  # every ready pod forgets the whole job, also what this run never sent
        assert sorted(pods.forgets) == [("a", "uid-"), ("b", "uid-")] and not pods.store
    else:  # shutdown leaves work queued for the next run: 10 per pod, and line 49, which
        # this run had not read yet (the window is 2 x 10 x 2 lines) and so left alone
        assert not pods.forgets and len(pods.store) == 21


def test_a_restart_adopts_work_left_on_pods_instead_of_sending_it_again():
    pods, sink = Pods(), MemorySink()
    for i in range(10):  # a crashed run spread lines 1-10 over a and b
        pods.put("ab"[i % 2], f"uid-{i + 1}")
    d = dispatcher(pods, sink, lines(12), lambda: [A, B, PodAddress("c", "10.0.0.3", 8000)])
    outcome, p = asyncio.run(d.run(lambda: None))
    assert outcome == "Succeeded" and (p.completed, p.failed) == (12, 0)
    assert sorted(rid for _, rid in pods.submits) == ["uid-11", "uid-12"]
    assert json.loads(sink.lines[1])["response"]["body"]["ok"] == "uid-1"


def test_a_line_held_by_two_pods_is_recorded_once_and_the_other_copy_dropped():
    pods, sink = Pods(), MemorySink()
    pods.put("a", "uid-1")
    pods.put("b", "uid-1")  # resubmitted after a was thought lost, and a came back
    outcome, p = asyncio.run(dispatcher(pods, sink, lines(1), lambda: [A, B]).run(lambda: None))
    assert outcome == "Succeeded" and (p.completed, len(sink.lines)) == (1, 1)
    assert pods.submits == [] and not pods.store, "the second copy was forgotten"


def test_a_pod_that_lost_its_state_gets_the_line_again():
    pods, sink = Pods(), MemorySink()
    wipe = {"n": 0}
    orig = pods.requests

    async def requests(pod, prefix):
        wipe["n"] += 1
        if wipe["n"] == 2:  # the pod was replaced between two polls
            pods.store.clear()
        return await orig(pod, prefix)

    pods.requests = requests  # type: ignore[method-assign]
    outcome, p = asyncio.run(dispatcher(pods, sink, lines(3), lambda: [A]).run(lambda: None))
    assert outcome == "Succeeded" and p.completed == 3
    assert sorted(rid for _, rid in pods.submits) == sorted(["uid-1", "uid-2", "uid-3"] * 2)


def test_a_restart_skips_lines_already_written_and_a_torn_line_reruns(tmp_path: Path):
    out = tmp_path / "out.jsonl"
    sink = FileSink(out, "uid")
    first = dispatcher(Pods(), sink, lines(6), lambda: [A])
    asyncio.run(first.run(lambda: None))
    text = out.read_text().splitlines()
    out.write_text("\n".join(text[:4]) + "\n" + text[4][:10])  # crash: lines 5-6 lost, 5 torn
    pods = Pods()
    again = dispatcher(pods, FileSink(out, "uid"), lines(6), lambda: [A])
    outcome, p = asyncio.run(again.run(lambda: None))
    assert outcome == "Succeeded" and p.completed == 6
    assert sorted(rid for _, rid in pods.submits) == ["uid-5", "uid-6"]
    got = [json.loads(x)["custom_id"] for x in out.read_text().splitlines()]
    assert sorted(got) == [f"c{i}" for i in range(6)]


def test_bad_lines_fail_alone():
    data = lines(3) + b"\nnot json\n" + json.dumps({"method": "POST"}).encode()
    sink = MemorySink()
    outcome, p = asyncio.run(dispatcher(Pods(), sink, data, lambda: [A]).run(lambda: None))
    assert outcome == "Succeeded" and (p.completed, p.failed) == (3, 2)


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_request_forged_under_a_lines_id_is_never_taken_as_its_result(when: str):
    """Someone stores their own request under a line's id (before the dispatcher sends the
    line: its submit gets 409; or after: the listing shows a foreign digest). Either way the
    forged request is deleted and the line's own request runs; the output holds its result."""
    pods, sink = Pods(), MemorySink()
    forged = {"prompt": "attacker text"}
    if when == "before":
        pods.put("a", "uid-1", forged)
    else:
        orig = pods.requests
        swapped = {"n": 0}

        async def requests(pod, prefix):
            if swapped["n"] == 0 and ("a", "uid-1") in pods.store:
                swapped["n"] = 1  # replaced between submit and the first listing
                pods.put("a", "uid-1", forged)
            return await orig(pod, prefix)

        pods.requests = requests  # type: ignore[method-assign]
    outcome, p = asyncio.run(dispatcher(pods, sink, lines(2), lambda: [A]).run(lambda: None))
    assert outcome == "Succeeded" and (p.completed, p.failed) == (2, 0)
    assert "uid-1" in pods.acks, "the forged request was deleted"
    line = json.loads(sink.lines[1])
    own = request_digest(EP, {"prompt": "0"})
    assert line["custom_id"] == "c0" and line["response"]["body"] == {"ok": "uid-1", "of": own}
    assert [rid for _, rid in pods.submits].count("uid-1") == (1 if when == "before" else 2)


def test_a_pod_refusing_the_token_holds_lines_back_instead_of_failing_them():
    """401 is the dispatcher's credentials, not the line: lines wait (status says why) and
    run once the token is fixed; none is recorded as failed."""
    pods, sink = Pods(), MemorySink()
    refusals = {"n": 0}
    orig = pods.submit
    reports: list[str | None] = []

    async def submit(pod, req):
        if refusals["n"] < 3:
            refusals["n"] += 1
            raise PodError(401, "this route needs the operator's bearer token")
        return await orig(pod, req)

    pods.submit = submit  # type: ignore[method-assign]
    d = dispatcher(pods, sink, lines(4), lambda: [A])

    async def report(p: Progress) -> None:
        reports.append(p.problem)

    d.report = report  # type: ignore[method-assign]
    import hygen_operator.dispatch as dispatch_mod

    real = dispatch_mod.time.monotonic
    shift = {"s": 0.0}
    dispatch_mod.time.monotonic = lambda: real() + shift["s"]  # type: ignore[assignment]
    try:

        async def go():
            async def bump():
                while True:
                    shift["s"] += 6  # past each 5 s back-off
                    await asyncio.sleep(0.001)

            t = asyncio.create_task(bump())
            try:
                return await d.run(lambda: None)
            finally:
                t.cancel()

        outcome, p = asyncio.run(go())
    finally:
        dispatch_mod.time.monotonic = real  # type: ignore[assignment]
    assert outcome == "Succeeded" and (p.completed, p.failed) == (4, 0)
    assert any(r and "refuses the dispatcher's token (401)" in r for r in reports)
    assert reports[-1] is None  # cleared once lines went through


@pytest.mark.parametrize("bulk", [True, False])
def test_lines_go_in_bulk_calls_per_pod_or_one_by_one_to_a_pod_without_the_route(bulk: bool):
    pods, sink = Pods(bulk=bulk), MemorySink()
    d = dispatcher(pods, sink, lines(300), lambda: [A, B], spec=spec(parallelism=100))
    outcome, p = asyncio.run(d.run(lambda: None))
    assert outcome == "Succeeded" and (p.completed, len(sink.lines)) == (300, 300)
    assert len(pods.submits) == 300 and not pods.store  # each sent once, each acknowledged
    if bulk:  # per poll: one submit and one ack call per pod (150 lines each, 100 at a time)
        assert pods.bulk_calls <= 4 * 2 + 2, pods.bulk_calls
    else:
        assert pods.bulk_calls == 0
