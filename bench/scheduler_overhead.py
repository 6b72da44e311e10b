"""What HyGen's scheduler adds per step to vLLM's, on the model-free harness.

    python bench/scheduler_overhead.py               # 16/64/256 running, async (GPU default)
    python bench/scheduler_overhead.py --sync        # vLLM's synchronous Scheduler instead

A real vLLM scheduler is driven as the engine core drives it
(tests/helpers/sched_harness.py: a batch queue of 2 with async scheduling). In each step,
HyGen's ``schedule()`` + ``update_from_output()`` time is split into the stock methods
it calls (timed by a probe class that sits between HyGen and vLLM in the MRO) and the
rest, which is HyGen's own work: the phase-1 shadow, phase 2, queues, the step record,
and HyGen's overrides that the stock method calls back (the online request counts).
Splitting within the same steps keeps the VM's run-to-run noise (tens of percent here)
out of the difference. A stock scheduler running the same requests is timed beside it
for scale. Cases:

* ``online``: N online requests decoding, nothing offline (HyGen skips phase 2);
* ``backlog``: N running requests, half of them offline (admitted under a budget that
  fits them all), and 1,000 more offline requests queued behind full request slots.
* ``churn``: a busy server. Requests are short (32-128 tokens out), so several finish
  every step; each online request that finishes is replaced by a new one (N/2 online,
  a closed loop) whose 200-token prompt must be prefilled, and offline requests start
  from a queue of 3,000 (more than a run uses) as slots free. Steps mix prefills and
  decodes, and HyGen runs its general method, not the steady-state shortcut. The row
  also says how many requests ran on average and finished per step, so the churn is
  seen, not assumed.

"added, no shortcuts" is HyGen with ``fast_paths`` off (every step through the general
method, one admission call per candidate, the step record rebuilt from the output), run
in the same loop: what the shortcuts save, without the VM's drift between runs.
"HyGen, no shortcuts" is that scheduler's whole step time (beside "HyGen"): a change
that only stops HyGen reading a request moves the cache misses into vLLM's own loop,
which lowers "added" and raises "in stock" as much; the totals show whether it saved
time.

The KV cache is sized so that all N requests run for the whole measurement, and each case
checks that they did (an earlier version had room for only ~90 of "256").

The GPU step compared with is the kernel-table oracle's H100 step (Llama-3.1-8B) for
the batches HyGen scheduled in the measured steps (median over them: N decodes in the
steady cases; decodes and prompt chunks with churn, whose steps are longer than N decodes
alone), with the N-decode step beside it: "% of step" is what HyGen would add if the
scheduler did not overlap the device at all (in async mode it does overlap). "% of
stock" compares it with stock vLLM's own scheduling time on the same machine, which
carries over to a faster CPU. Times are the process's CPU time.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vllm.v1.core.sched.async_scheduler import AsyncScheduler  # noqa: E402
from vllm.v1.core.sched.scheduler import Scheduler  # noqa: E402

from hygen_pod.contract.control import OfflineControl  # noqa: E402
from hygen_pod.dev.tiny_model import build_tiny_llama  # noqa: E402
from hygen_pod.policy.predictor import LatencyPredictor  # noqa: E402
from hygen_pod.vllm_adapter.scheduler import HyGenScheduler  # noqa: E402
from tests.helpers.sched_harness import build, model_output, requests  # noqa: E402

PROMPT = 200
PREDICTOR = LatencyPredictor(["intercept", "num_decodes"], [0.001, 1e-6])
clock = time.process_time
CASES = ("online", "backlog", "churn")
# max_num_batched_tokens: vLLM 0.32's default for online serving on a GPU is 8,192 (2,048
# on small ones); at 512, 256 running requests and a few prompts do not fit one step
STEP_TOKENS = 2048
CHURN_QUEUE = 3000


class _Probe:
    """Times the stock methods HyGen calls through super()."""

    base_s = 0.0

    def schedule(self, *a: Any, **kw: Any) -> Any:
        t0 = clock()
        try:
            return super().schedule(*a, **kw)  # type: ignore[misc]
        finally:
            self.base_s += clock() - t0

    def update_from_output(self, *a: Any, **kw: Any) -> Any:
        t0 = clock()
        try:
            return super().update_from_output(*a, **kw)  # type: ignore[misc]
        finally:
            self.base_s += clock() - t0


class _ProbedAsync(_Probe, AsyncScheduler):
    pass


class _ProbedSync(_Probe, Scheduler):
    pass


class _OwnInsideBase:
    """Charges HyGen's overrides that the stock method calls back (the online request
    counts, twice a step) to HyGen, not to the stock time around them."""

    base_s: float

    def get_request_counts(self) -> tuple[int, int]:
        t0 = clock()
        try:
            return super().get_request_counts()  # type: ignore[misc]
        finally:
            if self._inside_base:  # type: ignore[attr-defined]
                self.base_s -= clock() - t0


class ProbedHyGenAsync(_OwnInsideBase, HyGenScheduler, _ProbedAsync):
    """HyGen's policy over AsyncScheduler, with the base calls timed."""


