"""Send online chat traffic to a HyGen Service and print TTFT/TBT percentiles.

Poisson arrivals at --qps for --seconds, streaming responses, so the numbers are what a
user sees. Example (after `kubectl port-forward svc/llama2-7b 8000:80`):

    python examples/online_traffic.py --url http://127.0.0.1:8000 --model llama-2-7b --qps 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time

import httpx

PROMPTS = [
    "Explain what a Kubernetes operator does in two sentences.",
    "Write a haiku about GPUs.",
    "List three uses of batch inference.",
    "What is time to first token?",
]


async def one(client: httpx.AsyncClient, url: str, model: str, max_tokens: int, out: dict) -> None:
    body = {"model": model, "stream": True, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": random.choice(PROMPTS)}]}  # fmt: skip
    t0 = time.perf_counter()
    last, gaps = None, []
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                out["errors"].append(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
                if not delta:
                    continue
                now = time.perf_counter()
                if last is None:
                    out["ttft"].append(now - t0)
                else:
                    gaps.append(now - last)
                last = now
    except httpx.HTTPError as e:
        out["errors"].append(repr(e))
    out["tbt"].extend(gaps)


def pct(xs: list[float], q: float) -> str:
    if not xs:
        return "-"
    return (
        f"{statistics.quantiles(xs, n=100)[q - 1] * 1e3:.1f} ms"
        if len(xs) > 1
        else f"{xs[0] * 1e3:.1f} ms"
    )


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model", required=True, help="the ServingSLO's servedModelName")
    p.add_argument("--qps", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY"),
        help="a key from the ServingSLO's apiKeys Secret (default $OPENAI_API_KEY)",
    )
    a = p.parse_args()
    out: dict = {"ttft": [], "tbt": [], "errors": []}
    headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else {}
    async with httpx.AsyncClient(timeout=300, headers=headers) as client:
        tasks, end = [], time.monotonic() + a.seconds
        while time.monotonic() < end:
            tasks.append(asyncio.create_task(one(client, a.url, a.model, a.max_tokens, out)))
            await asyncio.sleep(random.expovariate(a.qps))
        await asyncio.gather(*tasks)
    print(f"requests {len(tasks)}, errors {len(out['errors'])}")
    print(f"TTFT p50 {pct(out['ttft'], 50)}  p99 {pct(out['ttft'], 99)}")
    print(f"TBT  p50 {pct(out['tbt'], 50)}  p99 {pct(out['tbt'], 99)}")
    for e in out["errors"][:5]:
        print("  error:", e)


if __name__ == "__main__":
    asyncio.run(main())
