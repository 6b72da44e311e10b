"""The demo's GPU stage: the same policies on a simulated GPU, in seconds, deterministic.

Llama-3.1-8B step times from measured kernel tables (`oracle`); the budget (and HyGen*'s
QPS) found by the SLO-aware profiler on one slice of the Azure trace and judged on another
slice it never saw, so the newcomer sees the GPU-scale effect next to the noisy CPU run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hygen_pod.policy.latency import LatencySummary
from hygen_pod.profiling.profiler import ProfilerSettings, SimRunner, profile
from hygen_pod.profiling.simulator import SimResult, offline_requests, online_requests
from hygen_pod.profiling.slo_search import within
from hygen_pod.profiling.traces import arxiv_summarization, azure_conversation

PROFILE_START, EVAL_START = 1000, 6000  # disjoint slices of the trace
# Online prefill caps the profiler searches jointly with the budget (None: vLLM's own
# chunking); a P99 TBT target does 15% of offline-only capacity without them.
DEMO_CAPS: tuple[int | None, ...] = (1024, 512, None)


@dataclass
class GpuRow:
    name: str
    online: LatencySummary
    offline_tps: float
    total_tps: float


@dataclass
class GpuResult:
    gpu: str
    qps: float
    target: str
    tolerance: float
    budget_ms: float
    rows: list[GpuRow]
    capacity_tps: float  # offline-only throughput: the ceiling for offline work
    conclusion: str
    online_prefill_cap: int | None = None  # HyGen's, as profiled


def _row(name: str, r: SimResult) -> GpuRow:
    return GpuRow(name, r.online, r.offline_tps, r.total_tps)


def simulated_gpu(
    data_dir: Path | None,
    gpu: str = "h100",
    *,
    qps: float = 4.0,
    window_s: float = 60.0,
    target: str = "p99_tbt",
    tolerance: float = 0.1,
    offline: int = 2000,
    seed: int = 0,
    online_prefill_caps: tuple[int | None, ...] = DEMO_CAPS,
) -> GpuResult:
    azure = azure_conversation(data_dir)
    backlog = offline_requests(arxiv_summarization(data_dir), offline, seed)
    prof = online_requests(azure, PROFILE_START, qps, window_s) + backlog
    evalw = online_requests(azure, EVAL_START, qps, window_s) + backlog
    runner = SimRunner(gpu, prof, window_s)
    settings = ProfilerSettings(
        targets=[target], tolerance=tolerance, seed=seed, online_prefill_caps=online_prefill_caps
    )
    doc = profile(runner, settings)
    sim = runner.sim
    base = sim.run(evalw, "online_only", window_s=window_s)
    naive = sim.run(evalw, "naive", window_s=window_s)
    star = sim.run(
        evalw, "hygen_qps", window_s=window_s, qps=doc.qps,
        online_prefill_cap=doc.qps_online_prefill_cap,
    )  # fmt: skip
    hygen = sim.run(
        evalw, "hygen", window_s=window_s, budget_s=doc.budget_ms / 1e3,
        online_prefill_cap=doc.online_prefill_cap, yield_to_prompts=doc.yield_to_prompts,
    )  # fmt: skip
    cap = sim.run(evalw, "offline_only", window_s=window_s)
    rows = [
        _row("online-only", base),
        _row("offline without budget", naive),
        _row(f"HyGen* (qps {doc.qps:.2f})", star),
        _row(f"HyGen (budget {doc.budget_ms:.1f} ms)", hygen),
    ]
    ok = within(hygen.online, base.online, [target], tolerance)
    naive_ok = within(naive.online, base.online, [target], tolerance)
    metric = target.replace("_", " ").replace("p99", "P99").replace("ttft", "TTFT")
    metric = metric.replace("tbt", "TBT")
    gain = hygen.total_tps / base.total_tps
    conclusion = (
        f"on a slice the profiler never saw, HyGen {'kept' if ok else 'MISSED'} {metric} "
        f"within {tolerance:.0%} of online-only while serving {gain:.2f}x its tokens "
        f"({hygen.offline_tps / cap.offline_tps:.0%} of offline-only capacity); offline "
        f"without budget {'kept' if naive_ok else 'missed'} it"
    )
    if star.offline_tps > 0:
        ratio = hygen.offline_tps / star.offline_tps
        conclusion += f"; HyGen does {ratio:.1f}x the offline work of HyGen* (a fixed rate)"
    return GpuResult(
        gpu, qps, target, tolerance, doc.budget_ms, rows, cap.offline_tps, conclusion + ".",
        doc.online_prefill_cap,
    )  # fmt: skip


def format_gpu_table(res: GpuResult) -> str:
    base = res.rows[0].total_tps
    head = (
        f"{'policy (simulated ' + res.gpu.upper() + ')':<26} {'TTFT mean':>9} {'TTFT p99':>9} "
        f"{'TBT mean':>9} {'TBT p99':>9} {'offline tok/s':>13} {'x online-only':>13}"
    )
    cap = res.online_prefill_cap
    chunking = f"online prefill cap {cap}" if cap else "vLLM's chunking"
    lines = [
        f"Llama-3.1-8B, Azure conversation at {res.qps:g} req/s, target {res.target} within "
        f"{res.tolerance:.0%}; offline-only capacity {res.capacity_tps:.0f} tok/s; "
        f"HyGen with {chunking} (profiled)",
        head,
        "-" * len(head),
    ]
    for r in res.rows:
        o = r.online
        lines.append(
            f"{r.name:<26} {o.mean_ttft * 1e3:>7.0f}ms {o.p99_ttft * 1e3:>7.0f}ms "
            f"{o.mean_tbt * 1e3:>7.1f}ms {o.p99_tbt * 1e3:>7.1f}ms {r.offline_tps:>13.0f} "
            f"{r.total_tps / base:>12.2f}x"
        )
    return "\n".join(lines)
