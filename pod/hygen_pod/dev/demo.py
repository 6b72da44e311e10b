"""The local main job: HyGen on a CPU vLLM engine with a tiny generated model.

1. capture steps on the engine and fit the latency predictor;
2. in ``rounds`` rounds, each in a rotated order (a load drift hits every policy alike),
   replay a slice of the Azure conversation trace (a) alone, (b) with an offline backlog
   (arXiv summarization lengths) admitted behind online work but without a latency
   budget, and (c) with HyGen's budget;
3. print medians with their range, and one line concluded from the numbers, or
   "inconclusive" with the reason when the machine is too noisy (`demo_verdict`);
4. the same three policies on a simulated H100 from measured kernel tables (`demo_gpu`):
   deterministic, seconds, the GPU-scale effect beside the CPU run;
5. (unless ``pod=False``) the workload through the serving pod over HTTP
   (`hygen_pod.dev.pod_demo`): online alone, then while an offline batch runs.

The CPU budget is a simple rule (a margin over the online-only step time, from a
calibration run); the simulated GPU stage uses the SLO-aware profiler.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hygen_pod.contract.control import OfflineControl
from hygen_pod.contract.settings import SchedulerSettings
from hygen_pod.dev.demo_verdict import spread, verdict
from hygen_pod.dev.tiny_model import build_tiny_llama
from hygen_pod.policy.latency import LatencySummary, summarize
from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.policy.step_trace import timing_samples
from hygen_pod.profiling.traces import arxiv_summarization, azure_conversation
from hygen_pod.profiling.workload import ReplayRequest, cpu_offline, cpu_online


@dataclass
class DemoConfig:
    workdir: Path
    data_dir: Path | None = None
    online_requests: int = 24
    online_qps: float = 3.0
    offline_requests: int = 48
    rounds: int = 3
    seed: int = 0
    budget_margin: float = 1.5
    pod: bool = True
    gpu: str | None = "h100"  # the simulated stage; None skips it


@dataclass
class DemoResult:
    rows: dict[str, list[RunRow]]  # policy -> one row per round
    budget_ms: float
    predictor_mape: float
    conclusion: str
    pod_rows: list = field(default_factory=list)
    pod_target_ms: float = 0.0


@dataclass
class RunRow:
    name: str
    online: LatencySummary
    offline_tokens: int
    wall_s: float
    over_budget: int
    offline_steps: int
    progress_steps: int
    budgeted: bool

    @property
    def budget_column(self) -> str:
        """Steps with offline tokens over the budget / all steps with offline tokens
        (idle-engine progress steps, exempt by design, counted apart)."""
        if not self.budgeted:
            return "-"
        idle = f" ({self.progress_steps} idle)" if self.progress_steps else ""
        return f"{self.over_budget}/{self.offline_steps}{idle}"

    @property
    def offline_tps(self) -> float:
        return self.offline_tokens / self.wall_s if self.wall_s else 0.0

    @property
    def total_tps(self) -> float:
        return (self.online.tokens + self.offline_tokens) / self.wall_s if self.wall_s else 0.0


def _progress(label: str, total: int):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return lambda done_in, done_out: None
    bar = tqdm(total=total, desc=label, unit="req", leave=False, file=sys.stderr)

    def update(_admitted: int, finished: int) -> None:
        bar.update(finished - bar.n)
        if finished >= total:
            bar.close()

    return update


def run_demo(cfg: DemoConfig, emit=print) -> DemoResult:
    """Run every stage; ``emit`` gets each table and conclusion as soon as it is ready."""
    from hygen_pod.vllm_adapter.engine import Engine, EngineOptions, _kv_bytes_per_token

    if cfg.rounds < 1:
        raise ValueError(f"--rounds must be >= 1, not {cfg.rounds}")
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    azure = azure_conversation(cfg.data_dir)
    arxiv = arxiv_summarization(cfg.data_dir)
    model_dir = cfg.workdir / "tiny-llama"
    if not (model_dir / "model.safetensors").exists():
        print(f"building tiny model in {model_dir} ...", flush=True)
        build_tiny_llama(model_dir, seed=cfg.seed)
    t0 = time.perf_counter()
    eng = Engine(
        EngineOptions(
            model=str(model_dir),
            hygen=SchedulerSettings(trace_path=str(cfg.workdir / "steps.jsonl")),
        )
    )
    print(f"engine started in {time.perf_counter() - t0:.1f} s", flush=True)
    s = eng.scheduler
    rng = random.Random(cfg.seed)
    vocab = eng.vocab_size

    def online_reqs(tag: str) -> list[ReplayRequest]:
        return cpu_online(
            azure,
            tag=tag,
            start=1000,
            count=cfg.online_requests,
            qps=cfg.online_qps,
            vocab=vocab,
            seed=cfg.seed + 1,
        )

    def offline_reqs(tag: str, n: int, seed: int) -> list[ReplayRequest]:
        return cpu_offline(arxiv, tag=tag, count=n, vocab=vocab, seed=seed)

    # 1. Capture real steps (offline burst plus some online) and fit the predictor.
    s.set_control(OfflineControl(mode="qps", qps=None))
    s.trace.records.clear()
    capture = offline_reqs("cap", 48, rng.randrange(1 << 30)) + online_reqs("cap")[:16]
    eng.replay(capture, on_step=_progress("capture", len(capture)))
    shapes, secs = timing_samples(list(s.trace)[5:])
    cut = int(len(shapes) * 0.8)
    predictor, _ = LatencyPredictor.select_and_fit(shapes[:cut], secs[:cut])
    predictor.meta["heldout_mape"] = predictor.mape(shapes[cut:], secs[cut:])
    predictor.meta["source"] = "tiny-llama on the CPU engine (demo capture)"
    predictor.save(cfg.workdir / "predictor.json")
    print(
        f"predictor: {len(shapes)} captured steps, features {', '.join(predictor.features)}; "
        f"held-out MAPE {predictor.meta['heldout_mape']:.1%} (CPU timings are noisy)",
        flush=True,
    )
    s.predictor = predictor
    mape = float(predictor.meta["heldout_mape"])

    rows: dict[str, list[RunRow]] = {}

    def run(
        name: str, control: OfflineControl, with_offline: bool, keep: bool = True
    ) -> list[float]:
        """One replay; its row kept under ``name``; the predicted online step times."""
        s.set_control(control)
        s.trace.records.clear()
        assert s.reset_prefix_cache()
        reqs = online_reqs(name)
        if with_offline:
            reqs += offline_reqs(name, cfg.offline_requests, cfg.seed + 7)
        res = eng.replay(reqs, on_step=_progress(name, len(reqs)))
        recs = list(s.trace)
        row = RunRow(
            name=name,
            online=summarize(res.by_class(offline=False)),
            offline_tokens=sum(len(t.token_times) for t in res.by_class(offline=True)),
            wall_s=res.wall_s,
            over_budget=sum(1 for r in recs if r.over_budget),
            offline_steps=sum(1 for r in recs if r.offline_tokens),
            progress_steps=sum(1 for r in recs if r.progress),
            budgeted=control.mode == "budget" and with_offline,
        )
        if keep:
            rows.setdefault(name, []).append(row)
        return [predictor.predict(r.batch_shape()) for r in recs if r.online_tokens]

    # A calibration run, not counted: the budget rule needs online-only step times.
    online_steps = run("calibration", OfflineControl(mode="budget", budget_ms=0), False, False)
    budget_ms = float(np.percentile(online_steps, 90)) * cfg.budget_margin * 1000
    policies = [
        ("online-only", OfflineControl(mode="budget", budget_ms=0), False),
        ("offline without budget", OfflineControl(mode="qps", qps=None), True),
        (f"HyGen (budget {budget_ms:.1f} ms)", OfflineControl(budget_ms=budget_ms), True),
    ]
    for k in range(cfg.rounds):
        for name, control, offline in policies[k % 3 :] + policies[: k % 3]:
            run(name, control, offline)
        print(f"round {k + 1}/{cfg.rounds} done", file=sys.stderr, flush=True)
    o, n, h = (rows[p[0]] for p in policies)
    conclusion = verdict(
        [r.online.p99_tbt for r in o],
        [r.online.p99_tbt for r in n],
        [r.online.p99_tbt for r in h],
        [r.offline_tps for r in h],
        [r.offline_tps for r in n],
        mape,
    )
    result = DemoResult(rows, budget_ms, mape, conclusion)
    emit("")
    emit(format_table(rows))
    emit(f"conclusion (CPU engine): {conclusion}")
    if cfg.gpu is not None:
        from hygen_pod.dev.demo_gpu import format_gpu_table, simulated_gpu

        print(f"simulating {cfg.gpu.upper()} ...", file=sys.stderr, flush=True)
        gpu = simulated_gpu(cfg.data_dir, cfg.gpu, seed=cfg.seed)
        emit("")
        emit(format_gpu_table(gpu))
        emit(f"conclusion (simulated {cfg.gpu.upper()}): {gpu.conclusion}")
    if cfg.pod:
        from hygen_pod.dev.pod_demo import demo_pod, format_pod_table, run_pod_stage

        opts = eng.opts
        del eng, s  # the pod runs its own engine
        print("starting the serving pod (hygen-pod serve) ...", file=sys.stderr, flush=True)
        server = demo_pod(
            cfg.workdir,
            model_dir,
            opts.kv_cache_tokens * _kv_bytes_per_token(model_dir, opts.dtype),
            "--hygen-predictor",
            str(cfg.workdir / "predictor.json"),
            "--budget-ms",
            f"{budget_ms:.3f}",
        )
        server.start()
        try:
            result.pod_rows = run_pod_stage(
                server,
                online_reqs("pod"),
                offline_reqs("pod", cfg.offline_requests, cfg.seed + 7),
            )
        finally:
            server.terminate()
        result.pod_target_ms = result.pod_rows[0].online.p99_tbt * 1e3 * 1.5
        emit("")
        emit(format_pod_table(result.pod_rows, result.pod_target_ms, result.budget_ms))
    return result


def format_table(rows: dict[str, list[RunRow]]) -> str:
    """Per policy: the median over rounds and [min-max]; latencies in ms."""
    rounds = len(next(iter(rows.values())))
    base = spread([r.total_tps for r in next(iter(rows.values()))]).median
    head = (
        f"{'policy (CPU engine)':<26} {'TTFT p99':>19} {'TBT mean':>17} {'TBT p99':>19} "
        f"{'offline tok/s':>17} {'x online-only':>13}  over budget"
    )
    lines = [f"median [min-max] of {rounds} rounds; latencies in ms", head, "-" * len(head)]
    for name, rs in rows.items():
        over = sum(r.over_budget for r in rs)
        steps = sum(r.offline_steps for r in rs)
        idle = sum(r.progress_steps for r in rs)
        budget = f"{over}/{steps}" + (f" ({idle} idle)" if idle else "") if rs[0].budgeted else "-"
        lines.append(
            f"{name:<26} {spread([r.online.p99_ttft for r in rs]).fmt(1e3, 0):>19} "
            f"{spread([r.online.mean_tbt for r in rs]).fmt(1e3):>17} "
            f"{spread([r.online.p99_tbt for r in rs]).fmt(1e3):>19} "
            f"{spread([r.offline_tps for r in rs]).fmt(1, 0):>17} "
            f"{spread([r.total_tps for r in rs]).median / base:>12.2f}x  {budget}"
        )
    return "\n".join(lines)
