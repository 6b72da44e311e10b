"""What the engine loop and the scheduler's CPU time cost, side by side (simulated GPU).

    python bench/pipeline_costs.py --gpu h100 --load 4 --budget 20 --cap 512

HyGen at one fixed setting (budget, online prefill cap, yielding) and online work alone,
on the colocation bench's evaluation slice (same slice plan, backlog, predictor and noise
draws as `colocation.py` with the same options), under vLLM's two engine loops (sync; async
scheduling, the GPU default, batch queue 2) and three host-time models: none (the device
step alone), stock vLLM's scheduling only, and stock's plus HyGen's own
(`MEASURED_HOST_COSTS`, fitted to `scheduler_overhead.py` on the dev VM: an upper bound
for a GPU server's CPU). The last two rows of each loop differ only in HyGen's own CPU
time per step, so their difference is what HyGen's extra scheduling work costs online
users and offline throughput (online work alone is charged stock's time only). All ten
runs are in this process, on the same workload and noise draws.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from colocation import DEFAULT_LOADS, _trace, bench_predictor, offline_capacity

from hygen_pod.profiling.oracle import KernelOracle
from hygen_pod.profiling.simulator import (
    MEASURED_HOST_COSTS,
    EngineSpec,
    HostCosts,
    SimResult,
    Simulator,
    offline_requests,
    online_requests,
)
from hygen_pod.profiling.slices import plan_slices, split_backlogs

HOSTS = {
    "none": HostCosts(),
    "stock": dataclasses.replace(MEASURED_HOST_COSTS, hygen_base_s=0.0, hygen_per_request_s=0.0),
    "stock + HyGen": MEASURED_HOST_COSTS,
}


def row(loop: str, host: str, policy: str, run: SimResult, capacity: float) -> str:
    o = run.online
    return (
        f"{loop:<5} | {host:<13} | {policy:<11} | {o.mean_ttft * 1e3:9.1f} | "
        f"{o.p99_ttft * 1e3:8.1f} | {o.mean_tbt * 1e3:8.2f} | {o.p99_tbt * 1e3:7.2f} | "
        f"{run.offline_tps:8.0f} | {run.offline_tps / capacity:6.1%}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="shared data folder (default: $HYGEN_DATA or ../shared/data)")
    ap.add_argument("--gpu", default="h100", choices=sorted(DEFAULT_LOADS))
    ap.add_argument("--load", type=float, default=4.0, help="online req/s")
    ap.add_argument("--online-trace", choices=["azure", "mooncake"], default="azure")
    ap.add_argument("--offline-set", choices=["arxiv", "mooncake"], default="arxiv")
    ap.add_argument("--online-trace-file", help="online arrivals from this file instead")
    ap.add_argument("--offline-trace-file", help="offline lengths from this file instead")
    ap.add_argument("--budget", type=float, default=20.0, help="HyGen's budget, ms")
    ap.add_argument("--cap", type=int, help="online prefill cap (default: vLLM's chunking)")
    ap.add_argument("--yield-to-prompts", action="store_true")
    ap.add_argument(
        "--profile-slices", type=int, default=6, help="as the colocation run: places the slice"
    )
    ap.add_argument("--window", type=float, default=180.0, help="simulated seconds per run")
    ap.add_argument("--offline", type=int, default=4000, help="offline backlog size")
    ap.add_argument("--jitter-cv", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        if args.budget <= 0:
            raise ValueError("--budget must be > 0 ms")
        if args.cap is not None and args.cap < 1:
            raise ValueError("--cap must be >= 1 token")
        online = _trace(args.online_trace_file, args.online_trace, args.data)
        pool = _trace(args.offline_trace_file, args.offline_set, args.data)
        _, eval_slice = plan_slices(len(online), args.profile_slices, args.load, args.window)
        _, eval_pool = split_backlogs(pool, args.offline, args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    w = args.window
    oracle = KernelOracle(args.gpu)
    pred = bench_predictor(oracle, args.seed)
    offline = offline_requests(eval_pool, len(eval_pool), args.seed)
    work = online_requests(online, eval_slice.start, args.load, w) + offline
    capacity, _ = offline_capacity(oracle, EngineSpec(), offline, w)
    opts = {"online_prefill_cap": args.cap, "yield_to_prompts": args.yield_to_prompts}
    print(
        f"{args.gpu} {args.load:g} req/s, {args.online_trace} + {args.offline_set}, evaluation "
        f"slice from request {eval_slice.start}; HyGen at {args.budget:g} ms, cap "
        f"{args.cap or 'vLLM chunking'}{', yielding' if args.yield_to_prompts else ''}; "
        f"noise CV {args.jitter_cv:g}; offline-only capacity {capacity:.0f} tok/s (device only)"
    )
    print("host costs, s per step: " + "; ".join(
        f"{k}: {h.base_s:g} + {h.per_request_s:g}/request"
        + (f", HyGen +{h.hygen_base_s:g} + {h.hygen_per_request_s:g}/request" if h.hygen_base_s
           else "")
        for k, h in HOSTS.items()
    ))  # fmt: skip
    print("loop  | host          | policy      | TTFT mean | TTFT P99 | TBT mean | TBT P99 "
          "| off tok/s | % cap")  # fmt: skip
    for loop, queue in (("sync", 1), ("async", 2)):
        for host, costs in HOSTS.items():
            sim = Simulator(oracle.step_seconds, EngineSpec(batch_queue=queue, host=costs),
                            predictor=pred, jitter_cv=args.jitter_cv,
                            jitter_seed=args.seed)  # fmt: skip
            if not costs.hygen_base_s:  # (HyGen's own time is charged to HyGen only)
                alone = sim.run(work, "online_only", window_s=w, online_prefill_cap=args.cap)
                print(row(loop, host, "online only", alone, capacity), flush=True)
            ours = sim.run(work, "hygen", window_s=w, budget_s=args.budget / 1e3, **opts)
            print(row(loop, host, "HyGen", ours, capacity), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
