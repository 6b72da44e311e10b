"""The colocation bench's workload at one GPU and load, for scripts that rerun HyGen at
fixed settings on it (`budget_sweep.py`, `pipeline_costs.py`).

Same options, slice plan, disjoint backlogs, predictor and noise seeds as
`colocation.py`, so a setting the colocation bench chose can be rerun on exactly the
workload it was judged on.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from colocation import DEFAULT_LOADS, bench_predictor, offline_capacity
from sim_traces import plan_for

from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.profiling.oracle import KernelOracle
from hygen_pod.profiling.simulator import (
    EngineSpec,
    RequestSpec,
    Simulator,
    offline_requests,
    online_requests,
)
from hygen_pod.profiling.slices import Slice
from hygen_pod.profiling.traces import TraceRequest


def add_workload_args(ap: argparse.ArgumentParser, *, load: float, profile_slices: int) -> None:
    """The options that pick the workload, the GPU and HyGen's online prefill cap."""
    ap.add_argument("--data", help="shared data folder (default: $HYGEN_DATA or ../shared/data)")
    ap.add_argument("--gpu", default="h100", choices=sorted(DEFAULT_LOADS))
    ap.add_argument("--load", type=float, default=load, help="online req/s")
    ap.add_argument("--online-trace", choices=["azure", "mooncake"], default="azure")
    ap.add_argument("--offline-set", choices=["arxiv", "mooncake"], default="arxiv")
    ap.add_argument("--online-trace-file", help="online arrivals from this file instead")
    ap.add_argument("--offline-trace-file", help="offline lengths from this file instead")
    ap.add_argument("--cap", type=int, help="online prefill cap (default: vLLM's chunking)")
    ap.add_argument("--yield-to-prompts", action="store_true")
    ap.add_argument(
        "--profile-slices",
        type=int,
        default=profile_slices,
        help="as the colocation run (it places the slices)",
    )
    ap.add_argument("--window", type=float, default=180.0, help="simulated seconds per run")
    ap.add_argument("--offline", type=int, default=4000, help="offline backlog size")
    ap.add_argument("--jitter-cv", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)


@dataclass
class Workload:
    """The slices and backlogs as `colocation.py` plans them, with its GPU model."""

    args: argparse.Namespace
    online: list[TraceRequest]
    prof_slices: list[Slice]
    eval_slice: Slice
    prof_pool: list[TraceRequest]
    eval_pool: list[TraceRequest]
    oracle: KernelOracle
    predictor: LatencyPredictor

    def simulator(self, engine: EngineSpec, *, profiling: bool = False) -> Simulator:
        """The colocation bench's noisy GPU: evaluation draws (seed) or profiling (seed + 1)."""
        seed = self.args.seed + (1 if profiling else 0)
        return Simulator(self.oracle.step_seconds, engine, predictor=self.predictor,
                         jitter_cv=self.args.jitter_cv, jitter_seed=seed)  # fmt: skip

    def offline(self, *, profiling: bool = False) -> list[RequestSpec]:
        """The evaluation backlog (or the profiling one) as simulator requests."""
        pool = self.prof_pool if profiling else self.eval_pool
        return offline_requests(pool, len(pool), self.args.seed)

    def online_at(self, s: Slice) -> list[RequestSpec]:
        """The online requests of slice ``s`` at the load, over the window."""
        return online_requests(self.online, s.start, self.args.load, self.args.window)

    def capacity(self, offline: list[RequestSpec]) -> float:
        """Offline-only capacity of ``offline`` (the evaluation backlog, as `offline()`
        built it) on the device alone, tok/s."""
        return offline_capacity(self.oracle, EngineSpec(), offline, self.args.window)[0]


def load_workload(args: argparse.Namespace) -> Workload:
    """The workload the options name; FileNotFoundError or ValueError (naming the option)
    for a missing trace, a trace too short for the slices, or a bad value."""
    if args.cap is not None and args.cap < 1:
        raise ValueError("--cap must be >= 1 token")
    if args.profile_slices < 1:
        raise ValueError("--profile-slices must be >= 1")
    if not 0 <= args.jitter_cv < 1:
        raise ValueError("--jitter-cv must be in [0, 1)")
    # slices start where the colocation bench's start, whatever its loads
    plan = plan_for(args, args.load)
    oracle = KernelOracle(args.gpu)
    return Workload(
        args, plan.online, plan.prof_slices, plan.eval_slice, plan.prof_pool, plan.eval_pool,
        oracle, bench_predictor(oracle, args.seed),
    )  # fmt: skip
