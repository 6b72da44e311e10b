"""Online TTFT when a batch arrives: a real pod (vLLM CPU engine, tiny model), online
streaming requests at a steady rate, and a batch of long-prompt lines submitted mid-way.

    python bench/batch_arrival.py                       # --starting 256 8 2 1, 2 repeats
    python bench/batch_arrival.py --starting 256 2 --repeats 3 --lines 512
    python bench/batch_arrival.py --starting 256 2 --offline-qps 1000  # and the batch's time

By default the pod runs HyGen* at 0 req/s, so no offline token is generated: what is
measured is only the offline requests' way into the engine (vLLM's renderer and its one tokenizer
thread, which online requests share, then the engine-core add). Each `--starting` value
is the pod's `--offline-max-starting` (256 = every request the runner holds starts at
once, as before the start gate); all values run in turn in each repeat, each on a fresh
pod. Printed per run: client-side TTFT of the online requests sent in the seconds before
the batch and in the window after it (mean, P90, worst), the summed excess over the
before-median, how many offline requests the scheduler holds at the end (all of them
must have reached the engine), and the mean online TTFT over the whole run as the client
saw it and as the pod's own metric (`hygen_ttft_seconds`, what the SLO window and the
operator see) counted it, and the longest the client's own event loop was late (a client
starved of CPU on a small machine reads its streams late: a worst TTFT close to that lag
is the client's, not the pod's). With `--offline-qps Q` > 0 the offline work runs too, and each
run also waits for the batch to complete and prints how long it took from submission:
what the gate costs offline throughput. Last, each setting's excess against 256's.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hygen_pod.dev.pod_demo import loop_lag  # noqa: E402
from hygen_pod.dev.tiny_model import build_tiny_llama  # noqa: E402
from tests.helpers.pod_process import tiny_pod  # noqa: E402

BEFORE_S = 4.0  # online only, then the batch
AFTER_S = 6.0  # the window judged after the batch is submitted
ONLINE_RPS = 20.0


def _batch(lines: int, words: int, seed: int) -> bytes:
    """Batch input lines whose prompts are random words: the tiny model's byte-level BPE
    makes ~5 tokens of 6 characters, so 700 words are ~3,700 tokens (4.5 KB)."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(4000)]  # fmt: skip
    out = []
    for k in range(lines):
        text = " ".join(rng.choice(vocab) for _ in range(words))
        line = {"custom_id": f"b{k}", "method": "POST", "url": "/v1/completions",
                "body": {"model": "tiny", "prompt": text, "max_tokens": 8}}  # fmt: skip
        out.append(json.dumps(line))
    return "\n".join(out).encode()


async def _drive(
    url: str, body: bytes, finish: bool
) -> tuple[list[tuple[float, float]], float, float]:
    """(send time relative to the batch's submission, TTFT) of every online request,
    (``finish``) the seconds from submission until the batch completed, else NaN, and the
    client's own worst event-loop lag while the online requests ran."""
    sent: list[tuple[float, float]] = []
    submitted_at = [float("inf")]
    lag = [0.0]
    ticker = asyncio.create_task(loop_lag(lag))

    async def online(session: aiohttp.ClientSession) -> None:
        t0 = time.monotonic()
        req = {"model": "tiny", "prompt": "hello " * 20, "max_tokens": 4, "stream": True,
               "ignore_eos": True}  # fmt: skip
        async with session.post(url + "/v1/completions", json=req) as r:
            r.raise_for_status()
            first = None
            async for line in r.content:
                if first is None and line.startswith(b"data: ") and b'"text"' in line:
                    first = time.monotonic() - t0
        if first is None:
            raise RuntimeError("an online request streamed no token")
        sent.append((t0, first))

    async def submit(http: httpx.AsyncClient) -> str:
        submitted_at[0] = time.monotonic()  # the batch arrives as its upload starts
        f = await http.post(url + "/v1/files", data={"purpose": "batch"},
                            files={"file": ("b.jsonl", io.BytesIO(body))})  # fmt: skip
        f.raise_for_status()
        b = await http.post(url + "/v1/batches", json={
            "input_file_id": f.json()["id"], "endpoint": "/v1/completions"})  # fmt: skip
        b.raise_for_status()
        return str(b.json()["id"])

    # Online requests go through aiohttp (as vLLM's own `vllm bench serve` client does) on
    # their own schedule, and the batch is submitted beside them. With httpx this loop
    # stalled for 0.1-0.6 s in 5 of 7 runs (aiohttp: 2 of 18), and those stalls showed up
    # as client TTFTs the pod never had (docs/pod.md, "Metrics"). Most of it was the pod
    # in a session of its own, a scheduling group of its own ("Measuring on a small
    # machine"); `PodProcess` now keeps it in ours, and the lag stayed under 35 ms.
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        httpx.AsyncClient(timeout=60) as http,
        aiohttp.ClientSession(timeout=timeout) as session,
    ):
        tasks, k, start = [], 0, time.monotonic()
        submit_at = start + BEFORE_S
        submitting: asyncio.Task[str] | None = None
        while time.monotonic() < submit_at + AFTER_S:
            if submitting is None and time.monotonic() >= submit_at:
                submitting = asyncio.create_task(submit(http))
            tasks.append(asyncio.create_task(online(session)))
            k += 1
            await asyncio.sleep(max(0.0, start + k / ONLINE_RPS - time.monotonic()))
        await asyncio.gather(*tasks)
        ticker.cancel()
        assert submitting is not None
        batch_id = await submitting
        took = float("nan")
        while finish:
            got = (await http.get(f"{url}/v1/batches/{batch_id}")).json()
            if got["status"] == "completed":
                took = time.monotonic() - submitted_at[0]
                break
            if got["status"] in ("failed", "expired", "cancelled"):
                raise RuntimeError(f"batch {got['status']}: {got.get('request_counts')}")
            if time.monotonic() - submitted_at[0] > 900:
                raise RuntimeError(f"batch not done after 900 s: {got.get('request_counts')}")
            await asyncio.sleep(0.2)
    return [(t0 - submitted_at[0], ttft) for t0, ttft in sent], took, lag[0]


