"""The SLO-aware profiler: fit the predictor, then find the largest budget and QPS.

It talks to a `Runner` - the real engine (`vllm_adapter.engine.EngineRunner`) or
the simulator over a GPU oracle (`SimRunner`) - so the same search serves a CPU
box, a GPU pod and the benchmark:

1. capture step timings and fit the latency predictor (held-out MAPE recorded);
2. replay the online workload alone (the baseline);
3. bisect the offline latency budget (HyGen), then the offline QPS (HyGen*), for
   the largest value whose targeted online metrics stay within
   (1 + tolerance) x the baseline; with several online prefill caps to try
   (`policy/online_chunk.py`), bisect under each and keep the cap whose best setting
   does the most offline work (a joint search: cap x budget, cap x QPS).

With several trace slices (``Runner.slices``) a setting must hold on each slice, against
that slice's own reference, and on a new slice by the prediction bound of the slices'
spread (`slo_search.within_on_slices`); the document reports the slices pooled.

The tolerance's reference (`ProfilerSettings.reference`):

* ``vllm_chunking`` (default): online-only under vLLM's own chunking, what the user
  would get from stock vLLM, whatever cap HyGen then applies;
* ``chosen_chunking``: online-only under the same cap as the setting tried. A P99 TBT
  under vLLM's chunking can flip between modes from slice to slice (it sits between
  decode-only steps and steps with a long prefill chunk), so a setting profiled against
  it may miss on another slice; the capped reference is stable. So that the cap itself
  cannot cost users what the tolerance allows offline work, a cap is tried only if
  online-only under it is within the tolerance of online-only under vLLM's chunking.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hygen_pod.contract.control import OfflineControl
from hygen_pod.contract.metrics import BY_NAME
from hygen_pod.contract.profile import OnlineBehind, ProfileDocument, Reference
from hygen_pod.policy.batch_shape import BatchShape
from hygen_pod.policy.latency import LatencySummary, RequestTiming, summarize
from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.profiling.online_lag import online_load
from hygen_pod.profiling.simulator import RequestSpec, Simulator
from hygen_pod.profiling.slices import as_slices
from hygen_pod.profiling.slo_search import (
    METRICS,
    SearchResult,
    all_within,
    largest_setting,
    within,
    within_on_slices,
)


@dataclass
class RunOutcome:
    online: LatencySummary
    offline_tps: float
    timings: list[RequestTiming] = field(default_factory=list, repr=False)  # online requests


class Runner(Protocol):
    """Where the profiler's measurements come from."""

    model: str
    hardware: str
    engine_args: dict
    slices: int  # online workloads (trace slices) a setting is run on

    def capture(self, seed: int) -> tuple[list[BatchShape], list[float]]:
        """Step shapes and measured seconds to fit the predictor on."""
        ...

    def use_predictor(self, predictor: LatencyPredictor) -> None: ...

    def run(self, control: OfflineControl, with_offline: bool, part: int = 0) -> RunOutcome:
        """Replay slice ``part`` of the profiling workload under ``control``."""
        ...


@dataclass
class ProfilerSettings:
    targets: Sequence[str]
    tolerance: float
    seed: int = 0
    iters: int = 6
    # accept a setting when the targets hold on this share of bootstrap resamples of the
    # online requests (robust to a metric sitting just under the line); 0: a point check
    confidence: float = 0.9
    budget_range_ms: tuple[float, float] = (1.0, 400.0)
    qps_range: tuple[float, float] = (0.01, 20.0)
    # online prefill caps to search jointly with the budget / QPS; None = vLLM's chunking
    online_prefill_caps: Sequence[int | None] = (None,)
    # what the tolerance is measured against (module docstring)
    reference: Reference = "vllm_chunking"


