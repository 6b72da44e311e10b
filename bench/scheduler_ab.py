"""HyGen's scheduler against an earlier revision of itself, step by step in one process.

    python bench/scheduler_ab.py --against HEAD~1                 # churn at 256, async
    python bench/scheduler_ab.py --against v0.1 --running 64 256 --cases churn backlog

`scheduler_overhead.py` compares runs made one after another, and this VM's speed drifts
by tens of percent between them. Here the working tree's scheduler and the revision's
(its whole `hygen_pod` package, from `git archive`, imported as `hygen_pod_rev`) are
built side by side on the same workload (tests/helpers/sched_harness.py, batch queue 2)
and take turns, one step each, alternating who goes first, so both see the same
machine; every other run builds them in the other order. Per step: HyGen's own time
("added": `schedule()` + `update_from_output()` less the stock methods they call, as in
`scheduler_overhead.py`) and the whole of it ("total"). A change that only moves cache
misses from HyGen's code into vLLM's lowers "added" but not "total", so both are
printed. Against an identical revision (`--against HEAD`, clean tree) at 256 running
the ratio came out 0.98-1.00 and the total difference -78 to +124 us: read smaller
differences as noise. The run fails unless both schedulers made the same schedule in
every measured step: a speed-up must not change a decision.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import scheduler_overhead as so  # noqa: E402

from hygen_pod.contract.control import OfflineControl  # noqa: E402
from hygen_pod.policy.predictor import LatencyPredictor  # noqa: E402
from tests.helpers.sched_harness import build  # noqa: E402

CASES = ("churn", "backlog", "online")


def load_revision(rev: str, into: Path) -> tuple[ModuleType, ModuleType, ModuleType]:
    """The revision's `hygen_pod` as `hygen_pod_rev` (its scheduler, control and predictor
    modules); fails clearly for an unknown revision."""
    got = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "pod/hygen_pod"], capture_output=True
    )
    if got.returncode:
        raise SystemExit(f"git archive {rev}: {got.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(got.stdout)) as tar:
        tar.extractall(into, filter="data")
    pkg = into / "hygen_pod_rev"
    (into / "pod" / "hygen_pod").rename(pkg)
    for f in pkg.rglob("*.py"):
        f.write_text(re.sub(r"\bhygen_pod\b", "hygen_pod_rev", f.read_text()))
    sys.path.insert(0, str(into))
    return (
        importlib.import_module("hygen_pod_rev.vllm_adapter.scheduler"),
        importlib.import_module("hygen_pod_rev.contract.control"),
        importlib.import_module("hygen_pod_rev.policy.predictor"),
    )


def run_case(case: str, n: int, steps: int, async_on: bool, variants: list[tuple]) -> list[dict]:
    """Both schedulers on ``case`` with ``n`` running, one step each in turn; each
    variant's name and its `scheduler_overhead.Stepper`, all outputs back."""
    warm = so.warmup_steps(n, case)
    kw = {"async_scheduling": async_on, "max_seqs": n, "num_blocks": so.kv_blocks(n, steps),
          "max_tokens": so.STEP_TOKENS}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny"
        so.build_tiny_llama(model)
        runs = []
        for name, cls, control, predictor in variants:
            s = build(cls, model, **kw)
            s.predictor = predictor
            s.set_control(control)
            churn, reqs = so.fresh(case, n)
            for r in reqs:
                s.add_request(r)
            runs.append({"name": name, "run": so.Stepper(s, 2 if async_on else 1, warm, churn,
                                                         keep_outs=True)})  # fmt: skip
        gc.collect()
        gc.freeze()
        try:
            for k in range(warm + steps):
                for v in runs if k % 2 else runs[::-1]:
                    v["run"].step(k)
            for v in runs:  # the last steps' outputs, still in flight
                while v["run"].queue:
                    v["run"].update()
        finally:
            gc.unfreeze()
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", required=True, help="git revision to compare with")
    ap.add_argument("--running", type=int, nargs="+", default=[256])
    ap.add_argument("--cases", nargs="+", default=["churn"], choices=CASES)
    ap.add_argument("--steps", type=int, default=300, help="measured steps per run")
    ap.add_argument(
        "--repeats", type=int, default=4, help="runs per case, half of them built in each order"
    )
    ap.add_argument("--sync", action="store_true", help="vLLM's synchronous Scheduler")
    args = ap.parse_args()
    async_on = not args.sync
    with tempfile.TemporaryDirectory() as tmp:
        rev_sched, rev_control, rev_pred = load_revision(args.against, Path(tmp))
        stock = so._ProbedAsync if async_on else so._ProbedSync

        class Rev(so._OwnInsideBase, rev_sched.HyGenScheduler, stock):  # type: ignore[misc,name-defined]
            pass

        ours = so.ProbedHyGenAsync if async_on else so.ProbedHyGenSync
        budget = {"mode": "budget", "budget_ms": 1000.0}
        weights = (["intercept", "num_decodes"], [0.001, 1e-6])
        variants = [
            ("tree", ours, OfflineControl(**budget), LatencyPredictor(*weights)),
            (args.against, Rev, rev_control.OfflineControl(**budget),
             rev_pred.LatencyPredictor(*weights)),
        ]  # fmt: skip
        mode = "async (batch queue 2)" if async_on else "sync"
        print(f"mode: {mode}; working tree vs {args.against}, one step each in turn; per run the "
              f"median of {args.steps} steps, then the median of {args.repeats} runs; "
              "microseconds of CPU time")  # fmt: skip
        print(f"{'running':>7} {'case':<8} {'added, tree':>11} {'added, rev':>10} "
              f"{'tree/rev':>8} {'total, tree':>11} {'total, rev':>10} {'tree - rev':>10}"
              "  runs (added tree/rev)")  # fmt: skip
        for n in args.running:
            for case in args.cases:
                per_run = []
                for i in range(args.repeats):
                    # odd runs build the revision's scheduler first: the one built first
                    # ran ~100 us slower at 256 against an identical revision
                    order = variants if i % 2 == 0 else variants[::-1]
                    got = {
                        v["name"]: v["run"] for v in run_case(case, n, args.steps, async_on, order)
                    }
                    a, b = got["tree"], got[args.against]
                    if a.outs != b.outs:
                        raise SystemExit(f"{case} at {n}: the two schedulers scheduled differently")
                    med = statistics.median
                    per_run.append((
                        med(t - x for t, x in zip(a.totals, a.bases, strict=True)),
                        med(t - x for t, x in zip(b.totals, b.bases, strict=True)),
                        med(a.totals), med(b.totals),
                    ))  # fmt: skip
                cols = [statistics.median(r[i] for r in per_run) * 1e6 for i in range(4)]
                ratios = " ".join(f"{r[0] / r[1]:.2f}" for r in per_run)
                print(f"{n:>7} {case:<8} {cols[0]:>11.0f} {cols[1]:>10.0f} "
                      f"{cols[0] / cols[1]:>8.2f} {cols[2]:>11.0f} {cols[3]:>10.0f} "
                      f"{cols[2] - cols[3]:>+10.0f}  {ratios}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
