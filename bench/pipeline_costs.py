"""What the engine loop and the scheduler's CPU time cost, side by side (simulated GPU).

    python bench/pipeline_costs.py --gpu h100 --load 4 --budget 20 --cap 512

HyGen at one fixed setting (budget, online prefill cap, yielding) and online work alone,
on the colocation bench's evaluation slice (same slice plan, backlog, predictor and noise
draws as `colocation.py` with the same options), under vLLM's two engine loops (sync; async
scheduling, the GPU default, batch queue 2) and three host-time models: none (the device
step alone), stock vLLM's scheduling only, and stock's plus HyGen's own
(`MEASURED_HOST_COSTS`, fitted to `scheduler_overhead.py` on the dev VM, an AMD EPYC
like a GPU host's CPU: of the order of a host's time, not a bound for it). The last two
rows of each loop differ only in HyGen's own CPU time per step, so their difference is
what HyGen's extra scheduling work costs online users and offline throughput (online work
alone is charged stock's time only). All ten runs are in this process, on the same
workload and noise draws.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim_workload import add_workload_args, load_workload

from hygen_pod.profiling.simulator import MEASURED_HOST_COSTS, EngineSpec, HostCosts, SimResult

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
    add_workload_args(ap, load=4.0, profile_slices=6)
    ap.add_argument("--budget", type=float, default=20.0, help="HyGen's budget, ms")
    args = ap.parse_args()
    try:
        if args.budget <= 0:
            raise ValueError("--budget must be > 0 ms")
        wl = load_workload(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    w, eval_slice = args.window, wl.eval_slice
    offline = wl.offline()
    work = wl.online_at(eval_slice) + offline
    capacity = wl.capacity(offline)
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
            sim = wl.simulator(EngineSpec(batch_queue=queue, host=costs))
            if not costs.hygen_base_s:  # (HyGen's own time is charged to HyGen only)
                alone = sim.run(work, "online_only", window_s=w, online_prefill_cap=args.cap)
                print(row(loop, host, "online only", alone, capacity), flush=True)
            ours = sim.run(work, "hygen", window_s=w, budget_s=args.budget / 1e3, **opts)
            print(row(loop, host, "HyGen", ours, capacity), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
