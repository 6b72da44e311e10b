"""Compare a GPU run of time_steps.py with the kernel-table oracle and the predictor.

    python bench/gpu_calibration/compare.py --times DIR/times.jsonl [--shapes FILE]

Per source of shapes (each simulated run, the grid): the median ratio of measured GPU time
(CUDA-graph replay median; eager where no graph) to the H200 oracle, and the mean absolute
percentage error of the oracle and of the predictor against the GPU. Then step-time jitter:
the spread of repeated replays of one shape (what the simulator leaves out), the tail of
the long replays (P99 / median), and host wall time of consecutive steps in an engine-like
loop against their GPU medians. Prints what it measures; not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--times", type=Path, required=True, help="times.jsonl from time_steps.py")
    ap.add_argument("--shapes", type=Path, default=HERE / "shapes.json")
    args = ap.parse_args()
    try:
        shapes = json.loads(args.shapes.read_text())["shapes"]
        rows = [json.loads(line) for line in args.times.read_text().splitlines() if line]
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in rows:
        if r["kind"] in ("env", "model"):
            print(" ".join(f"{k}={v}" for k, v in r.items() if k != "kind"))
    by_source: dict[str, list[tuple[float, dict, list[float]]]] = defaultdict(list)
    failed = 0
    for r in (r for r in rows if r["kind"] == "shape"):
        reps = r.get("graph_ms") or r.get("eager_ms")
        if not reps:
            failed += 1
            continue
        s = shapes[r["i"]]
        by_source[s["source"]].append((statistics.median(reps), s, reps))
    print(
        f"\n{'source':<24} {'n':>3} {'GPU/oracle':>10} {'oracle MAPE':>11} "
        f"{'pred MAPE':>9} {'GPU ms p50':>10} {'rep CV':>7}"
    )
    everything = []
    for src, xs in by_source.items():
        everything += xs
        _print_row(src, xs)
    _print_row("all", everything)
    if failed:
        print(f"{failed} shapes failed on the GPU (see times.jsonl)")
    eager = [
        statistics.median(r["eager_ms"]) / statistics.median(r["graph_ms"])
        for r in rows
        if r["kind"] == "shape" and r.get("graph_ms") and r.get("eager_ms")
    ]
    if eager:
        print(
            f"\neager / CUDA graph: median {statistics.median(eager):.2f}x, "
            f"range {min(eager):.2f}-{max(eager):.2f}x"
        )
    for r in (r for r in rows if r["kind"] == "long"):
        ms = r["ms"]
        med = statistics.median(ms)
        print(
            f"long replay {r['name']:<14} n={len(ms)} median {med:.3f} ms, "
            f"P90/P50 {pct(ms, 0.9) / med:.3f}, P99/P50 {pct(ms, 0.99) / med:.3f}, "
            f"max/P50 {max(ms) / med:.3f}"
        )
    for r in (r for r in rows if r["kind"] == "sequence"):
        host = r["host_ms"]
        print(
            f"engine-loop replay: {len(host)} consecutive steps, host median "
            f"{statistics.median(host):.2f} ms, P99 {pct(host, 0.99):.2f} ms"
        )
    return 0


def _print_row(src: str, xs: list[tuple[float, dict, list[float]]]) -> None:
    if not xs:
        return
    ratio = statistics.median(m / s["oracle_h200_ms"] for m, s, _ in xs if s["oracle_h200_ms"])
    o_err = statistics.mean(abs(s["oracle_h200_ms"] - m) / m for m, s, _ in xs)
    p_err = statistics.mean(abs(s["predicted_h200_ms"] - m) / m for m, s, _ in xs)
    cv = statistics.median(
        statistics.pstdev(reps) / statistics.mean(reps) for _, _, reps in xs if len(reps) > 1
    )
    gpu = statistics.median(m for m, _, _ in xs)
    print(
        f"{src:<24} {len(xs):>3} {ratio:>9.2f}x {o_err:>10.1%} {p_err:>8.1%} "
        f"{gpu:>10.2f} {cv:>6.1%}"
    )


if __name__ == "__main__":
    sys.exit(main())
