"""The demo's HTTP replay: token times from a streamed completion, and the client's own
stalls reported beside the latencies they would distort."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from hygen_pod.dev.pod_demo import LAG_NOTE_S, PodRun, _replay, format_pod_table
from hygen_pod.policy.latency import LatencySummary
from hygen_pod.profiling.workload import ReplayRequest

TOKENS = 5
GAP_S = 0.02


async def _serve_and_replay(stall_s: float) -> tuple[list, float, list[dict]]:
    """A streaming /v1/completions on a local port (``TOKENS`` chunks, ``GAP_S`` apart,
    then [DONE]); the replay of two requests against it. With ``stall_s`` the client's
    loop is blocked that long while the streams run."""
    bodies: list[dict] = []

    async def completions(request: web.Request) -> web.StreamResponse:
        bodies.append(await request.json())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for k in range(TOKENS):
            await asyncio.sleep(GAP_S)
            await resp.write(f'data: {{"choices": [{{"text": "t{k}"}}]}}\n\n'.encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    reqs = [
        ReplayRequest(f"r{k}", [1, 2, 3], 4, offline=False, arrival_s=0.01 * k) for k in range(2)
    ]

    async def stall() -> None:
        await asyncio.sleep(0.03)
        time.sleep(stall_s)  # the whole client process not running

    try:
        staller = asyncio.create_task(stall()) if stall_s else None
        timings, lag = await _replay(f"http://127.0.0.1:{port}", reqs, "test")
        if staller is not None:
            await staller
    finally:
        await runner.cleanup()
    return timings, lag, bodies


def test_replay_times_every_streamed_token_and_sends_the_prompt() -> None:
    timings, lag, bodies = asyncio.run(_serve_and_replay(0.0))
    assert [len(t.token_times) for t in timings] == [TOKENS, TOKENS]  # [DONE] is no token
    for t in timings:
        assert t.ttft is not None and t.ttft >= GAP_S * 0.9
        assert min(t.tbts) >= GAP_S * 0.5
    assert all(b["prompt"] == [1, 2, 3] and b["stream"] for b in bodies)
    assert lag < LAG_NOTE_S


def test_a_stalled_client_is_measured_and_called_out_in_the_table() -> None:
    timings, lag, _ = asyncio.run(_serve_and_replay(0.2))
    assert 0.15 < lag < 1.0
    # the stall shows in the client's own token gaps: the pod never had it
    assert max(g for t in timings for g in t.tbts) > 0.15

    summary = LatencySummary(2, 10, 0.02, 0.03, 0.02, 0.2)
    rows = [
        PodRun("pod: online only", summary, 0.0, client_lag_s=0.001),
        PodRun("pod: online + batch", summary, 5.0, "completed, 3/3 results", client_lag_s=lag),
    ]
    table = format_pod_table(rows, target_ms=30.0, budget_ms=40.0).splitlines()
    batch_row = next(ln for ln in table if ln.startswith("pod: online + batch"))
    assert batch_row.endswith("completed, 3/3 results")  # the batch column stays last
    assert f"{lag * 1e3:.0f}ms" in batch_row
    note = table[-1]
    assert note.startswith("note: the client itself stalled") and "pod: online + batch" in note
    assert "pod: online only" not in note

    quiet = format_pod_table(rows[:1], target_ms=30.0, budget_ms=40.0)
    assert "note:" not in quiet
