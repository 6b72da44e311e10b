"""Co-location benchmark at GPU scale (simulated): HyGen vs baselines, side by side.

For each GPU (Llama-3.1-8B; step time from measured vLLM kernel tables), online
load and SLO tolerance:

1. fit the latency predictor on oracle samples, as profiling would on the GPU;
2. profile on three slices of the Azure conversation trace: bisect for HyGen's largest
   budget and HyGen*'s largest offline QPS that keep the targeted online metrics
   within (1 + tolerance) x online-only on every slice, in 90% of bootstrap resamples
   of its online requests;
3. evaluate every policy on a *different* slice with the same offline backlog
   (arXiv summarization lengths) and print one table.

    python bench/colocation.py                   # full: A100+H100, 3 loads, 4 tolerances
    python bench/colocation.py --quick           # one GPU, one load, two tolerances

Writes bench/out/colocation.csv (and colocation.png when matplotlib is installed).
Not a pass/fail test: it prints what it measures.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.profiling.oracle import KernelOracle, random_batches, sample
from hygen_pod.profiling.simulator import (
    RequestSpec,
    SimResult,
    Simulator,
    offline_requests,
    online_requests,
)
from hygen_pod.profiling.slo_search import (
    METRICS,
    check_targets,
    largest_setting,
    robust_within,
    within,
)
from hygen_pod.profiling.traces import (
    arxiv_summarization,
    azure_conversation,
    mooncake_conversation,
)

DEFAULT_LOADS = {"a100": [1.0, 2.0, 3.0], "h100": [2.0, 4.0, 6.0], "h200": [2.0, 4.0, 6.0]}


# Trace request offsets: profiling slices, and the evaluation slice none of them overlaps
# (up to 6 req/s x 300 s = 1,800 requests per slice).
PROFILE_OFFSETS = (1000, 3000, 5000, 7000)
EVAL_OFFSET = 9000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="shared data folder (default: $HYGEN_DATA or ../shared/data)")
    ap.add_argument("--gpus", nargs="+", default=["a100", "h100"], choices=sorted(DEFAULT_LOADS))
    ap.add_argument("--loads", nargs="+", type=float, help="online req/s (default per GPU)")
    ap.add_argument("--tolerances", nargs="+", type=float, default=[0.05, 0.1, 0.2, 0.5])
    ap.add_argument(
        "--targets",
        nargs="+",
        choices=METRICS,
        help="SLO metrics targeted together (default: each metric on its own, as in the paper)",
    )
    ap.add_argument("--window", type=float, default=180.0, help="simulated seconds per run")
    ap.add_argument("--iters", type=int, default=6, help="bisection steps per search")
    ap.add_argument("--offline", type=int, default=4000, help="offline backlog size")
    ap.add_argument(
        "--online-trace",
        choices=["azure", "mooncake"],
        default="azure",
        help="online arrivals: Azure conversation, or Mooncake (burstier, long)",
    )
    ap.add_argument(
        "--offline-set",
        choices=["arxiv", "mooncake"],
        default="arxiv",
        help="offline lengths: arXiv summarization, or Mooncake requests with "
        "their shared-prefix block ids (prefix-heavy)",
    )
    ap.add_argument(
        "--profile-slices",
        type=int,
        default=3,
        help="profile on this many trace slices (all must pass); the evaluation "
        "slice is always a different one",
    )
    ap.add_argument(
        "--confidence",
        type=float,
        default=0.9,
        help="profiling accepts a setting when the targets hold on this share of paired "
        "bootstrap resamples of the online requests (0: a point check)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/out", help="folder for CSV and plot")
    ap.add_argument(
        "--quick", action="store_true", help="h100, one load, P99 TBT, tolerances 10%%/50%%"
    )
    args = ap.parse_args()
    if not 1 <= args.profile_slices <= len(PROFILE_OFFSETS):
        ap.error(f"--profile-slices must be 1..{len(PROFILE_OFFSETS)}")
    if args.quick:
        args.gpus, args.tolerances, args.window, args.iters = ["h100"], [0.1, 0.5], 60.0, 6
        args.loads = args.loads or [4.0]
        args.targets = args.targets or ["p99_tbt"]
    try:
        online_trace = (
            mooncake_conversation(args.data)
            if args.online_trace == "mooncake"
            else azure_conversation(args.data)
        )
        offline_pool = (
            mooncake_conversation(args.data)
            if args.offline_set == "mooncake"
            else arxiv_summarization(args.data)
        )
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    offline = offline_requests(offline_pool, args.offline, args.seed)
    mean_offline_tokens = sum(s.prompt + s.output for s in offline) / len(offline)
    target_sets = [args.targets] if args.targets else [[m] for m in METRICS]
    rows: list[dict] = []
    t_start = time.perf_counter()
    for gpu in args.gpus:
        oracle = KernelOracle(gpu)
        pred, _ = LatencyPredictor.select_and_fit(
            *sample(oracle, random_batches(random.Random(args.seed), 1000))
        )
        sim = Simulator(oracle.step_seconds, predictor=pred)
        capacity = sim.run(offline, "offline_only", window_s=args.window).offline_tps
        for qps in args.loads or DEFAULT_LOADS[gpu]:
            profs = []
            for k in range(args.profile_slices):
                start = PROFILE_OFFSETS[k]
                prof = online_requests(online_trace, start, qps, args.window) + offline
                profs.append((prof, sim.run(prof, "online_only", window_s=args.window)))
            evalw = online_requests(online_trace, EVAL_OFFSET, qps, args.window) + offline
            base_e = sim.run(evalw, "online_only", window_s=args.window)
            naive = sim.run(evalw, "naive", window_s=args.window)
            cap = sim.run(evalw, "offline_only", window_s=args.window)
            load = Load(
                sim,
                gpu,
                qps,
                profs,
                evalw,
                base_e,
                naive,
                cap,
                capacity,
                mean_offline_tokens,
            )
            for targets, tol in itertools.product(target_sets, args.tolerances):
                run_one(load, targets, tol, args, rows)
                print(
                    f"[{time.perf_counter() - t_start:6.0f}s] {gpu} qps={qps} "
                    f"tol={tol:.0%} target={'+'.join(targets)}",
                    file=sys.stderr,
                )
    print_table(rows, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "colocation.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, out / "colocation.png")
    print(f"\nwrote {out / 'colocation.csv'}; run time {time.perf_counter() - t_start:.0f} s")
    return 0


@dataclass
class Load:
    """One GPU at one online load: the simulator, both slices and the fixed baselines."""

    sim: Simulator
    gpu: str
    qps: float
    profs: list[tuple[list[RequestSpec], SimResult]]  # profiling slices, online-only runs
    evalw: list[RequestSpec]
    base_e: SimResult
    naive: SimResult
    cap: SimResult
    capacity: float
    mean_offline_tokens: float


def run_one(load: Load, targets: list[str], tol: float, args, rows: list[dict]) -> None:
    """Profile HyGen and HyGen* on the profiling slice, evaluate all on the other."""
    w = args.window
    sim, evalw, base_e = load.sim, load.evalw, load.base_e
    capacity, mean_offline_tokens = load.capacity, load.mean_offline_tokens
    check_targets(targets, tol)

    def ok(policy: str, **kw: float) -> bool:
        # Every profiling slice must stay within tolerance of its own online-only run.
        return all(
            robust_within(
                sim.run(p, policy, window_s=w, **kw).timings,
                base.timings,
                targets,
                tol,
                args.confidence,
            )
            for p, base in load.profs
        )

    b = largest_setting(lambda v: ok("hygen", budget_s=v), 1e-3, 0.4, args.iters)
    q_hi = 2 * capacity / mean_offline_tokens
    q = largest_setting(lambda v: ok("hygen_qps", qps=v), q_hi / 1000, q_hi, args.iters)
    hy = sim.run(evalw, "hygen", window_s=w, budget_s=b.value) if b.value > 0 else base_e
    hs = sim.run(evalw, "hygen_qps", window_s=w, qps=q.value) if q.value > 0 else base_e
    runs: list[tuple[str, SimResult, str]] = [
        ("online-only", base_e, ""),
        ("offline-only", load.cap, ""),
        ("naive (priority)", load.naive, ""),
        ("HyGen*", hs, f"qps={q.value:.2f}"),
        ("HyGen", hy, f"budget={b.value * 1e3:.1f}ms"),
    ]
    for name, r, setting in runs:
        if name == "offline-only":
            met = "-"
        elif within(r.online, base_e.online, targets, tol):
            met = "yes"
        else:
            bad = [m for m in targets if r.online.metric(m) > (1 + tol) * base_e.online.metric(m)]
            met = "NO: " + ",".join(bad)
        rows.append(
            {
                "gpu": load.gpu,
                "online_qps": load.qps,
                "target": "+".join(targets),
                "tolerance": tol,
                "policy": name,
                "setting": setting,
                "total_tps": r.total_tps,
                "offline_tps": r.offline_tps,
                "online_tps": r.online_tps,
                **{m: r.online.metric(m) * 1e3 for m in METRICS},
                "slo_met": met,
                "x_online_only": r.total_tps / base_e.total_tps,
                "offline_x_hygen_star": r.offline_tps / hs.offline_tps
                if hs.offline_tps
                else float("nan"),
                "pct_offline_capacity": 100 * r.offline_tps / capacity,
                "over_budget_steps": r.over_budget_steps,
            }
        )


def print_table(rows: list[dict], args) -> None:
    print(
        "SLO met: the target metric within (1+tol) x online-only on the evaluation slice; "
        f"{args.window:.0f} s simulated per run; Llama-3.1-8B; latencies in ms; online "
        f"{args.online_trace}, offline {args.offline_set}"
    )
    head = (
        f"{'gpu':<5}{'qps':>5} {'target':<10}{'tol':>4}  {'policy':<17}{'setting':<16}"
        f"{'total t/s':>10}"
        f"{'offl t/s':>10}{'TTFTm':>7}{'TTFTp99':>8}{'TBTm':>6}{'TBTp99':>7}"
        f"{'x onl':>7}{'x H*':>7}{'%cap':>6}  SLO"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['gpu']:<5}{r['online_qps']:>5.1f} {r['target']:<10}{r['tolerance']:>4.0%}  "
            f"{r['policy']:<17}"
            f"{r['setting']:<16}{r['total_tps']:>10.0f}{r['offline_tps']:>10.0f}"
            f"{r['mean_ttft']:>7.0f}{r['p99_ttft']:>8.0f}{r['mean_tbt']:>6.1f}{r['p99_tbt']:>7.1f}"
            f"{r['x_online_only']:>6.2f}x{r['offline_x_hygen_star']:>6.2f}x"
            f"{r['pct_offline_capacity']:>5.0f}%  {r['slo_met']}"
        )


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot; pip install matplotlib)", file=sys.stderr)
        return
    keys = sorted({(r["gpu"], r["online_qps"], r["target"]) for r in rows})
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
    for ax, (gpu, qps, target) in zip(axes[0], keys, strict=True):
        for pol in ("naive (priority)", "HyGen*", "HyGen"):
            pts = [
                (r["tolerance"], r["offline_tps"])
                for r in rows
                if r["gpu"] == gpu and r["online_qps"] == qps and r["policy"] == pol
            ]
            ax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], marker="o", label=pol)
        ax.set_title(f"{gpu.upper()}, {qps:g} req/s, {target}", fontsize=9)
        ax.set_xlabel("SLO tolerance (%)")
        ax.set_ylabel("offline tokens/s")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