def run(model: Path, work: Path, starting: int, body: bytes, qps: float) -> dict[str, float]:
    work.mkdir(parents=True)
    pod = tiny_pod(model, work / "state", "--offline-qps", f"{qps:g}",
                   "--offline-max-starting", str(starting))  # fmt: skip
    # 4,096 positions (the tiny model's) for long prompts, and the KV cache to match
    pod.args[pod.args.index("--max-model-len") + 1] = "4096"
    i = pod.args.index("--kv-cache-memory-bytes")
    pod.args[i + 1] = str(int(pod.args[i + 1]) * 8)
    pod.start()
    try:
        ttfts, took, lag = asyncio.run(_drive(pod.url, body, finish=qps > 0))
        status = json.loads((work / "state" / "scheduler-status.json").read_text())
        pod_mean = _pod_mean_ttft(httpx.get(pod.url + "/metrics", timeout=10).text)
    finally:
        pod.terminate()
    before = sorted(t for s, t in ttfts if -BEFORE_S + 1 <= s < 0)
    after = sorted(t for s, t in ttfts if s >= 0)
    base = statistics.median(before)
    return {
        "before_p50": base,
        "mean": statistics.mean(after),
        "p90": after[int(0.9 * len(after))],
        "worst": after[-1],
        "excess": sum(max(0.0, t - base) for t in after),
        # with offline work running (qps > 0) the queue at the end says nothing
        "held": status["offline_waiting"] if qps == 0 else float("nan"),
        "client_mean": statistics.mean(t for _, t in ttfts),
        "pod_mean": pod_mean,
        "client_lag": lag,
        "batch_s": took,
    }


def _pod_mean_ttft(metrics: str) -> float:
    """The pod's own mean online TTFT (s), from its Prometheus histogram."""
    got = {s.name: s.value for f in text_string_to_metric_families(metrics)
           if f.name == "hygen_ttft_seconds" for s in f.samples
           if s.labels.get("class") == "online"}  # fmt: skip
    return got["hygen_ttft_seconds_sum"] / got["hygen_ttft_seconds_count"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--starting", nargs="+", type=int, default=[256, 8, 2, 1],
                    help="values of --offline-max-starting to compare (256: no gate)")  # fmt: skip
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lines", type=int, default=256, help="batch lines (the runner holds 256)")
    ap.add_argument("--words", type=int, default=700, help="words per offline prompt")
    ap.add_argument("--offline-qps", type=float, default=0.0,
                    help="the pod's HyGen* rate; > 0 also times the batch")  # fmt: skip
    args = ap.parse_args()
    if any(s < 1 for s in args.starting) or args.repeats < 1 or args.lines < 1:
        ap.error("--starting, --repeats and --lines must be >= 1")
    if args.offline_qps < 0:
        ap.error("--offline-qps must be >= 0")
    body = _batch(args.lines, args.words, seed=0)
    excess: dict[int, list[float]] = {s: [] for s in args.starting}
    print(f"{args.lines} lines of {args.words} words; online {ONLINE_RPS:g} req/s; TTFT ms "
          f"after the batch ({AFTER_S:g} s) against the {BEFORE_S - 1:g} s before")  # fmt: skip
    print("starting | run | before p50 | mean | P90 | worst | excess s | held at the end "
          "| whole run: client mean | pod's metric mean | client's worst loop lag "
          "| batch s")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny"
        build_tiny_llama(model)
        for rep in range(args.repeats):
            for s in args.starting:
                r = run(model, Path(tmp) / f"run-{s}-{rep}", s, body, args.offline_qps)
                excess[s].append(r["excess"])
                held = "-" if math.isnan(r["held"]) else f"{r['held']:.0f} of {args.lines}"
                ms = " | ".join(f"{r[k] * 1e3:.1f}" for k in ("before_p50", "mean", "p90", "worst"))
                print(f"{s:8d} | {rep + 1:3d} | {ms} | {r['excess']:.2f} | "
                      f"{held} | {r['client_mean'] * 1e3:.1f} | "
                      f"{r['pod_mean'] * 1e3:.1f} | {r['client_lag'] * 1e3:.0f} | "
                      f"{r['batch_s']:.1f}", flush=True)  # fmt: skip
    ref = max(args.starting)
    for s in args.starting:
        ratio = statistics.mean(excess[s]) / max(1e-9, statistics.mean(excess[ref]))
        print(f"starting {s}: excess TTFT {ratio:.2f}x starting {ref}'s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