class ProbedHyGenSync(_OwnInsideBase, HyGenScheduler, _ProbedSync):
    """HyGen's policy over Scheduler, with the base calls timed."""


class ProbedPlainAsync(ProbedHyGenAsync):
    """The same without the per-step shortcuts (`HyGenScheduler.fast_paths`)."""

    fast_paths = False


class ProbedPlainSync(ProbedHyGenSync):
    fast_paths = False


class Churn:
    """The churn case's closed loop: ``online`` online requests alive at all times (each
    one that finishes is replaced after the step's update, as new arrivals are added by
    the engine core between steps), 32-128 tokens out each; counts what ran."""

    def __init__(self, online: int) -> None:
        self.online = online
        self.next = 0
        self.finished = 0
        self.running_sum = 0
        self.offline_sum = 0
        self.steps = 0
        self.offline_alive = CHURN_QUEUE

    def summary(self) -> str:
        k = max(1, self.steps)
        return (
            f"   (HyGen: {self.running_sum / k:.0f} running, {self.offline_sum / k:.0f} of them"
            f" offline, {self.finished / k:.1f} finished a step)"
        )

    def new(self, n: int) -> list:
        out = []
        for _ in range(n):
            k, self.next = self.next, self.next + 1
            out += requests(1, PROMPT, _short(k), prefix="on", start=k)
        return out

    def initial(self) -> list:
        offline = []
        for k in range(CHURN_QUEUE):
            offline += requests(1, PROMPT, _short(k + 7), prefix="off", offline=True, start=k)
        return self.new(self.online) + offline

    def after_update(self, s: Scheduler, measured: bool) -> None:
        online = offline = 0
        for rid in s.requests:
            if rid.startswith("on"):
                online += 1
            else:
                offline += 1
        gone = self.online - online
        if measured:
            self.finished += gone + self.offline_alive - offline
            self.running_sum += len(s.running)
            self.offline_sum += sum(1 for r in s.running if r.request_id.startswith("off"))
            self.steps += 1
        self.offline_alive = offline
        for r in self.new(gone):
            s.add_request(r)


def _short(k: int) -> int:
    return 32 + (k * 37) % 97


class Stepper:
    """Drives a scheduler as the engine core does, with ``queue_size`` batches in flight:
    `step` schedules step k and gives back the oldest output once the queue is full. Per
    measured step (k >= ``warmup``) it keeps the seconds of schedule() +
    update_from_output() (``totals``), the part spent in the stock methods (``bases``, 0
    for a stock scheduler) and, with ``keep_outs``, what was scheduled (``outs``); each
    measured step's batch goes to ``batches`` (`step_batch`), when given."""

    def __init__(
        self,
        s: Scheduler,
        queue_size: int,
        warmup: int,
        churn: Churn | None = None,
        batches: list | None = None,
        keep_outs: bool = False,
    ) -> None:
        self.s, self.queue_size, self.warmup = s, queue_size, warmup
        self.churn, self.batches, self.keep_outs = churn, batches, keep_outs
        self.queue: deque = deque()
        self.spent: dict[int, tuple[float, float]] = {}
        self.totals: list[float] = []
        self.bases: list[float] = []
        self.outs: list[list[tuple[str, int]]] = []

    def step(self, k: int) -> None:
        s = self.s
        b0, t0 = getattr(s, "base_s", 0.0), clock()
        out = s.schedule()
        self.spent[k] = (clock() - t0, getattr(s, "base_s", 0.0) - b0)
        self.queue.appendleft((k, out, model_output(s, out)))
        if self.batches is not None and k >= self.warmup:
            self.batches.append(step_batch(s, out))
        if len(self.queue) >= self.queue_size:
            self.update()

    def update(self) -> None:
        """Give back the oldest output in flight."""
        s = self.s
        k, o, res = self.queue.pop()
        b0, t0 = getattr(s, "base_s", 0.0), clock()
        s.update_from_output(o, res)
        total, base = self.spent.pop(k)
        if k >= self.warmup:
            self.totals.append(total + clock() - t0)
            self.bases.append(base + getattr(s, "base_s", 0.0) - b0)
            if self.keep_outs:
                self.outs.append(sorted(o.num_scheduled_tokens.items()))
        if self.churn is not None:
            self.churn.after_update(s, k >= self.warmup)


