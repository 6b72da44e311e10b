"""The demo's last stage: the same workload through the serving pod over HTTP.

Starts `hygen-pod serve` (separate engine process, as in a Kubernetes pod) with
the predictor and budget the demo found, replays the Azure slice as streaming
online requests alone, then again while an offline batch runs through the
OpenAI Batch API, and reports client-measured TTFT/TBT against an SLO target,
offline tokens/s in the online window, and the batch's result count.

The replay streams through aiohttp (the client of vLLM's own ``vllm bench serve``) and
watches its own event loop (`loop_lag`): on a small machine the client shares the cores
with the pod, and a client that is not scheduled reads its streams late. Stalls of
0.1-1.9 s were seen that way, most of them from the pod running in a scheduling group of
its own (docs/pod.md, "Measuring on a small machine"); the table prints each replay's
worst loop lag, so a latency that is the client's own stall can be told from the pod's.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
from tqdm import tqdm

from hygen_pod.dev.pod_process import PodProcess
from hygen_pod.policy.latency import LatencySummary, RequestTiming, summarize
from hygen_pod.profiling.workload import ReplayRequest


@dataclass
class PodRun:
    name: str
    online: LatencySummary
    offline_tps: float
    batch: str = "-"
    client_lag_s: float = 0.0  # the replay's worst event-loop lag (`_replay`)


# The client's loop is checked every LAG_TICK_S (`loop_lag`); a worst lag over LAG_NOTE_S
# is called out.
LAG_TICK_S = 0.005
LAG_NOTE_S = 0.05


def demo_pod(workdir: Path, model: Path, kv_bytes: int, *extra: str) -> PodProcess:
    """The pod with the demo engine's settings, on a fresh state directory."""
    state = workdir / "pod-state"
    shutil.rmtree(state, ignore_errors=True)
    args = [
        "--model", str(model), "--served-model-name", "tiny",
        "--dtype", "float32", "--enforce-eager", "--block-size", "32",
        "--max-model-len", "2048", "--max-num-batched-tokens", "512",
        "--max-num-seqs", "32", "--kv-cache-memory-bytes", str(kv_bytes),
        "--uvicorn-log-level", "warning", *extra,
    ]  # fmt: skip
    (workdir / "pod.log").unlink(missing_ok=True)
    return PodProcess(args, state, workdir / "pod.log")


