"""The dispatch loop against scripted pods: backpressure, lost pods, expiry, torn output."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from hygen_operator.batch_io import FileSink
from hygen_operator.dispatch import Dispatcher, Progress
from hygen_operator.pod_client import PodAddress, PodError
from hygen_operator.resources import BatchJobSpec
from hygen_pod.api import OfflineResult, OfflineSubmit

A, B = PodAddress("a", "10.0.0.1", 8000), PodAddress("b", "10.0.0.2", 8000)


class Pods:
    """Pods that queue a request, finish it on the next result() call, and can refuse (429)."""

    def __init__(self, refuse: dict[str, int] | None = None) -> None:
        self.refuse = dict(refuse or {})
        self.store: dict[tuple[str, str], OfflineResult] = {}
        self.submits: list[tuple[str, str]] = []
        self.acks: list[str] = []

    async def submit(self, pod: PodAddress, req: OfflineSubmit) -> OfflineResult:
        if self.refuse.get(pod.name, 0) > 0:
            self.refuse[pod.name] -= 1
            raise PodError(429, "full", retry_after_s=0.01)
        self.submits.append((pod.name, req.id))
        r = OfflineResult(id=req.id, state="queued", url=req.url, created_at=0.0)
        self.store.setdefault((pod.name, req.id), r)
        return r

    async def result(self, pod: PodAddress, rid: str) -> OfflineResult | None:
        r = self.store.get((pod.name, rid))
        if r is None:
            return None
        done = r.model_copy(update={"state": "done", "status_code": 200, "response": {"ok": rid}})
        self.store[(pod.name, rid)] = done
        return r if r.state == "queued" else done

    async def ack(self, pod: PodAddress, rid: str) -> None:
        self.acks.append(rid)
        self.store.pop((pod.name, rid), None)


class MemorySink:
    def __init__(self) -> None:
        self.lines: dict[int, str] = {}
        self.writes = 0

    async def written(self) -> dict[int, str]:
        return dict(self.lines)

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
    async def read() -> bytes:
        return data

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

    d = dispatcher(pods, sink, lines(50), lambda: [A], spec=spec(parallelism=10))
    outcome, _ = asyncio.run(d.run(stop))
    assert outcome == reason
    assert bool(pods.acks) == cancels  # shutdown leaves work queued for the next run


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