def warmup_steps(n: int, case: str) -> int:
    """Steps before measuring: all prompts prefilled and decoding steadily; with churn,
    past the first generation of requests too."""
    return n * PROMPT // STEP_TOKENS + 20 + (200 if case == "churn" else 0)


def kv_blocks(n: int, steps: int) -> int:
    """KV for every running request to the end of the run, so all N really run (and
    nobody is preempted) while we measure."""
    return n * -(-(PROMPT + warmup_steps(n, "backlog") + steps + 64) // 16) + 64


def timed_steps(
    s: Scheduler,
    reqs: list,
    queue_size: int,
    warmup: int,
    steps: int,
    churn: Churn | None = None,
    batches: list | None = None,
) -> tuple[list[float], list[float]]:
    """`Stepper`'s per-step times (totals, stock part) for ``steps`` measured steps of
    ``s`` running ``reqs``; the last outputs stay in flight, as in a running engine."""
    for r in reqs:
        s.add_request(r)
    gc.collect()
    gc.freeze()  # as vLLM's engine core does after start-up
    run = Stepper(s, queue_size, warmup, churn, batches)
    for k in range(warmup + steps):
        run.step(k)
    gc.unfreeze()
    return run.totals, run.bases


def step_batch(s: Scheduler, out: Any) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
    """What a step computes, as the oracle's MixedBatch takes it: (chunk, computed before)
    per prompt chunk and the context of each decode. Read right after schedule(), which
    has already added the step's tokens to each request's computed count."""
    prefills, decodes = [], []
    for rid, n in out.num_scheduled_tokens.items():
        r = s.requests[rid]
        before = r.num_computed_tokens - n
        if n == 1 and before >= r.num_prompt_tokens:
            decodes.append(before + 1)
        else:
            prefills.append((n, before))
    return tuple(prefills), tuple(decodes)


def load_oracle() -> Any:
    """The kernel-table oracle's H100 (Llama-3.1-8B), or None where it cannot load."""
    try:
        from hygen_pod.profiling.oracle import KernelOracle
    except ImportError:
        return None
    return KernelOracle("h100")


def gpu_step_ms(batches: list, oracle: Any) -> float | None:
    """``oracle``'s step in ms, median over ``batches`` (`step_batch`); None without an
    oracle or batches."""
    if oracle is None or not batches:
        return None
    from hygen_pod.profiling.oracle import MixedBatch

    return 1e3 * statistics.median(oracle.step_seconds(MixedBatch(p, d)) for p, d in batches)


def check_running(s: Scheduler, n: int, offline: int = 0) -> None:
    """The case measured what it says: N requests running, ``offline`` of them offline."""
    off = sum(1 for r in s.running if r.request_id in getattr(s, "offline_ids", ()))
    if len(s.running) != n or off != offline:
        raise SystemExit(f"expected {n} running ({offline} offline), got {len(s.running)} ({off})")


def check(s: Scheduler, n: int, case: str, churn: Churn | None, offline: int = 0) -> None:
    """The case measured what it says: `check_running` for the steady cases; for churn,
    requests finished during the measured steps and (for HyGen) offline work ran."""
    if churn is None:
        check_running(s, n, offline)
    elif not churn.finished or (hasattr(s, "offline_ids") and not churn.offline_sum):
        raise SystemExit(f"{case}: nothing finished or no offline work ran while measured")


def fresh(case: str, n: int) -> tuple[Churn | None, list]:
    """A case's requests, new for each scheduler (and the churn loop that feeds it)."""
    if case == "churn":
        churn = Churn(n // 2)
        return churn, churn.initial()
    return None, workload(n, case == "backlog")


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
    ap.add_argument(
        "--repeats", type=int, default=3, help="runs per case (this VM's noise is tens of %%)"
    )
    ap.add_argument(
        "--cases", nargs="+", default=list(CASES), choices=CASES, help="which cases to run"
    )
    args = ap.parse_args()
    async_on = not args.sync
    queue = 2 if async_on else 1
    stock_cls = AsyncScheduler if async_on else Scheduler
    ours_cls = ProbedHyGenAsync if async_on else ProbedHyGenSync
    plain_cls = ProbedPlainAsync if async_on else ProbedPlainSync
    oracle = load_oracle()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny"
        build_tiny_llama(model)
        mode = "async (batch queue 2)" if async_on else "sync"
        print(
            f"mode: {mode}; per run the median of {args.steps} steps, then the median of "
            f"{args.repeats} runs (and the range of 'added'); microseconds of CPU time"
        )
        print(f"{'running':>7} {'case':<8} {'stock':>7} {'HyGen':>7} {'in stock':>8} "
              f"{'added':>6} {'added range':>11} {'% of stock':>10} {'H100 step ms':>12} "
              f"{'added % of step':>15} {'N-decode step ms':>16} "
              f"{'added, no shortcuts':>19} {'HyGen, no shortcuts':>19}")  # fmt: skip
        for n in args.running:
            decode_ms = gpu_step_ms([((), (PROMPT + 100,) * n)], oracle)  # N decodes
            blocks = kv_blocks(n, args.steps)
            for case in args.cases:
                backlog = case == "backlog"
                kw = {
                    "async_scheduling": async_on,
                    "max_seqs": n,
                    "num_blocks": blocks,
                    "max_tokens": STEP_TOKENS,
                }
                runs: list[tuple[float, float, float, float, float, float]] = []
                seen = ""
                batches: list = []  # what HyGen scheduled in its measured steps
                for _ in range(args.repeats):
                    churn, reqs = fresh(case, n)
                    warm = warmup_steps(n, case)
                    stock = build(stock_cls, model, **kw)
                    t_stock, _ = timed_steps(stock, reqs, queue, warm, args.steps, churn)
                    check(stock, n, case, churn)
                    diffs, totals = [], []
                    for cls in (ours_cls, plain_cls):
                        ours = build(cls, model, **kw)
                        ours.predictor = PREDICTOR
                        ours.set_control(OfflineControl(mode="budget", budget_ms=1000.0))
                        churn, reqs = fresh(case, n)
                        mine = batches if cls is ours_cls else None
                        total, base = timed_steps(ours, reqs, queue, warm, args.steps, churn, mine)
                        check(ours, n, case, churn, offline=n - n // 2 if backlog else 0)
                        if churn is not None and cls is ours_cls:
                            seen = churn.summary()
                        diffs.append(
                            statistics.median(t - b for t, b in zip(total, base, strict=True))
                        )
                        totals.append(statistics.median(total))
                        if cls is ours_cls:
                            med = statistics.median
                            row = (med(t_stock), med(total), med(base))
                    runs.append((*row, diffs[0], diffs[1], totals[1]))
                cols = [statistics.median(r[i] for r in runs) * 1e6 for i in range(6)]
                added = cols[3]
                spread = f"{min(r[3] for r in runs) * 1e6:.0f}-{max(r[3] for r in runs) * 1e6:.0f}"
                gpu_ms = gpu_step_ms(batches, oracle)
                share = f"{added / 1e3 / gpu_ms:.2%}" if gpu_ms else "n/a"
                step = f"{gpu_ms:.2f}" if gpu_ms else "n/a"
                decode_step = f"{decode_ms:.2f}" if decode_ms else "n/a"
                print(
                    f"{n:>7} {case:<8} {cols[0]:>7.0f} {cols[1]:>7.0f} {cols[2]:>8.0f} "
                    f"{added:>6.0f} {spread:>11} {added / cols[0]:>10.1%} {step:>12} {share:>15} "
                    f"{decode_step:>16} {cols[4]:>19.0f} {cols[5]:>19.0f}{seen}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
