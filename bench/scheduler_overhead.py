"""What HyGen's scheduler costs per step, against stock vLLM, on the model-free harness.

    python bench/scheduler_overhead.py               # 16/64/256 running, async (GPU default)
    python bench/scheduler_overhead.py --sync        # vLLM's synchronous Scheduler instead

Times schedule() + update_from_output() per step on a real vLLM scheduler driven as the
engine core drives it (tests/helpers/sched_harness.py: batch queue of 2 with async
scheduling), for the same running set under stock vLLM and under HyGen:

* ``online``: N online requests decoding, nothing offline (HyGen's phase 2 is skipped);
* ``backlog``: N running requests, half of them offline (admitted under a budget that
  fits them all), and 1,000 more offline requests queued behind full request slots;
  stock vLLM runs the same N requests and queue without knowing their class.

Both run side by side in this process. The GPU step they are compared with is the
kernel-table oracle's H100 step for N decodes (Llama-3.1-8B), so "% of step" is what the
scheduler would add if it did not overlap the GPU at all.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vllm.v1.core.sched.async_scheduler import AsyncScheduler  # noqa: E402
from vllm.v1.core.sched.scheduler import Scheduler  # noqa: E402
from vllm.v1.outputs import ModelRunnerOutput  # noqa: E402

from hygen_pod.contract.control import OfflineControl  # noqa: E402
from hygen_pod.dev.tiny_model import build_tiny_llama  # noqa: E402
from hygen_pod.policy.predictor import LatencyPredictor  # noqa: E402
from hygen_pod.vllm_adapter.scheduler import HyGenScheduler  # noqa: E402
from tests.helpers.sched_harness import build, requests, token  # noqa: E402

PROMPT = 200
PREDICTOR = LatencyPredictor(["intercept", "num_decodes"], [0.001, 1e-6])


def timed_steps(s: Scheduler, reqs, queue_size: int, warmup: int, steps: int) -> list[float]:
    """Seconds of schedule() + update_from_output() for ``steps`` steps after ``warmup``."""
    for r in reqs:
        s.add_request(r)
    queue: deque = deque()
    spent: dict[int, float] = {}
    out_times: list[float] = []
    n = 0
    while n < warmup + steps:
        t0 = time.perf_counter()
        out = s.schedule()
        t_sched = time.perf_counter() - t0
        ids = list(out.num_scheduled_tokens)
        sampled = [
            [] if s.requests[i].is_prefill_chunk else [token(i, s.requests[i].num_computed_tokens)]
            for i in ids
        ]
        result = ModelRunnerOutput(
            req_ids=ids,
            req_id_to_index={r: k for k, r in enumerate(ids)},
            sampled_token_ids=sampled,
        )
        queue.appendleft((n, out, result))
        spent[n] = t_sched
        n += 1
        if len(queue) < queue_size:
            continue
        k, o, res = queue.pop()
        t0 = time.perf_counter()
        s.update_from_output(o, res)
        total = spent.pop(k) + time.perf_counter() - t0
        if k >= warmup:
            out_times.append(total)
    return out_times


def workload(n: int, backlog: bool) -> list:
    out = 4096 - PROMPT - 1  # long enough that nobody finishes while we measure
    if not backlog:
        return requests(n, PROMPT, out, prefix="on")
    return (
        requests(n // 2, PROMPT, out, prefix="on")
        + requests(n - n // 2, PROMPT, out, prefix="off", offline=True)
        + requests(1000, PROMPT, out, prefix="q", offline=True)
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sync", action="store_true", help="vLLM's synchronous Scheduler")
    ap.add_argument("--running", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--steps", type=int, default=300, help="measured steps per run")
    args = ap.parse_args()
    async_on = not args.sync
    queue = 2 if async_on else 1
    stock_cls = AsyncScheduler if async_on else Scheduler
    try:
        from hygen_pod.profiling.oracle import KernelOracle, MixedBatch

        oracle = KernelOracle("h100")
    except ImportError:
        oracle = None
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny"
        build_tiny_llama(model)
        print(f"mode: {'async (batch queue 2)' if async_on else 'sync'}; {args.steps} steps")
        print(f"{'running':>7} {'case':<8} {'stock us':>9} {'HyGen us':>9} {'added us':>9} "
              f"{'H100 step ms':>12} {'added % of step':>15}")  # fmt: skip
        for n in args.running:
            warmup = n * PROMPT // 512 + 20  # all prompts prefilled, decoding steadily
            gpu_ms = None
            if oracle is not None:
                gpu_ms = oracle.step_seconds(MixedBatch((), (PROMPT + 100,) * n)) * 1e3
            for case in ("online", "backlog"):
                backlog = case == "backlog"
                stock = build(stock_cls, model, async_scheduling=async_on, max_seqs=n)
                ours = build(HyGenScheduler, model, async_scheduling=async_on, max_seqs=n)
                ours.predictor = PREDICTOR
                ours.set_control(OfflineControl(mode="budget", budget_ms=1000.0))
                t_stock = timed_steps(stock, workload(n, backlog), queue, warmup, args.steps)
                t_ours = timed_steps(ours, workload(n, backlog), queue, warmup, args.steps)
                a, b = statistics.median(t_stock) * 1e6, statistics.median(t_ours) * 1e6
                share = f"{(b - a) / 1e3 / gpu_ms:.1%}" if gpu_ms else "n/a"
                step = f"{gpu_ms:.2f}" if gpu_ms else "n/a"
                print(f"{n:>7} {case:<8} {a:>9.0f} {b:>9.0f} {b - a:>9.0f} {step:>12} {share:>15}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
