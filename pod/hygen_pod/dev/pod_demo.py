"""The demo's last stage: the same workload through the serving pod over HTTP.

Starts `hygen-pod serve` (separate engine process, as in a Kubernetes pod) with
the predictor and budget the demo found, replays the Azure slice as streaming
online requests alone, then again while an offline batch runs through the
OpenAI Batch API, and reports client-measured TTFT/TBT against an SLO target,
offline tokens/s in the online window, and the batch's result count.
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


async def _one(client: httpx.AsyncClient, r: ReplayRequest, t0: float) -> RequestTiming:
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
    async with client.stream("POST", "/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if line.startswith("data: {"):
                timing.token_times.append(time.perf_counter())
    return timing


def _bar(label: str, total: int) -> tqdm:
    return tqdm(total=total, desc=label, unit="req", leave=False, file=sys.stderr)


async def _replay(url: str, online: Sequence[ReplayRequest], label: str) -> list[RequestTiming]:
    t0 = time.perf_counter()
    with _bar(label, len(online)) as bar:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            tasks = [asyncio.create_task(_one(client, r, t0)) for r in online]
            for fut in asyncio.as_completed(tasks):
                await fut
                bar.update(1)
            return [t.result() for t in tasks]


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
    timings = asyncio.run(_replay(server.url, online, "pod: online"))
    rows.append(PodRun("pod: online only", summarize(timings), 0.0))
    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    f = client.files.create(file=("batch.jsonl", io.BytesIO(_batch_file(offline))), purpose="batch")
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/completions", completion_window="24h"
    )
    before, t0 = _offline_tokens(server.url), time.perf_counter()
    timings = asyncio.run(_replay(server.url, online, "pod: online + batch"))
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
        )
    )
    return rows


def format_pod_table(rows: list[PodRun], target_ms: float, budget_ms: float) -> str:
    head = (
        f"{'through the pod (HTTP)':<22} {'TTFT mean':>9} {'TTFT p99':>9} {'TBT mean':>9} "
        f"{'TBT p99':>9} {'SLO p99 TBT':>12} {'offline tok/s':>13}  batch"
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
            f"{r.offline_tps:>13.0f}  {r.batch}"
        )
    return "\n".join(lines)
