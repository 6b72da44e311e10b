"""How far a budget goes on the unseen slice: HyGen at fixed budgets, evaluated in hindsight.

    python bench/budget_sweep.py --gpu h100 --load 2 --cap 256 --targets p99_tbt \\
        --budgets 9.5 9.8 10.1 10.4 11.4
    python bench/budget_sweep.py --gpu h100 --load 2 --targets mean_ttft --tolerance 0.5 \\
        --yield-to-prompts --budgets 26.5 28 30 35 40

The colocation bench profiles a budget on its profiling slices and judges it on a later,
unseen evaluation slice. This runs HyGen at each given budget on that same evaluation
workload (same slice plan, backlogs, predictor and noise draws as `colocation.py` with the
same options) and on each profiling slice, and prints the targeted metrics against
online-only under the same chunking (the chosen-chunking reference), with the share of
offline-only capacity. The largest budget that meets the limit on the evaluation slice is
what a profiler that knew the unseen slice in advance would pick: it tells the policy's
own limit apart from the profiler's caution. It also prints online-only's metrics on each
profiling slice under the cap: run once without ``--cap`` to see what the profiler
compares a cap with before it uses it (a cap whose online-only run misses the tolerance
against vLLM's chunking on a slice is refused).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from colocation import DEFAULT_LOADS, _trace, bench_predictor, offline_capacity

from hygen_pod.profiling.oracle import KernelOracle
from hygen_pod.profiling.simulator import (
    EngineSpec,
    SimResult,
    Simulator,
    offline_requests,
    online_requests,
)
from hygen_pod.profiling.slices import plan_slices, split_backlogs
from hygen_pod.profiling.slo_search import METRICS, check_targets, within


def ratios(run: SimResult, ref: SimResult, targets: list[str]) -> list[float]:
    """Each targeted metric of ``run`` over its online-only reference."""
    return [run.online.metric(m) / ref.online.metric(m) for m in targets]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="shared data folder (default: $HYGEN_DATA or ../shared/data)")
    ap.add_argument("--gpu", default="h100", choices=sorted(DEFAULT_LOADS))
    ap.add_argument("--load", type=float, default=2.0, help="online req/s")
    ap.add_argument("--online-trace", choices=["azure", "mooncake"], default="azure")
    ap.add_argument("--offline-set", choices=["arxiv", "mooncake"], default="arxiv")
    ap.add_argument("--targets", nargs="+", choices=METRICS, default=["p99_tbt"])
    ap.add_argument("--tolerance", type=float, default=0.1)
    ap.add_argument("--budgets", nargs="+", type=float, required=True, help="budgets in ms")
    ap.add_argument("--cap", type=int, help="online prefill cap (default: vLLM's chunking)")
    ap.add_argument("--yield-to-prompts", action="store_true")
    ap.add_argument("--profile-slices", type=int, default=3)
    ap.add_argument("--window", type=float, default=180.0, help="simulated seconds per run")
    ap.add_argument("--offline", type=int, default=4000, help="offline backlog size")
    ap.add_argument("--jitter-cv", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        check_targets(args.targets, args.tolerance)
        if any(b <= 0 for b in args.budgets):
            raise ValueError("--budgets: each budget must be > 0 ms")
        if args.cap is not None and args.cap < 1:
            raise ValueError("--cap must be >= 1 token")
        online = _trace(None, args.online_trace, args.data)
        pool = _trace(None, args.offline_set, args.data)
        # slices start where the colocation bench's start, whatever its loads
        prof_slices, eval_slice = plan_slices(
            len(online), args.profile_slices, args.load, args.window
        )
        prof_pool, eval_pool = split_backlogs(pool, args.offline, args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    w, cap = args.window, args.cap
    oracle = KernelOracle(args.gpu)
    pred = bench_predictor(oracle, args.seed)
    engine = EngineSpec()
    # the colocation bench's two noisy GPUs: evaluation draws (seed), profiling (seed + 1)
    esim = Simulator(oracle.step_seconds, engine, predictor=pred, jitter_cv=args.jitter_cv,
                     jitter_seed=args.seed)  # fmt: skip
    psim = Simulator(oracle.step_seconds, engine, predictor=pred, jitter_cv=args.jitter_cv,
                     jitter_seed=args.seed + 1)  # fmt: skip
    offline = offline_requests(eval_pool, len(eval_pool), args.seed)
    prof_offline = offline_requests(prof_pool, len(prof_pool), args.seed)
    capacity, _ = offline_capacity(oracle, engine, offline, w)
    evalw = online_requests(online, eval_slice.start, args.load, w) + offline
    profs = [online_requests(online, s.start, args.load, w) + prof_offline for s in prof_slices]
    ref = esim.run(evalw, "online_only", window_s=w, online_prefill_cap=cap)
    prefs = [psim.run(p, "online_only", window_s=w, online_prefill_cap=cap) for p in profs]
    tol = args.tolerance
    ms = {m: ref.online.metric(m) * 1e3 for m in args.targets}
    limits = ", ".join(f"{m} {v:.2f} ms, limit {(1 + tol) * v:.2f}" for m, v in ms.items())
    print(
        f"{args.gpu} {args.load:g} req/s, {args.online_trace} + {args.offline_set}, "
        f"cap {cap or 'vLLM chunking'}, {'yielding, ' if args.yield_to_prompts else ''}"
        f"tolerance {args.tolerance:.0%}; online-only on the evaluation slice: {limits}; "
        f"offline-only capacity {capacity:.0f} tok/s"
    )
    # what the profiler compares a cap with, slice by slice (run once without --cap too)
    for m in args.targets:
        per = ", ".join(f"{r.online.metric(m) * 1e3:.2f}" for r in prefs)
        print(f"online-only on the profiling slices: {m} {per} ms")
    print("budget ms | evaluation: metric ms (x reference) | % capacity | met | "
          "profiling slices: x reference")  # fmt: skip
    largest = None
    for b in args.budgets:
        opts = {"online_prefill_cap": cap, "yield_to_prompts": args.yield_to_prompts}
        run = esim.run(evalw, "hygen", window_s=w, budget_s=b / 1e3, **opts)
        xs = ratios(run, ref, args.targets)
        met = within(run.online, ref.online, args.targets, args.tolerance)
        if met:
            largest = b if largest is None else max(largest, b)
        prof = [
            ratios(psim.run(p, "hygen", window_s=w, budget_s=b / 1e3, **opts), r, args.targets)
            for p, r in zip(profs, prefs, strict=True)
        ]
        shown = ", ".join(
            f"{run.online.metric(m) * 1e3:.2f} ({x:.3f})"
            for m, x in zip(args.targets, xs, strict=True)
        )
        per_slice = "; ".join(", ".join(f"{x:.3f}" for x in s) for s in prof)
        print(f"{b:9.2f} | {shown} | {run.offline_tps / capacity:6.1%} | "
              f"{'yes' if met else 'NO '} | {per_slice}", flush=True)  # fmt: skip
    print(f"largest budget met on the evaluation slice: {largest if largest else 'none'} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
