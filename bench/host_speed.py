"""How fast this machine runs vLLM's own scheduler, against a published host's figure.

    python bench/host_speed.py                  # batch 128 and 256, 5 runs each

HyGen's overhead target is host CPU time against GPU time, and a GPU server's CPU is not
this VM's. This times the procedure of vLLM's own micro-benchmark for the stock
``Scheduler.update_from_output`` (``benchmarks/overheads/
benchmark_scheduler_update_from_output.py`` upstream): a synchronous stock scheduler,
``max_num_seqs`` = batch, 8,192-token steps, 10,000 KV blocks of 16, prefix caching off,
stats on; a batch of requests with 32-token prompts (request i's prompt is token i
repeated, block hashes by vLLM's ``sha256``), prefilled in one step, then decoding one
token each per step (sampled token 1, no stop); 20 warm-up steps, then the median of 100
steps' ``update_from_output`` wall time. The published figure for the same procedure
(`PUBLISHED`) is the baseline of vLLM PR 46112, "medians of n=5": 0.142 ms at 128 and
0.287 ms at 256, on the host of an RTX 5090 (CPU not stated; vLLM's main of June 2026,
before 0.32). The ratio of this machine's median to it says how much slower this CPU
runs that code; `scheduler_ab.py --host-speed` uses it to scale HyGen's measured cost.

Caveats, also in docs/benchmarks.md: one published figure, from a host whose CPU is not
named (an RTX 5090 sits in desktops, whose cores are faster than most GPU servers'); a
vLLM revision before the pinned 0.32; the model is the tiny generated one (the scheduler
never runs it). The scaled figure is an estimate, not a measurement on a GPU host.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vllm.sampling_params import SamplingParams  # noqa: E402
from vllm.utils.hashing import sha256  # noqa: E402
from vllm.v1.core.kv_cache_utils import get_request_block_hasher  # noqa: E402
from vllm.v1.core.sched.scheduler import Scheduler  # noqa: E402
from vllm.v1.outputs import ModelRunnerOutput  # noqa: E402
from vllm.v1.request import Request  # noqa: E402

from hygen_pod.dev.tiny_model import build_tiny_llama  # noqa: E402
from tests.helpers.sched_harness import BLOCK, build  # noqa: E402

# Published medians (ms) of the stock update_from_output, by batch: vLLM PR 46112's
# baseline (merge-base 55c98e370), RTX 5090 host.
PUBLISHED = {128: 0.142, 256: 0.287}
PUBLISHED_SOURCE = "vLLM PR 46112 (baseline), RTX 5090 host"
BATCH = 256  # the batch `scheduler_ab.py --host-speed` times
PROMPT = 32
STEP_TOKENS = 8192
EOS = 50256  # the procedure's eos id (the requests ignore it)


def scheduler(model: Path, batch: int) -> Scheduler:
    """A stock synchronous scheduler configured as the upstream procedure's."""
    tokens = max(batch * PROMPT, STEP_TOKENS)
    return build(Scheduler, model, async_scheduling=False, num_blocks=10_000, max_seqs=batch,
                 max_tokens=tokens, max_model_len=tokens, prefix_caching=False,
                 log_stats=True)  # fmt: skip


def _requests(batch: int, max_tokens: int) -> list[Request]:
    # the hash chain's root is the harness's (set when it is imported); the cost per
    # block is sha256's, as upstream
    hasher = get_request_block_hasher(BLOCK, sha256)
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    params.update_from_generation_config({}, EOS)
    return [Request(str(i), [i] * PROMPT, params, None, block_hasher=hasher) for i in range(batch)]


def _output(out: object, token: int) -> ModelRunnerOutput:
    ids = list(out.num_scheduled_tokens)  # type: ignore[attr-defined]
    return ModelRunnerOutput(
        req_ids=ids,
        req_id_to_index={rid: i for i, rid in enumerate(ids)},
        sampled_token_ids=[[token] for _ in ids],
    )


class Probe:
    """The procedure's scheduler, stepped in bursts: `burst` runs ``steps`` steps in a
    tight loop (as the procedure does) and keeps the ``update_from_output`` wall times of
    all but its first ``warm`` (the burst's own warm-up; the procedure's first 20 steps
    are its warm-up). A fresh batch is started before the requests' KV blocks run out."""

    def __init__(self, model: Path, batch: int, life: int = 400) -> None:
        self.model, self.batch, self.life = model, batch, life
        self.times: list[float] = []
        self._s: Scheduler | None = None
        self._left = 0

    def _start(self) -> Scheduler:
        s = scheduler(self.model, self.batch)
        reqs = _requests(self.batch, self.life + 2)  # every request outlives its batch
        for r in reqs:
            s.add_request(r)
        out = s.schedule()
        s.update_from_output(out, _output(out, 0))
        if any(r.num_computed_tokens != PROMPT for r in reqs):
            raise RuntimeError("the prompts were not prefilled in one step")
        self._left = self.life
        return s

    def burst(self, steps: int, warm: int) -> None:
        if self._s is None or self._left < steps:
            self._s = self._start()
        s, batch = self._s, self.batch
        self._left -= steps
        for k in range(steps):
            out = s.schedule()
            if len(out.num_scheduled_tokens) != batch:
                raise RuntimeError(
                    f"{len(out.num_scheduled_tokens)} of {batch} requests scheduled: a "
                    "short batch would understate the step"
                )
            mro = _output(out, 1)
            t0 = time.perf_counter()
            s.update_from_output(out, mro)
            if k >= warm:
                self.times.append(time.perf_counter() - t0)


def update_ms(model: Path, batch: int, warmup: int = 20, iters: int = 100) -> float:
    """Median wall ms of the stock ``update_from_output`` for ``batch`` decodes: the
    procedure, one batch, ``warmup`` steps, then ``iters`` timed."""
    probe = Probe(model, batch, life=warmup + iters)
    probe.burst(warmup + iters, warmup)
    return statistics.median(probe.times) * 1e3


def slowdown(model: Path, batch: int = BATCH, runs: int = 5) -> tuple[float, float]:
    """This machine's median over ``runs`` of `update_ms` at ``batch``, and its ratio to
    the published figure (how many times slower this CPU runs the stock code)."""
    ms = statistics.median(update_ms(model, batch) for _ in range(runs))
    return ms, ms / PUBLISHED[batch]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=sorted(PUBLISHED),
                    choices=sorted(PUBLISHED))  # fmt: skip
    ap.add_argument("--runs", type=int, default=5, help="runs per batch (published: 5)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny"
        build_tiny_llama(model)
        print(f"stock vLLM update_from_output, decode batch, median of {args.runs} runs "
              f"(each the median of 100 steps); published: {PUBLISHED_SOURCE}")  # fmt: skip
        print(f"{'batch':>6} {'this machine ms':>16} {'published ms':>13} {'times slower':>13}")
        for batch in args.batch:
            ms, ratio = slowdown(model, batch, args.runs)
            print(f"{batch:>6} {ms:>16.3f} {PUBLISHED[batch]:>13.3f} {ratio:>13.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
