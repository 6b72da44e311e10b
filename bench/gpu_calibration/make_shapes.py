"""Step shapes for the GPU calibration: what the simulator actually schedules.

Runs the simulated H100 engine (Azure conversation online, arXiv offline backlog) under
online-only, HyGen and offline-only, records every step's batch, and keeps a stratified
sample (by oracle time) plus a small grid and one run of consecutive steps. Each shape
carries the kernel-table oracle's time on H100 and H200 and the predictor's (fitted on
H200 oracle samples, as profiling would fit it), so ``compare.py`` needs only the GPU's
measurements.

    python bench/gpu_calibration/make_shapes.py        # writes bench/gpu_calibration/shapes.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.profiling.oracle import KernelOracle, MixedBatch, random_batches, sample
from hygen_pod.profiling.simulator import Simulator, offline_requests, online_requests
from hygen_pod.profiling.traces import arxiv_summarization, azure_conversation

HERE = Path(__file__).parent
START = 6000  # the benchmark's evaluation slice of the Azure trace
RUNS = (  # (name, policy, req/s, budget ms)
    ("online_only 2 req/s", "online_only", 2.0, None),
    ("online_only 4 req/s", "online_only", 4.0, None),
    ("hygen 2 req/s, 13.8 ms", "hygen", 2.0, 13.8),
    ("hygen 4 req/s, 20 ms", "hygen", 4.0, 20.0),
    ("offline_only", "offline_only", 2.0, None),
)
GRID = [  # (prefills as (chunk, computed), decode count, decode context)
    ((), 1, 1024),
    ((), 16, 1024),
    ((), 64, 1024),
    ((), 128, 2048),
    ((), 256, 1024),
    (((512, 0),), 0, 0),
    (((2048, 0),), 0, 0),
    (((2048, 4096),), 0, 0),
    (((8192, 0),), 0, 0),
    (((512, 0),), 32, 1024),
    (((2048, 0),), 64, 1024),
]


def _doc(b: MixedBatch, source: str, h100: KernelOracle, h200: KernelOracle, pred) -> dict:
    return {
        "source": source,
        "prefills": [list(p) for p in b.prefills],
        "decodes": list(b.decodes),
        "oracle_h100_ms": round(h100.step_seconds(b) * 1e3, 4),
        "oracle_h200_ms": round(h200.step_seconds(b) * 1e3, 4),
        "predicted_h200_ms": round(pred.predict(b.shape()) * 1e3, 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="shared data folder (default: $HYGEN_DATA or ../shared/data)")
    ap.add_argument("--per-run", type=int, default=28, help="sampled steps per simulated run")
    ap.add_argument("--sequence", type=int, default=400, help="consecutive steps to replay")
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=HERE / "shapes.json")
    args = ap.parse_args()
    try:
        azure, arxiv = azure_conversation(args.data), arxiv_summarization(args.data)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    h100, h200 = KernelOracle("h100"), KernelOracle("h200")
    pred_h100, _ = LatencyPredictor.select_and_fit(
        *sample(h100, random_batches(random.Random(0), 1000))
    )
    pred_h200, _ = LatencyPredictor.select_and_fit(
        *sample(h200, random_batches(random.Random(0), 1000))
    )
    backlog = offline_requests(arxiv, 2000, 0)
    rng = random.Random(1)
    shapes: list[dict] = []
    sequence: list[dict] = []
    for name, policy, qps, budget_ms in RUNS:
        seen: list[MixedBatch] = []

        def record(b: MixedBatch, seen: list[MixedBatch] = seen) -> float:
            seen.append(b)
            return h100.step_seconds(b)

        sim = Simulator(record, predictor=pred_h100)
        work = online_requests(azure, START, qps, args.window) + backlog
        budget = budget_ms / 1e3 if budget_ms else None
        sim.run(work, policy, window_s=args.window, budget_s=budget)
        ranked = sorted(seen, key=h100.step_seconds)
        picks = {round(q * (len(ranked) - 1) / (args.per_run - 1)) for q in range(args.per_run)}
        picks |= {rng.randrange(len(ranked)) for _ in range(4)}
        shapes += [_doc(ranked[i], name, h100, h200, pred_h200) for i in sorted(picks)]
        print(f"{name}: {len(seen)} steps, {len(picks)} sampled", file=sys.stderr)
        if policy == "hygen" and qps == 4.0:
            mid = len(seen) // 2
            sequence = [
                _doc(b, name, h100, h200, pred_h200) for b in seen[mid : mid + args.sequence]
            ]
    for prefills, n_dec, ctx in GRID:
        b = MixedBatch(tuple(prefills), tuple([ctx] * n_dec))
        shapes.append(_doc(b, "grid", h100, h200, pred_h200))
    args.out.write_text(json.dumps({"shapes": shapes, "sequence": sequence}))
    print(f"wrote {len(shapes)} shapes and {len(sequence)} consecutive steps to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
