"""Co-location benchmark at GPU scale (simulated): HyGen vs baselines, side by side.

For each GPU (Llama-3.1-8B; step time from measured vLLM kernel tables), online
load and SLO tolerance:

1. fit the latency predictor on oracle samples, as profiling would on the GPU;
2. profile on three slices of the Azure conversation trace: bisect for HyGen's largest
   budget and HyGen*'s largest offline QPS that keep the targeted online metrics
   within (1 + tolerance) x online-only on every slice, in 90% of bootstrap resamples
   of its online requests, and on a new slice by the 90% prediction bound of the
   slices' ratios (--no-slice-spread: without that last check);
3. evaluate every policy on a *different* slice with the same offline backlog
   (arXiv summarization lengths) and print one table.

    python bench/colocation.py                   # full: A100+H100, 3 loads, 4 tolerances
    python bench/colocation.py --quick           # one GPU, one load, two tolerances

Writes bench/out/colocation.csv after every cell, with the options beside it
(colocation.options.json); --resume skips the cells already there, so a long matrix
that was stopped goes on where it stopped. colocation.png when matplotlib is installed.
Not a pass/fail test: it prints what it measures.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import itertools
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim_traces import plan_for

from hygen_pod.contract.jsonio import read_json, write_atomic
from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.profiling.online_lag import online_load
from hygen_pod.profiling.oracle import KernelOracle, random_batches, sample
from hygen_pod.profiling.simulator import (
    MEASURED_HOST_COSTS,
    EngineSpec,
    HostCosts,
    RequestSpec,
    SimResult,
    Simulator,
    offline_requests,
    online_requests,
)
from hygen_pod.profiling.slo_search import (
    METRICS,
    all_within,
    check_targets,
    largest_setting,
    within,
    within_on_slices,
)

DEFAULT_LOADS = {"a100": [1.0, 2.0, 3.0], "h100": [2.0, 4.0, 6.0], "h200": [2.0, 4.0, 6.0]}


# Offline-only capacity is the best of these engine limits (max sequences, tokens per
# step) for the offline set alone: a true ceiling, which co-location cannot beat.
CAPACITY_GRID = ((64, 2048), (128, 2048), (256, 2048), (64, 8192), (128, 8192), (256, 8192))


def bench_predictor(oracle: KernelOracle, seed: int) -> LatencyPredictor:
    """The predictor HyGen runs with in the simulated benches: fitted on 1,000 random
    batches timed by ``oracle`` (not given the oracle)."""
    pred, _ = LatencyPredictor.select_and_fit(
        *sample(oracle, random_batches(random.Random(seed), 1000))
    )
    return pred


def offline_capacity(
    oracle: KernelOracle, engine: EngineSpec, offline: list[RequestSpec], window_s: float
) -> tuple[float, tuple[int, int]]:
    """Offline-only tok/s for ``offline`` alone, the best over `CAPACITY_GRID`, with the
    (max sequences, tokens per step) that reached it."""
    return max(
        (
            Simulator(
                oracle.step_seconds,
                dataclasses.replace(engine, max_seqs=seqs, max_batched_tokens=tok),
            )
            .run(offline, "offline_only", window_s=window_s)
            .offline_tps,
            (seqs, tok),
        )
        for seqs, tok in CAPACITY_GRID
    )


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
        "--online-trace-file",
        help="online arrivals from this file instead (Azure CSV or Mooncake JSONL format)",
    )
    ap.add_argument(
        "--offline-trace-file",
        help="offline lengths from this file instead (Vidur lengths CSV, Azure CSV or "
        "Mooncake JSONL format)",
    )
    ap.add_argument(
        "--pipeline",
        choices=["sync", "async"],
        default="sync",
        help="vLLM's engine loop: sync, or async scheduling (the GPU default: the next step "
        "is scheduled while one runs; batch queue of 2)",
    )
    ap.add_argument(
        "--host-costs",
        choices=["none", "measured"],
        default="none",
        help="CPU time per step for scheduling (stock vLLM's, plus HyGen's with offline "
        "work), as measured by bench/scheduler_overhead.py on the dev VM; none: device only",
    )
    ap.add_argument(
        "--jitter-cv",
        type=float,
        default=0.05,
        help="step-time noise: each step's time times a lognormal factor of mean 1 and "
        "this coefficient of variation, in profiling and (other draws) in evaluation; 0 "
        "for none (default 0.05: docs/benchmarks.md says where it comes from)",
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
        help="profile on this many trace slices spread over the trace's first three "
        "quarters (all must pass); the evaluation slice starts the last quarter, the same "
        "whatever this number",
    )
    ap.add_argument(
        "--confidence",
        type=float,
        default=0.9,
        help="profiling accepts a setting when the targets hold on this share of paired "
        "bootstrap resamples of the online requests (0: a point check)",
    )
    ap.add_argument(
        "--slice-spread",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also accept a setting only if a new slice is predicted to pass: the "
        "one-sided --confidence prediction bound of the profiling slices' ratios "
        "(observed / online-only) within 1 + tolerance",
    )
    ap.add_argument(
        "--online-prefill-caps",
        nargs="*",
        type=int,
        default=[1024, 768, 512, 384, 256],
        metavar="TOKENS",
        help="online prefill caps searched jointly with HyGen's budget and HyGen*'s QPS "
        "(vLLM's chunking is always a candidate and has its own HyGen row); give the "
        "option with no value for vLLM's chunking only (default: %(default)s; before "
        "2026-12-02: [512, 256])",
    )
    ap.add_argument(
        "--reference",
        choices=["vllm-chunking", "chosen-chunking"],
        default="vllm-chunking",
        help="what the tolerance is measured against, in profiling and in the SLO column: "
        "online only under vLLM's chunking, or under each setting's own cap (a cap whose "
        "online-only run misses the tolerance against vLLM's chunking is refused)",
    )
    ap.add_argument(
        "--yield-to-prompts",
        choices=["auto", "on", "off"],
        default="auto",
        help="HyGen's budget with no offline work in steps that serve or keep waiting an "
        "online prompt: auto = for TTFT targets, searched beside the plain budget and kept "
        "when it did more offline work in profiling, as the profiler does; on / off = only "
        "with / without (off: as before 2026-12-01)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/out", help="folder for CSV and plot")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the cells already in OUT/colocation.csv (written with the same options) "
        "and run only the others",
    )
    ap.add_argument(
        "--quick", action="store_true", help="h100, one load, P99 TBT, tolerances 10%%/50%%"
    )
    args = ap.parse_args()
    if args.profile_slices < 1:
        ap.error("--profile-slices must be >= 1")
    if not 0 <= args.jitter_cv < 1:
        ap.error("--jitter-cv must be in [0, 1)")
    if any(c < 1 for c in args.online_prefill_caps):
        ap.error("--online-prefill-caps: each cap must be >= 1 token")
    if args.quick:
        args.gpus, args.tolerances, args.window, args.iters = ["h100"], [0.1, 0.5], 60.0, 6
        args.loads = args.loads or [4.0]
        args.targets = args.targets or ["p99_tbt"]
    max_load = max(args.loads or [q for g in args.gpus for q in DEFAULT_LOADS[g]])
    try:
        plan = plan_for(args, max_load)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # profiling and evaluation never share an online request or an offline one
    online_trace, prof_slices, eval_slice = plan.online, plan.prof_slices, plan.eval_slice
    prof_offline = offline_requests(plan.prof_pool, len(plan.prof_pool), args.seed)
    offline = offline_requests(plan.eval_pool, len(plan.eval_pool), args.seed)
    mean_offline_tokens = sum(s.prompt + s.output for s in offline) / len(offline)
    print(plan.describe(), file=sys.stderr)
    target_sets = [args.targets] if args.targets else [[m] for m in METRICS]
    out = Path(args.out)
    try:
        rows = _saved_rows(out, args) if args.resume else []
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    done = {_cell(r["gpu"], r["online_qps"], r["target"], r["tolerance"]) for r in rows}
    if rows:
        print(f"resuming: {len(done)} cells already in {out / CSV_NAME}", file=sys.stderr)
    else:
        _start_csv(out, args)
    t_start = time.perf_counter()
    for gpu in args.gpus:
        todo = {
            qps: cells
            for qps in args.loads or DEFAULT_LOADS[gpu]
            if (cells := [
                (targets, tol)
                for targets, tol in itertools.product(target_sets, args.tolerances)
                if _cell(gpu, qps, "+".join(targets), tol) not in done
            ])
        }  # fmt: skip
        if not todo:
            continue
        oracle = KernelOracle(gpu)
        pred = bench_predictor(oracle, args.seed)
        engine = EngineSpec(
            batch_queue=2 if args.pipeline == "async" else 1,
            host=MEASURED_HOST_COSTS if args.host_costs == "measured" else HostCosts(),
        )
        # With --jitter-cv both profiling and evaluation run on a noisy GPU, as a profiler
        # on a real one would: the same noise level, different draws (the evaluation's
        # are shared by all policies, so they are compared on the same noise).
        sim = Simulator(oracle.step_seconds, engine, predictor=pred, jitter_cv=args.jitter_cv,
                        jitter_seed=args.seed + 1)  # fmt: skip
        esim = Simulator(oracle.step_seconds, engine, predictor=pred, jitter_cv=args.jitter_cv,
                         jitter_seed=args.seed)  # fmt: skip
        capacity, cap_limits = offline_capacity(oracle, engine, offline, args.window)
        print(f"{gpu}: offline-only capacity {capacity:.0f} tok/s at max_num_seqs "
              f"{cap_limits[0]}, {cap_limits[1]} tokens per step", file=sys.stderr)  # fmt: skip
        for qps, cells in todo.items():
            profs = []
            for sl in prof_slices:
                prof = online_requests(online_trace, sl.start, qps, args.window) + prof_offline
                profs.append((prof, sim.run(prof, "online_only", window_s=args.window)))
            # the profiler's overload check (profiling/online_lag.py): a cell whose profiling
            # slices fell behind says little about any setting, so say so beside its rows
            for k, (_, alone) in enumerate(profs):
                lag = online_load(alone.timings)
                if lag is not None and lag.behind:
                    print(f"warning: {gpu} {qps:g} req/s: online work alone fell behind the "
                          f"engine on profiling slice {k} ({lag.describe()})",
                          file=sys.stderr)  # fmt: skip
            evalw = online_requests(online_trace, eval_slice.start, qps, args.window) + offline
            base_e = esim.run(evalw, "online_only", window_s=args.window)
            naive = esim.run(evalw, "naive", window_s=args.window)
            cap = esim.run(evalw, "offline_only", window_s=args.window)
            load = Load(
                sim,
                esim,
                gpu,
                qps,
                profs,
                evalw,
                base_e,
                naive,
                cap,
                capacity,
                mean_offline_tokens,
                args.window,
            )
            for targets, tol in cells:
                run_one(load, targets, tol, args, rows)
                _save_rows(out, rows)  # a stopped run keeps every finished cell
                print(
                    f"[{time.perf_counter() - t_start:6.0f}s] {gpu} qps={qps} "
                    f"tol={tol:.0%} target={'+'.join(targets)}",
                    file=sys.stderr,
                )
    if not rows:
        print("error: no cell to run and none saved", file=sys.stderr)
        return 2
    print_table(rows, args)
    plot(rows, out / "colocation.png")
    print(f"\nwrote {out / CSV_NAME}; run time {time.perf_counter() - t_start:.0f} s")
    return 0


CSV_NAME = "colocation.csv"
OPTIONS_NAME = "colocation.options.json"
# what a saved row holds besides numbers (everything else is read back as a float)
TEXT_FIELDS = ("gpu", "target", "policy", "setting", "slo_met")
# options that do not change a cell's numbers, so a resumed run may differ in them
FREE_OPTIONS = ("gpus", "loads", "tolerances", "out", "resume", "quick")


def _cell(gpu: str, qps: float, target: str, tol: float) -> tuple[str, float, str, float]:
    return gpu, float(qps), target, float(tol)


def _options(args: argparse.Namespace) -> dict:
    return {k: v for k, v in sorted(vars(args).items()) if k not in FREE_OPTIONS}


def _start_csv(out: Path, args: argparse.Namespace) -> None:
    """Before a run's first cell: drop an older CSV, then record this run's options, so a
    CSV on disk is never paired with options it was not written with."""
    (out / CSV_NAME).unlink(missing_ok=True)
    write_atomic(out / OPTIONS_NAME, json.dumps(_options(args), indent=1) + "\n")


def _save_rows(out: Path, rows: list[dict]) -> None:
    """Write every row so far, then swap it in: a run stopped mid-write keeps the last."""
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_atomic(out / CSV_NAME, text.getvalue())


def _saved_rows(out: Path, args: argparse.Namespace) -> list[dict]:
    """The rows of an earlier run with the same options; ValueError when they differ."""
    path, opts_path = out / CSV_NAME, out / OPTIONS_NAME
    if not path.exists():
        return []
    if not opts_path.exists():
        raise ValueError(f"--resume: {opts_path} is missing, so {path} cannot be matched")
    saved = read_json(opts_path)
    now = json.loads(json.dumps(_options(args)))  # tuples as lists, as saved
    diff = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if diff:
        differ = ", ".join(
            f"--{k.replace('_', '-')} {saved.get(k)!r} there, {now.get(k)!r} now" for k in diff
        )
        raise ValueError(
            f"--resume: {path} was written with other options ({differ}); "
            "use another --out or drop --resume"
        )
    with path.open(newline="") as f:
        return [
            {k: v if k in TEXT_FIELDS else float(v) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


@dataclass
class Load:
    """One GPU at one online load: the simulator, both slices and the fixed baselines."""

    sim: Simulator  # profiling (its own jitter draws)
    esim: Simulator  # evaluation: with --jitter-cv
    gpu: str
    qps: float
    profs: list[tuple[list[RequestSpec], SimResult]]  # profiling slices, online-only runs
    evalw: list[RequestSpec]
    base_e: SimResult
    naive: SimResult
    cap: SimResult
    capacity: float
    mean_offline_tokens: float
    window_s: float
    # online only under a cap: per profiling slice, and on the evaluation slice
    capped_runs: dict[int, list[SimResult]] = field(default_factory=dict)
    capped_e: dict[int, SimResult] = field(default_factory=dict)

    def capped(self, cap: int) -> list[SimResult]:
        """Online only under ``cap`` on each profiling slice (memoized)."""
        if cap not in self.capped_runs:
            self.capped_runs[cap] = [
                self.sim.run(p, "online_only", window_s=self.window_s, online_prefill_cap=cap)
                for p, _ in self.profs
            ]
        return self.capped_runs[cap]

    def capped_eval(self, cap: int) -> SimResult:
        """Online only under ``cap`` on the evaluation slice (memoized)."""
        if cap not in self.capped_e:
            self.capped_e[cap] = self.esim.run(
                self.evalw, "online_only", window_s=self.window_s, online_prefill_cap=cap
            )
        return self.capped_e[cap]


def run_one(load: Load, targets: list[str], tol: float, args, rows: list[dict]) -> None:
    """Profile HyGen and HyGen* on the profiling slice, evaluate all on the other."""
    w = args.window
    sim, esim, evalw, base_e = load.sim, load.esim, load.evalw, load.base_e
    capacity, mean_offline_tokens = load.capacity, load.mean_offline_tokens
    check_targets(targets, tol)

    # (policy, cap, yield_to_prompts, value) -> profiling offline tok/s, summed over slices
    offline_done: dict[tuple[str, int | None, bool, float], float] = {}
    chosen = args.reference == "chosen-chunking"
    # HyGen's budget yielding the steps that serve a prompt: with --yield-to-prompts auto,
    # searched beside the plain budget for TTFT targets (the profiler's rule)
    yield_options = {"on": [True], "off": [False]}.get(args.yield_to_prompts) or (
        [False, True] if any(m.endswith("ttft") for m in targets) else [False]
    )
    cap_fine: dict[int, bool] = {}

    def holds(observed: list[list], baseline: list[list]) -> bool:
        """Every profiling slice within tolerance of its reference and, with
        --slice-spread, a new slice predicted to be (slo_search.within_on_slices)."""
        if args.slice_spread:
            return within_on_slices(observed, baseline, targets, tol, args.confidence)
        return all_within(observed, baseline, targets, tol, args.confidence)

    def refs(cap: int | None) -> list[SimResult] | None:
        """Each profiling slice's reference for a setting with this cap (the profiler's
        rule, profiling/profiler.py); None: the cap alone is outside the tolerance."""
        if not chosen or cap is None:
            return [base for _, base in load.profs]
        alone = load.capped(cap)
        # each slice on its own: a cap moves online-only latency one way (shorter
        # chunks), and its ratios to vLLM chunking's two-mode P99 TBT are no normal sample
        if cap not in cap_fine:
            cap_fine[cap] = all_within([a.timings for a in alone],
                                       [b.timings for _, b in load.profs], targets, tol,
                                       args.confidence)  # fmt: skip
        return alone if cap_fine[cap] else None

    def ok(policy: str, cap: int | None, y: bool, key: str, value: float) -> bool:
        # Every profiling slice must stay within tolerance of its own reference run.
        ref = refs(cap)
        if ref is None:
            return False
        opts = {"yield_to_prompts": y} if policy == "hygen" else {}
        results = [sim.run(p, policy, window_s=w, online_prefill_cap=cap, **{key: value}, **opts)
                   for p, _ in load.profs]  # fmt: skip
        offline_done[(policy, cap, y, value)] = sum(r.offline_tps for r in results)
        return holds([r.timings for r in results], [b.timings for b in ref])

    def joint(
        policy: str, key: str, lo: float, hi: float, y: bool = False
    ) -> tuple[int | None, float, float]:
        """(best cap, its largest passing value, the largest with vLLM's chunking); the
        best cap is the one whose value did the most offline work."""
        found: dict[int | None, float] = {}
        for cap in [None, *args.online_prefill_caps]:
            r = largest_setting(lambda v, c=cap: ok(policy, c, y, key, v), lo, hi, args.iters)
            found[cap] = r.value
        best = max(found, key=lambda c: offline_done.get((policy, c, y, found[c]), 0.0))
        return best, found[best], found[None]

    def label(cap: int | None) -> str:
        return "" if cap is None else f" chunk={cap}"

    # HyGen: each yield option searched; the one whose setting did more offline work
    # (ties: not yielding), as the profiler keeps it
    searched = {y: joint("hygen", "budget_s", 1e-3, 0.4, y) for y in yield_options}
    yields = max(
        yield_options,
        key=lambda y: (offline_done.get(("hygen", searched[y][0], y, searched[y][1]), 0.0), not y),
    )
    b_cap, b, b_stock = searched[yields]
    hy_opts = {"yield_to_prompts": yields}
    q_hi = 2 * capacity / mean_offline_tokens
    q_cap, q, _ = joint("hygen_qps", "qps", q_hi / 1000, q_hi)

    def hygen(budget: float, cap: int | None) -> SimResult:
        if budget <= 0:
            return base_e
        return esim.run(evalw, "hygen", window_s=w, budget_s=budget, online_prefill_cap=cap,
                        **hy_opts)  # fmt: skip

    hy, hy_stock = hygen(b, b_cap), hygen(b_stock, None)
    yielding = " yield" if yields else ""
    hs = (
        esim.run(evalw, "hygen_qps", window_s=w, qps=q, online_prefill_cap=q_cap)
        if q > 0
        else base_e
    )
    runs: list[tuple[str, SimResult, str]] = [
        ("online-only", base_e, ""),
    ]
    if b_cap is not None:  # what the chosen chunking alone does to online users
        runs.append(("online-only+chunk", load.capped_eval(b_cap), f"chunk={b_cap}"))
    runs += [
        ("offline-only", load.cap, ""),
        ("naive (priority)", load.naive, ""),
        ("HyGen*", hs, f"qps={q:.2f}{label(q_cap)}"),
        ("HyGen vLLM chunks", hy_stock, f"budget={b_stock * 1e3:.1f}ms{yielding}"),
        ("HyGen", hy, f"budget={b * 1e3:.1f}ms{label(b_cap)}{yielding}"),
    ]
    # what the operator's offlineMode auto runs: the mode that did more offline work in
    # profiling (ties: the budget), as `ProfileDocument.best_mode` decides
    qps_better = offline_done.get(("hygen_qps", q_cap, False, q), 0.0) > offline_done.get(
        ("hygen", b_cap, yields, b), 0.0
    )
    runs.append(("HyGen auto", hs if qps_better else hy, "= HyGen*" if qps_better else "= HyGen"))
    # the evaluation slice's reference for each row: vLLM's chunking, or (with
    # --reference chosen-chunking) online-only under the row's own cap
    row_cap = {"HyGen*": q_cap, "HyGen": b_cap, "HyGen auto": q_cap if qps_better else b_cap}

    def reference_e(name: str) -> SimResult:
        cap = row_cap.get(name) if chosen else None
        return base_e if cap is None else load.capped_eval(cap)

    # The step-bounded ceiling: offline work alone with every step held to the tightest
    # TBT limit of the targets (HyGen's budget at that limit, no online load). No policy
    # whose online-carrying steps stay within the limit can do much more offline work, so
    # "% of limit-bound" tells how much of what the SLO leaves HyGen takes; TTFT targets
    # bound no step, and get none.
    tbt_limits = [
        (1 + tol) * reference_e("HyGen").online.metric(m) for m in targets if m.endswith("tbt")
    ]
    bound_tps = float("nan")
    if tbt_limits:
        alone = [s for s in evalw if s.offline]
        bound_tps = sim.run(alone, "hygen", window_s=w, budget_s=min(tbt_limits)).offline_tps

    for name, r, setting in runs:
        ref_e = reference_e(name)
        if name in ("offline-only", "online-only+chunk"):
            met = "-"
        elif within(r.online, ref_e.online, targets, tol):
            met = "yes"
        else:
            bad = [m for m in targets if r.online.metric(m) > (1 + tol) * ref_e.online.metric(m)]
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
                # only where HyGen* does real work (>= 1% of capacity): else "n/a"
                "offline_x_hygen_star": r.offline_tps / hs.offline_tps
                if hs.offline_tps >= 0.01 * capacity
                else float("nan"),
                "pct_offline_capacity": 100 * r.offline_tps / capacity,
                "pct_step_bound": 100 * r.offline_tps / bound_tps,  # NaN for TTFT targets
                "over_budget_steps": r.over_budget_steps,
            }
        )


def print_table(rows: list[dict], args) -> None:
    print(
        "SLO met: the target metric within (1+tol) x online-only on the evaluation slice "
        f"(reference: {args.reference}); "
        f"{args.window:.0f} s simulated per run; Llama-3.1-8B; latencies in ms; online "
        f"{args.online_trace_file or args.online_trace}, offline "
        f"{args.offline_trace_file or args.offline_set}; {args.pipeline} pipeline, host "
        f"costs {args.host_costs}, step jitter CV {args.jitter_cv:g}"
    )
    head = (
        f"{'gpu':<5}{'qps':>5} {'target':<10}{'tol':>4}  {'policy':<18}{'setting':<30}"
        f"{'total t/s':>10}"
        f"{'offl t/s':>10}{'TTFTm':>7}{'TTFTp99':>8}{'TBTm':>6}{'TBTp99':>7}"
        f"{'x onl':>7}{'x H*':>7}{'%cap':>6}{'%bound':>7}  SLO"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['gpu']:<5}{r['online_qps']:>5.1f} {r['target']:<10}{r['tolerance']:>4.0%}  "
            f"{r['policy']:<18}"
            f"{r['setting']:<30}{r['total_tps']:>10.0f}{r['offline_tps']:>10.0f}"
            f"{r['mean_ttft']:>7.0f}{r['p99_ttft']:>8.0f}{r['mean_tbt']:>6.1f}{r['p99_tbt']:>7.1f}"
            f"{r['x_online_only']:>6.2f}x{_x(r['offline_x_hygen_star']):>7}"
            f"{r['pct_offline_capacity']:>5.0f}%{_pct(r['pct_step_bound']):>7}  {r['slo_met']}"
        )


def _pct(pct: float) -> str:
    return "n/a" if pct != pct else f"{pct:.0f}%"  # NaN: a TTFT target bounds no step


def _x(ratio: float) -> str:
    return "n/a" if ratio != ratio else f"{ratio:.2f}x"  # NaN: HyGen* did no real work


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
