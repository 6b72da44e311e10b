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

from sim_workload import add_workload_args, load_workload

from hygen_pod.profiling.simulator import EngineSpec, SimResult
from hygen_pod.profiling.slo_search import METRICS, check_targets, within


def ratios(run: SimResult, ref: SimResult, targets: list[str]) -> list[float]:
    """Each targeted metric of ``run`` over its online-only reference."""
    return [run.online.metric(m) / ref.online.metric(m) for m in targets]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_args(ap, load=2.0, profile_slices=3)
    ap.add_argument("--targets", nargs="+", choices=METRICS, default=["p99_tbt"])
    ap.add_argument("--tolerance", type=float, default=0.1)
    ap.add_argument("--budgets", nargs="+", type=float, required=True, help="budgets in ms")
    args = ap.parse_args()
    try:
        check_targets(args.targets, args.tolerance)
        if any(b <= 0 for b in args.budgets):
            raise ValueError("--budgets: each budget must be > 0 ms")
        wl = load_workload(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    w, cap = args.window, args.cap
    # the colocation bench's two noisy GPUs: evaluation draws and profiling draws
    esim = wl.simulator(EngineSpec())
    psim = wl.simulator(EngineSpec(), profiling=True)
    offline = wl.offline()
    capacity = wl.capacity(offline)
    evalw = wl.online_at(wl.eval_slice) + offline
    prof_offline = wl.offline(profiling=True)
    profs = [wl.online_at(s) + prof_offline for s in wl.prof_slices]
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
    print(f"largest budget met on the evaluation slice: {f'{largest:g} ms' if largest else 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