async def _one(
    session: aiohttp.ClientSession, url: str, r: ReplayRequest, t0: float
) -> RequestTiming:
    await asyncio.sleep(max(0.0, t0 + r.arrival_s - time.perf_counter()))
    timing = RequestTiming(arrival=time.perf_counter())
    body = {
        "model": "tiny",
        "prompt": r.prompt_token_ids,
        "max_tokens": r.max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    async with session.post(url + "/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.content:  # one SSE line at a time
            if line.startswith(b"data: {"):
                timing.token_times.append(time.perf_counter())
    return timing


async def loop_lag(worst: list[float]) -> None:
    """Keep in ``worst[0]`` the longest this process's event loop was late for a tick of
    LAG_TICK_S, until cancelled: a client starved of CPU reads its streams late, and its
    latencies say so (also `bench/batch_arrival.py`'s client)."""
    while True:
        t = time.perf_counter()
        await asyncio.sleep(LAG_TICK_S)
        worst[0] = max(worst[0], time.perf_counter() - t - LAG_TICK_S)


def _bar(label: str, total: int) -> tqdm:
    return tqdm(total=total, desc=label, unit="req", leave=False, file=sys.stderr)


async def _replay(
    url: str, online: Sequence[ReplayRequest], label: str
) -> tuple[list[RequestTiming], float]:
    """Every request's timing, and the client's worst event-loop lag while they ran."""
    lag = [0.0]
    ticker = asyncio.create_task(loop_lag(lag))
    t0 = time.perf_counter()
    try:
        with _bar(label, len(online)) as bar:
            timeout = aiohttp.ClientTimeout(total=300)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                tasks = [asyncio.create_task(_one(session, url, r, t0)) for r in online]
                for fut in asyncio.as_completed(tasks):
                    await fut
                    bar.update(1)
                return [t.result() for t in tasks], lag[0]
    finally:
        ticker.cancel()


def _offline_tokens(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    m = re.search(r'^hygen_generated_tokens_total\{class="offline"\} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def _batch_file(offline: Sequence[ReplayRequest]) -> bytes:
    lines = [
        json.dumps(
            {
                "custom_id": r.rid,
                "method": "POST",
                "url": "/v1/completions",
                "body": {
                    "model": "tiny",
                    "prompt": r.prompt_token_ids,
                    "max_tokens": r.max_tokens,
                    "temperature": 0,
                    "ignore_eos": True,
                },
            }
        )
        for r in offline
    ]
    return ("\n".join(lines) + "\n").encode()


def run_pod_stage(
    server: PodProcess,
    online: Sequence[ReplayRequest],
    offline: Sequence[ReplayRequest],
) -> list[PodRun]:
    """Online alone, then online while the offline batch runs; wait for the batch."""
    from openai import OpenAI

    rows = []
    timings, lag = asyncio.run(_replay(server.url, online, "pod: online"))
    rows.append(PodRun("pod: online only", summarize(timings), 0.0, client_lag_s=lag))
    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    f = client.files.create(file=("batch.jsonl", io.BytesIO(_batch_file(offline))), purpose="batch")
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/completions", completion_window="24h"
    )
    before, t0 = _offline_tokens(server.url), time.perf_counter()
    timings, lag = asyncio.run(_replay(server.url, online, "pod: online + batch"))
    window = time.perf_counter() - t0
    offline_tps = (_offline_tokens(server.url) - before) / window
    with _bar("pod: batch", len(offline)) as bar:
        while (b := client.batches.retrieve(batch.id)).status not in ("completed", "failed"):
            bar.update(b.request_counts.completed - bar.n)
            time.sleep(0.5)
    out = client.files.content(b.output_file_id).text if b.output_file_id else ""
    results = len(out.splitlines())
    rows.append(
        PodRun(
            "pod: online + batch",
            summarize(timings),
            offline_tps,
            f"{b.status}, {results}/{len(offline)} results",
            client_lag_s=lag,
        )
    )
    return rows


def format_pod_table(rows: list[PodRun], target_ms: float, budget_ms: float) -> str:
    head = (
        f"{'through the pod (HTTP)':<22} {'TTFT mean':>9} {'TTFT p99':>9} {'TBT mean':>9} "
        f"{'TBT p99':>9} {'SLO p99 TBT':>12} {'offline tok/s':>13} {'client lag':>10}  batch"
    )
    lines = [
        f"pod: hygen-pod serve, budget {budget_ms:.1f} ms, "
        f"SLO p99 TBT <= {target_ms:.1f} ms (1.5x the pod's online-only value)",
        head,
        "-" * len(head),
    ]
    for r in rows:
        o = r.online
        met = "met" if o.p99_tbt * 1e3 <= target_ms else "MISSED"
        lines.append(
            f"{r.name:<22} {o.mean_ttft * 1e3:>7.0f}ms {o.p99_ttft * 1e3:>7.0f}ms "
            f"{o.mean_tbt * 1e3:>7.1f}ms {o.p99_tbt * 1e3:>7.1f}ms {met:>12} "
            f"{r.offline_tps:>13.0f} {r.client_lag_s * 1e3:>8.0f}ms  {r.batch}"
        )
    stalled = [r.name for r in rows if r.client_lag_s > LAG_NOTE_S]
    if stalled:
        lines.append(
            f"note: the client itself stalled over {LAG_NOTE_S * 1e3:.0f} ms in "
            f"{', '.join(stalled)} (client lag: its worst event-loop delay; the client "
            "shares the machine's cores with the pod): latencies near it are the client's"
        )
    return "\n".join(lines)
