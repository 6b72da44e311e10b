"""Does online work alone keep up? The online-only run of each trace slice, per GPU and load.

    python bench/online_saturation.py                      # Azure and Mooncake, H100 and A100
    python bench/online_saturation.py --window 60          # the profiler's short windows

Where online demand alone exceeds what the engine can serve, no offline setting can be
"within tolerance" of online-only for long: online-only itself has a growing queue, its
latencies depend on where the slice ends, and the right setting is no offline work.
This prints, for the colocation bench's profiling slices and its evaluation slice (same
slice plan, noise CV 0.05, async pipeline), the online-only run's

* ``served``: the share of the online output tokens owed to requests that arrived in the
  window that were emitted by the window's end (about 1 when the engine keeps up; the
  rest is work in flight at the end);
* ``at last arrival``: the same share at the last online arrival, which needs no window
  (what a real-engine replay would have);
* ``TTFT growth``: median TTFT of the last third of arrivals over the first third;
* ``BEHIND`` where the profiler's check (profiling/online_lag.py: at last arrival under
  0.9 and TTFT growth of 3 or more) says online work alone fell behind the engine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from colocation import DEFAULT_LOADS, bench_predictor
from sim_traces import read_trace

from hygen_pod.policy.latency import RequestTiming
from hygen_pod.profiling.online_lag import online_load
from hygen_pod.profiling.oracle import KernelOracle
from hygen_pod.profiling.simulator import EngineSpec, Simulator, online_requests
from hygen_pod.profiling.slices import plan_slices

MOONCAKE_LOADS = {"a100": [0.5, 1.0, 2.0], "h100": [1.0, 2.0, 3.0], "h200": [1.0, 2.0, 3.0]}


def served_by(timings: list[RequestTiming], window_s: float) -> float:
    """The share of owed online output tokens emitted by the window's end."""
    owed = sum(len(t.token_times) for t in timings)
    return sum(sum(1 for x in t.token_times if x <= window_s) for t in timings) / owed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="shared data folder (default: $HYGEN_DATA or ../shared/data)")
    ap.add_argument("--gpus", nargs="+", default=["h100", "a100"], choices=sorted(DEFAULT_LOADS))
    ap.add_argument("--traces", nargs="+", default=["azure", "mooncake"])
    ap.add_argument("--loads", nargs="+", type=float, help="online req/s (default per GPU)")
    ap.add_argument("--window", type=float, default=180.0, help="simulated seconds per run")
    ap.add_argument("--profile-slices", type=int, default=3)
    ap.add_argument("--jitter-cv", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(
        f"window {args.window:.0f} s; per slice: served by the window's end / by the last "
        "arrival / median TTFT growth (last third over first), BEHIND where the profiler's "
        "check flags it; P = profiling, E = evaluation"
    )
    for name in args.traces:
        trace = read_trace(None, name, args.data)
        for gpu in args.gpus:
            oracle = KernelOracle(gpu)
            pred = bench_predictor(oracle, args.seed)
            sim = Simulator(oracle.step_seconds, EngineSpec(batch_queue=2), predictor=pred,
                            jitter_cv=args.jitter_cv, jitter_seed=args.seed + 1)  # fmt: skip
            loads = args.loads or (MOONCAKE_LOADS if name == "mooncake" else DEFAULT_LOADS)[gpu]
            for qps in loads:
                try:
                    prof, ev = plan_slices(len(trace), args.profile_slices, qps, args.window)
                except ValueError as e:
                    print(f"{name} {gpu} {qps:g} req/s: {e}")
                    continue
                cells = []
                for tag, sl in [("P", s) for s in prof] + [("E", ev)]:
                    run = sim.run(online_requests(trace, sl.start, qps, args.window),
                                  "online_only", window_s=args.window)  # fmt: skip
                    load = online_load(run.timings)
                    assert load is not None
                    flag = " BEHIND" if load.behind else ""
                    cells.append(f"{tag} {served_by(run.timings, args.window):.2f}/"
                                 f"{load.served:.2f}/x{load.ttft_growth:.1f}{flag}")  # fmt: skip
                print(f"{name:<8} {gpu} {qps:>4g} req/s  " + "  ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