def profile(
    runner: Runner,
    cfg: ProfilerSettings,
    progress: Callable[[str], None] = lambda msg: None,
) -> ProfileDocument:
    bad = [t for t in cfg.targets if t not in METRICS]
    if bad or not cfg.targets:
        raise ValueError(
            f"targets must be a non-empty subset of {METRICS}, got {list(cfg.targets)}"
        )
    if cfg.tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    if not 0 <= cfg.confidence < 1:
        raise ValueError(f"confidence must be in [0, 1), got {cfg.confidence}")
    if cfg.reference not in ("vllm_chunking", "chosen_chunking"):
        raise ValueError(
            f"reference must be vllm_chunking or chosen_chunking, got {cfg.reference!r}"
        )
    caps = list(dict.fromkeys(cfg.online_prefill_caps))
    if not caps or any(c is not None and c < 1 for c in caps):
        raise ValueError(f"online prefill caps must be None or >= 1, got {caps}")
    n_slices = runner.slices
    if n_slices < 1:
        raise ValueError(f"the runner must have at least one slice, got {n_slices}")
    t0 = time.perf_counter()
    progress("capturing step timings")
    shapes, secs = runner.capture(cfg.seed)
    if len(shapes) < 20:
        raise ValueError(f"only {len(shapes)} steps captured; the predictor needs more")
    predictor, _, _ = LatencyPredictor.fit_with_holdout(shapes, secs, seed=cfg.seed)
    predictor.meta["source"] = f"profile {runner.hardware} {runner.model}"
    runner.use_predictor(predictor)
    progress(f"predictor fitted (held-out MAPE {predictor.meta['heldout_mape']:.1%})")

    def run_all(control: OfflineControl, with_offline: bool) -> list[RunOutcome]:
        outs = [runner.run(control, with_offline, part) for part in range(n_slices)]
        if n_slices > 1 and not all(o.timings for o in outs):
            raise ValueError("profiling on several slices needs per-request timings")
        return outs

    base = run_all(OfflineControl(mode="budget", budget_ms=0), with_offline=False)
    progress(f"online-only baseline measured ({n_slices} slice{'s' * (n_slices > 1)})")
    behind: list[OnlineBehind] = []
    for i, o in enumerate(base):
        load = online_load(o.timings)
        if load is None:
            continue
        progress(
            f"online only, slice {i}: {load.describe()}"
            + (": online work alone fell behind the engine" if load.behind else "")
        )
        if load.behind:
            behind.append(OnlineBehind(slice=i, requests=load.requests, served=load.served,
                                       ttft_growth=load.ttft_growth))  # fmt: skip
    # a TTFT target: the budget is also searched yielding the steps that serve (or keep
    # waiting) a prompt, which lets it grow elsewhere; the setting that did more offline
    # work is kept (docs/benchmarks.md, "Yielding to prompts")
    ttft = any(BY_NAME[m].latency == "ttft" for m in cfg.targets)
    yield_options = [False, True] if ttft else [False]
    # (mode, cap, yield_to_prompts, value) -> the outcome, slices pooled
    outcomes: dict[tuple[str, int | None, bool, float], RunOutcome] = {}
    capped_runs: dict[int, list[RunOutcome]] = {}  # online only under a cap
    cap_fine: dict[int, bool] = {}  # that run is within tolerance of vLLM's chunking

    def online_only_capped(cap: int) -> list[RunOutcome]:
        if cap not in capped_runs:
            capped_runs[cap] = run_all(
                OfflineControl(mode="budget", budget_ms=0, online_prefill_cap=cap),
                with_offline=False,
            )
        return capped_runs[cap]

    def each_holds(outs: list[RunOutcome], refs: list[RunOutcome]) -> bool:
        """Every slice within tolerance of its own reference (bootstrap, or summaries)."""
        if all(o.timings for o in outs):
            return all_within([o.timings for o in outs], [r.timings for r in refs], cfg.targets,
                              cfg.tolerance, cfg.confidence, seed=cfg.seed)  # fmt: skip
        pairs = zip(outs, refs, strict=True)
        return all(within(o.online, r.online, cfg.targets, cfg.tolerance) for o, r in pairs)

    def holds(outs: list[RunOutcome], refs: list[RunOutcome]) -> bool:
        """Each slice holds and, with several, a new slice is predicted to."""
        if n_slices == 1:
            return each_holds(outs, refs)
        observed, baseline = [o.timings for o in outs], [r.timings for r in refs]
        return within_on_slices(
            observed, baseline, cfg.targets, cfg.tolerance, cfg.confidence, seed=cfg.seed
        )

    def reference(cap: int | None) -> list[RunOutcome] | None:
        """What a setting with this cap is measured against (None: the cap is refused)."""
        if cfg.reference == "vllm_chunking" or cap is None:
            return base
        alone = online_only_capped(cap)
        if cap not in cap_fine:
            # each slice on its own: a cap moves online-only latency one way (shorter
            # chunks), and its ratios to vLLM chunking's two-mode P99 TBT are no normal sample
            cap_fine[cap] = each_holds(alone, base)
            progress(
                f"online only, online prefill cap {cap}: p99 TBT "
                f"{_pooled(alone).online.p99_tbt * 1e3:.1f} ms, "
                f"{'the reference' if cap_fine[cap] else 'refused'}"
            )
        return alone if cap_fine[cap] else None

    def passes(mode: str, cap: int | None, yields: bool, value: float) -> bool:
        ref = reference(cap)
        if ref is None:  # the cap alone costs online users more than the tolerance
            return False
        if mode == "budget":
            control = OfflineControl(
                mode="budget", budget_ms=value, online_prefill_cap=cap, yield_to_prompts=yields
            )
        else:
            control = OfflineControl(mode="qps", qps=value, online_prefill_cap=cap)
        outs = run_all(control, with_offline=True)
        ok = holds(outs, ref)
        out = outcomes[(mode, cap, yields, value)] = _pooled(outs)
        capped = ("" if cap is None else f", online prefill cap {cap}") + (
            ", yielding to prompts" if yields else ""
        )
        progress(
            f"{mode}={value:.3g}{capped}: p99 TBT {out.online.p99_tbt * 1e3:.1f} ms, "
            f"offline {out.offline_tps:.0f} tok/s, {'passes' if ok else 'fails'}"
        )
        return ok

    # a setting that holds the targets only because it admitted no offline work is no
    # setting at all: report 0 (online only) rather than a budget that does nothing
    pooled_base = _pooled(base)
    nothing = RunOutcome(pooled_base.online, 0.0)
    probes: dict[str, list[tuple[float, bool]]] = {}

    def search(
        mode: str, lo: float, hi: float
    ) -> tuple[SearchResult, int | None, bool, RunOutcome]:
        best: tuple[SearchResult, int | None, bool, RunOutcome] | None = None
        options = [(c, y) for y in (yield_options if mode == "budget" else [False]) for c in caps]
        for cap, y in options:
            r = largest_setting(lambda v, c=cap, y=y: passes(mode, c, y, v), lo, hi, cfg.iters)
            if len(options) > 1:
                probes[f"{mode} cap={cap}" + (" yield" if y else "")] = r.probes
            out = outcomes.get((mode, cap, y, r.value), nothing)
            if best is None or out.offline_tps > best[3].offline_tps:
                best = (r, cap, y, out)
        assert best is not None
        r, cap, y, out = best
        if out.offline_tps <= 0:
            what = "budget" if mode == "budget" else "QPS"
            progress(f"no {what} did offline work within tolerance: {mode} 0 (online only)")
            return SearchResult(0.0, False, r.probes), None, False, nothing
        return r, cap, y, out

    b, b_cap, yields, with_b = search("budget", *cfg.budget_range_ms)
    q, q_cap, _, with_q = search("qps", *cfg.qps_range)
    probes["budget_ms"], probes["qps"] = b.probes, q.probes
    capped_base = None
    if b_cap is not None:  # what the chosen chunking alone does to online-only serving
        capped_base = _pooled(online_only_capped(b_cap)).online.values_ms()
    return ProfileDocument(
        model=runner.model,
        hardware=runner.hardware,
        engine=runner.engine_args,
        seed=cfg.seed,
        targets=list(cfg.targets),  # type: ignore[arg-type]
        tolerance=cfg.tolerance,
        confidence=cfg.confidence,
        slices=n_slices,
        predictor=predictor.to_document(),
        budget_ms=b.value,
        qps=q.value,
        online_prefill_cap=b_cap,
        qps_online_prefill_cap=q_cap,
        yield_to_prompts=yields,
        reference=cfg.reference,
        online_only=pooled_base.online.values_ms(),
        online_only_with_cap=capped_base,
        online_behind=behind,
        with_budget=with_b.online.values_ms(),
        with_qps=with_q.online.values_ms(),
        offline_tps_budget=with_b.offline_tps,
        offline_tps_qps=with_q.offline_tps,
        probes=probes,
        profiler_seconds=time.perf_counter() - t0,
    )


