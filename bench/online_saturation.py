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
* ``TTFT drift``: mean TTFT of the last third of arrivals over the first third.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from colocation import DEFAULT_LOADS, _trace

from hygen_pod.policy.latency import RequestTiming
from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.profiling.oracle import KernelOracle, random_batches, sample
from hygen_pod.profiling.simulator import EngineSpec, Simulator, online_requests
from hygen_pod.profiling.slices import plan_slices

MOONCAKE_LOADS = {"a100": [0.5, 1.0, 2.0], "h100": [1.0, 2.0, 3.0], "h200": [1.0, 2.0, 3.0]}


def shares(timings: list[RequestTiming], window_s: float) -> tuple[float, float, float]:
    """(served by the window's end, served by the last arrival, TTFT drift)."""
    ts = sorted(timings, key=lambda t: t.arrival)
    third = max(1, len(ts) // 3)
    first = statistics.mean(t.ttft or 0.0 for t in ts[:third])
    last = statistics.mean(t.ttft or 0.0 for t in ts[-third:])
    owed = sum(len(t.token_times) for t in ts)
    end = ts[-1].arrival
    by_window = sum(sum(1 for x in t.token_times if x <= window_s) for t in ts)
    by_last = sum(sum(1 for x in t.token_times if x <= end) for t in ts)
    return by_window / owed, by_last / owed, last / first if first > 0 else float("inf")


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
        "arrival / TTFT drift (last third over first); P = profiling, E = evaluation"
    )
    for name in args.traces:
        trace = _trace(None, name, args.data)
        for gpu in args.gpus:
            oracle = KernelOracle(gpu)
            pred, _ = LatencyPredictor.select_and_fit(
                *sample(oracle, random_batches(random.Random(args.seed), 1000))
            )
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
                    a, b, drift = shares(run.timings, args.window)
                    cells.append(f"{tag} {a:.2f}/{b:.2f}/x{drift:.1f}")
                print(f"{name:<8} {gpu} {qps:>4g} req/s  " + "  ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
