"""Online burst against a real pod while a large batch runs (vLLM CPU engine, tiny model).

Phases, each ``phase_s`` long: an online-only burst first (the reference: what the burst
costs with no offline work), then with a batch queued: steady online load, a burst at
``burst_x`` times that rate, and steady load again until the batch ends. Every online
request has a client timeout; the batch's output file is checked for exactly one result
per custom_id.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hygen_pod.dev.pod_process import PodProcess
from tests.helpers.pod_process import tiny_pod
from tests.reliability.scenarios import Outcome

EP = "/v1/completions"


def budget_pod(model: Path, workdir: Path, predictor: Path) -> PodProcess:
    """The tiny-model pod in HyGen budget mode (40 ms, predictor fitted on this machine)."""
    return tiny_pod(model, workdir / "state", "--hygen-predictor", str(predictor),
                    "--budget-ms", "40", "--slo", "p99_tbt=500")  # fmt: skip


@dataclass
class Phase:
    name: str
    rps: float
    sent: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    offline_done: int = 0  # batch lines finished during the phase
    seconds: float = 0.0

    @property
    def offline_per_s(self) -> float:
        return self.offline_done / self.seconds if self.seconds else 0.0

    @property
    def p99_s(self) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(0.99 * len(xs)))] if xs else 0.0


async def _online(http: httpx.AsyncClient, url: str, ph: Phase, timeout_s: float) -> None:
    t0 = time.monotonic()
    try:
        r = await http.post(
            url + EP,
            json={"model": "tiny", "prompt": "hello " * 100, "max_tokens": 48, "ignore_eos": True},
            timeout=timeout_s,
        )
        r.raise_for_status()
        ph.latencies.append(time.monotonic() - t0)
    except Exception:
        ph.errors += 1


def _ok(resp: httpx.Response) -> Any:
    """The reply's JSON; an error reply raises with its status and URL (not a KeyError
    on a missing field later)."""
    return resp.raise_for_status().json()


def _completed(http: httpx.Client, url: str, bid: str) -> tuple[str, int]:
    b = _ok(http.get(f"{url}/v1/batches/{bid}"))
    c = b["request_counts"]
    return b["status"], c["completed"] + c["failed"]


async def _drive(
    url: str,
    ph: Phase,
    until: Callable[[float], bool],
    timeout_s: float,
    watch: Callable[[httpx.AsyncClient], Awaitable[None]] | None = None,
) -> None:
    """Send online requests at ph.rps (open loop) until ``until(seconds)`` is true, with
    ``watch`` (e.g. a batch-status poll) running beside them. Nothing here may block the
    loop: the status poll was once a blocking GET inside it, which held every online
    response while it waited, and the last phase's P99 read 4.3 and 8.2 s in two of four
    runs (0.5-0.6 s in three runs since)."""
    t0 = time.monotonic()
    tasks = []
    async with httpx.AsyncClient() as http:
        watcher = asyncio.create_task(watch(http)) if watch is not None else None
        try:
            i = 0
            while not until(time.monotonic() - t0):
                if watcher is not None and watcher.done():
                    watcher.result()  # its error (a timeout) ends the phase
                tasks.append(asyncio.create_task(_online(http, url, ph, timeout_s)))
                ph.sent += 1
                i += 1
                await asyncio.sleep(max(0.0, t0 + i / ph.rps - time.monotonic()))
            await asyncio.gather(*tasks)
        finally:
            if watcher is not None:
                watcher.cancel()
    ph.seconds = time.monotonic() - t0


def online_burst(
    url: str,
    *,
    lines: int = 1500,
    max_tokens: int = 64,
    rps: float = 4.0,
    burst_x: float = 4.0,
    phase_s: float = 8.0,
    timeout_s: float = 30.0,
    max_s: float = 600.0,
) -> tuple[Outcome, list[Phase]]:
    http = httpx.Client(base_url=url, timeout=30)
    phases: list[Phase] = []
    asyncio.run(_drive(url, Phase("warm-up", rps), lambda t: t >= 2, timeout_s))  # not counted
    ref = Phase("online-only burst", rps * burst_x)
    asyncio.run(_drive(url, ref, lambda t: t >= phase_s, timeout_s))
    phases.append(ref)

    body = "\n".join(
        json.dumps({"custom_id": f"bulk-{i}", "method": "POST", "url": EP,
                    "body": {"model": "tiny", "prompt": f"document {i} " + "text " * 40,
                             "max_tokens": max_tokens, "ignore_eos": True}})
        for i in range(lines)
    ).encode()  # fmt: skip
    f = _ok(http.post("/v1/files", files={"file": ("bulk.jsonl", io.BytesIO(body))},
                      data={"purpose": "batch"}))  # fmt: skip
    bid = _ok(http.post("/v1/batches", json={"input_file_id": f["id"], "endpoint": EP}))["id"]
    start = time.monotonic()

    def phase(name: str, rate: float, until: Callable[[float], bool], watch=None) -> Phase:
        ph = Phase(name, rate)
        before = _completed(http, url, bid)[1]
        asyncio.run(_drive(url, ph, until, timeout_s, watch))
        ph.offline_done = _completed(http, url, bid)[1] - before
        phases.append(ph)
        return ph

    phase("steady, batch running", rps, lambda t: t >= phase_s)
    phase(f"burst x{burst_x:g}, batch running", rps * burst_x, lambda t: t >= phase_s)

    ended = [False]
    polls: list[float] = []  # seconds each batch-status GET took

    async def watch_batch(client: httpx.AsyncClient) -> None:
        while True:
            t = time.monotonic()
            got = _ok(await client.get(f"{url}/v1/batches/{bid}", timeout=60))
            polls.append(time.monotonic() - t)
            if got["status"] in ("completed", "failed"):
                ended[0] = True
                return
            if time.monotonic() - start > max_s:
                raise TimeoutError(f"batch not done in {max_s} s")
            await asyncio.sleep(0.25)

    phase("steady until the batch ends", rps, lambda t: t >= 2 and ended[0], watch_batch)
    b = _ok(http.get(f"/v1/batches/{bid}"))
    records = [json.loads(x) for x in http.get(f"/v1/files/{b['output_file_id']}/content")
               .raise_for_status().text.splitlines()]  # fmt: skip
    if b.get("error_file_id"):
        records += [json.loads(x) for x in http.get(f"/v1/files/{b['error_file_id']}/content")
                    .raise_for_status().text.splitlines()]  # fmt: skip
    seen = Counter(r["custom_id"] for r in records)
    co = phases[1:]
    out = Outcome(
        "online burst x4 during a batch (real engine)",
        lines,
        lost=sum(1 for i in range(lines) if seen[f"bulk-{i}"] == 0),
        duplicates=sum(n - 1 for n in seen.values() if n > 1),
        online_sent=sum(p.sent for p in co),
        online_errors=sum(p.errors for p in co),
        seconds=time.monotonic() - start + ref.seconds,
    )
    failed = sum(1 for r in records if r.get("error") or r["response"]["status_code"] != 200)
    out.notes = [
        f"{p.name}: online {p.rps:g} req/s, p99 {p.p99_s * 1e3:.0f} ms, errors {p.errors}; "
        f"offline {p.offline_per_s:.1f} lines/s"
        for p in phases
    ] + [
        f"batch {b['status']}, {failed} lines failed; its status GET took up to "
        f"{max(polls, default=0) * 1e3:.0f} ms while online requests ran"
    ]
    http.close()
    return out, phases