def _pooled(outs: list[RunOutcome]) -> RunOutcome:
    """The slices as one run: online requests pooled, offline tok/s averaged."""
    if len(outs) == 1:
        return outs[0]
    timings = [t for o in outs for t in o.timings]
    return RunOutcome(summarize(timings), sum(o.offline_tps for o in outs) / len(outs), timings)


class SimRunner:
    """Profiles against the simulator with a GPU kernel oracle: deterministic per seed.

    ``workload`` is one slice's requests (online and offline), or a list of slices.
    """

    def __init__(
        self,
        gpu: str,
        workload: Sequence[RequestSpec] | Sequence[Sequence[RequestSpec]],
        window_s: float,
    ) -> None:
        from hygen_pod.profiling.oracle import DEFAULT_MODEL, KernelOracle

        self.oracle = KernelOracle(gpu)
        self.model, self.hardware = DEFAULT_MODEL, f"oracle:{gpu}"
        self.engine_args: dict = {"simulated": True, "window_s": window_s}
        self.workloads: list[list[RequestSpec]] = as_slices(workload, RequestSpec, "SimRunner")
        self.slices, self.window_s = len(self.workloads), window_s
        self.sim = Simulator(self.oracle.step_seconds)

    def capture(self, seed: int) -> tuple[list[BatchShape], list[float]]:
        from hygen_pod.profiling.oracle import random_batches, sample

        return sample(self.oracle, random_batches(random.Random(seed), 1000))

    def use_predictor(self, predictor: LatencyPredictor) -> None:
        self.sim.predictor = predictor

    def run(self, control: OfflineControl, with_offline: bool, part: int = 0) -> RunOutcome:
        cap = control.online_prefill_cap
        w, workload = self.window_s, self.workloads[part]
        if not with_offline or control.online_only:
            r = self.sim.run(workload, "online_only", window_s=w, online_prefill_cap=cap)
        elif control.mode == "budget":
            r = self.sim.run(workload, "hygen", window_s=w, budget_s=control.budget_ms / 1e3,
                             online_prefill_cap=cap,
                             yield_to_prompts=control.yield_to_prompts)  # fmt: skip
        else:
            r = self.sim.run(workload, "hygen_qps", window_s=w, qps=control.qps,
                             online_prefill_cap=cap)  # fmt: skip
        return RunOutcome(r.online, r.offline_tps, r.timings)
