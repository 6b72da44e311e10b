"""Co-location on the real CPU engine (tiny model): profile on one slice, check another.

Profiles HyGen's budget and HyGen*'s QPS on one slice of the Azure conversation
trace (with an arXiv offline backlog), then replays a different slice under
online-only, offline-without-budget, HyGen* and HyGen, and prints ratios. CPU
timings are noisy; read the ratios, not the milliseconds.

    python bench/colocation_cpu.py [--target p99_tbt] [--online-prefill-caps 64 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

from hygen_pod.contract.control import OfflineControl
from hygen_pod.dev.tiny_model import build_tiny_llama
from hygen_pod.profiling.profiler import ProfilerSettings, profile
from hygen_pod.profiling.slo_search import METRICS
from hygen_pod.profiling.traces import arxiv_summarization, azure_conversation
from hygen_pod.profiling.workload import cpu_offline, cpu_online


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data")
    ap.add_argument("--target", default="p99_tbt", choices=METRICS)
    ap.add_argument("--tolerance", type=float, default=0.5)
    ap.add_argument(
        "--online",
        type=int,
        default=96,
        help="online requests per slice (with 32, too few TBT samples for a stable P99 here)",
    )
    ap.add_argument("--online-qps", type=float, default=3.0)
    ap.add_argument(
        "--offline", type=int, default=1000, help="offline backlog (not drained within the window)"
    )
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument(
        "--online-prefill-caps",
        nargs="*",
        type=int,
        default=[],
        metavar="TOKENS",
        help="online prefill caps searched jointly with budget and QPS (vLLM's chunking "
        "is always tried); e.g. 64 32 for the tiny model's short prompts",
    )
    ap.add_argument("--workdir", default=".hygen-demo")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        azure, arxiv = azure_conversation(args.data), arxiv_summarization(args.data)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from hygen_pod.vllm_adapter.engine import Engine, EngineOptions, EngineRunner

    model = Path(args.workdir) / "tiny-llama"
    if not (model / "model.safetensors").exists():
        build_tiny_llama(model, seed=args.seed)
    eng = Engine(EngineOptions(model=str(model)))
    v = eng.vocab_size

    def runner(tag: str, start: int) -> EngineRunner:
        return EngineRunner(
            eng,
            cpu_online(
                azure,
                tag=tag,
                start=start,
                count=args.online,
                qps=args.online_qps,
                vocab=v,
                seed=args.seed + start,
            ),
            cpu_offline(arxiv, tag=tag, count=args.offline, vocab=v, seed=args.seed + 1),
            cpu_offline(arxiv, tag=f"{tag}-cap", count=48, vocab=v, seed=args.seed + 2),
            model=str(model),
        )

    t0 = time.perf_counter()
    doc = profile(
        runner("prof", 1000),
        ProfilerSettings(
            [args.target],
            args.tolerance,
            seed=args.seed,
            iters=args.iters,
            online_prefill_caps=[None, *args.online_prefill_caps],
        ),
        progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True),
    )
    prof_s = time.perf_counter() - t0
    ev = runner("eval", 6000)  # a slice the profiler did not see
    runs = {
        "online-only": ev.run(OfflineControl(budget_ms=0), with_offline=False),
        "offline, no budget": ev.run(OfflineControl(mode="qps", qps=None), with_offline=True),
        f"HyGen* (qps {doc.qps:.2f}{_chunk(doc.qps_online_prefill_cap)})": ev.run(
            OfflineControl(mode="qps", qps=doc.qps, online_prefill_cap=doc.qps_online_prefill_cap),
            True,
        )
        if doc.qps > 0
        else None,
        f"HyGen (budget {doc.budget_ms:.1f} ms{_chunk(doc.online_prefill_cap)})": ev.run(
            OfflineControl(budget_ms=doc.budget_ms, online_prefill_cap=doc.online_prefill_cap),
            True,
        )
        if doc.budget_ms > 0
        else None,
    }
    base = runs["online-only"]
    star = next((r for k, r in runs.items() if k.startswith("HyGen*") and r), None)
    limit = (1 + args.tolerance) * base.online.metric(args.target)
    print(
        f"\nCPU engine, tiny model; target {args.target} within {args.tolerance:.0%} of "
        f"online-only on an unseen slice; profiling took {prof_s:.0f} s"
    )
    print(
        f"{'policy':<36}{args.target + ' / online-only':>24}{'met':>5}"
        f"{'offline tok/s':>15}{'x HyGen* offline':>18}"
    )
    for name, r in runs.items():
        if r is None:
            print(f"{name:<36}  (profiling found no setting within tolerance)")
            continue
        ratio = r.online.metric(args.target) / base.online.metric(args.target)
        met = "yes" if r.online.metric(args.target) <= limit else "NO"
        vs = f"{r.offline_tps / star.offline_tps:.2f}x" if star and star.offline_tps else "-"
        print(f"{name:<36}{ratio:>23.2f}x{met:>5}{r.offline_tps:>15.0f}{vs:>18}")
    return 0


def _chunk(cap: int | None) -> str:
    return "" if cap is None else f", chunk {cap}"


if __name__ == "__main__":
    sys.exit(main())
