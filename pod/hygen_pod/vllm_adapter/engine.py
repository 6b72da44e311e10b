"""Build an in-process vLLM engine with the HyGen scheduler and replay workloads on it.

Used by the CLI's demo and predictor capture. Requests are fed at their arrival
times (wall clock) and each emitted token is timestamped, so TTFT and TBT are
measured on the real engine. The engine runs in this process
(VLLM_ENABLE_V1_MULTIPROCESSING=0) so the scheduler object is reachable.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from hygen_pod.contract.settings import CLASS_KEY, SchedulerSettings
from hygen_pod.policy.latency import RequestTiming
from hygen_pod.profiling.slices import as_slices
from hygen_pod.profiling.workload import ReplayRequest

if TYPE_CHECKING:
    from hygen_pod.vllm_adapter.scheduler import HyGenScheduler


class EngineOptions(BaseModel):
    """Engine arguments the CLI exposes (CPU-friendly defaults)."""

    model: str
    dtype: str = "float32"
    kv_cache_tokens: int = Field(16384, gt=0)
    max_model_len: int = Field(2048, gt=0)
    max_num_batched_tokens: int = Field(512, gt=0)
    max_num_seqs: int = Field(32, gt=0)
    block_size: int = Field(32, gt=0)
    enable_prefix_caching: bool = True
    seed: int = 0
    hygen: SchedulerSettings = Field(default_factory=SchedulerSettings)


def _kv_bytes_per_token(model_dir: Path, dtype: str) -> int:
    import json

    cfg = json.loads((model_dir / "config.json").read_text())
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    elem = 4 if dtype == "float32" else 2
    return 2 * cfg["num_hidden_layers"] * kv_heads * head_dim * elem


@dataclass
class ReplayResult:
    wall_s: float
    timings: dict[str, RequestTiming] = field(default_factory=dict)
    offline_ids: set[str] = field(default_factory=set)
    outputs: dict[str, list[int]] = field(default_factory=dict)

    def by_class(self, offline: bool) -> list[RequestTiming]:
        return [t for rid, t in self.timings.items() if (rid in self.offline_ids) == offline]


class Engine:
    """An in-process vLLM LLMEngine running HyGenScheduler."""

    def __init__(self, opts: EngineOptions) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        from hygen_pod.vllm_adapter.scheduler import HyGenScheduler

        self.opts = opts
        model_dir = Path(opts.model)
        kv_bytes = opts.kv_cache_tokens * _kv_bytes_per_token(model_dir, opts.dtype)
        self.llm = LLM(
            model=str(model_dir),
            dtype=opts.dtype,
            enforce_eager=True,
            kv_cache_memory_bytes=kv_bytes,
            max_model_len=opts.max_model_len,
            max_num_batched_tokens=opts.max_num_batched_tokens,
            max_num_seqs=opts.max_num_seqs,
            block_size=opts.block_size,
            enable_prefix_caching=opts.enable_prefix_caching,
            seed=opts.seed,
            scheduler_cls=HyGenScheduler,
            additional_config={"hygen": opts.hygen.model_dump()},
        )
        self._bind()

    @classmethod
    def from_llm(cls, llm: Any) -> Engine:
        """Wrap an existing in-process LLM whose scheduler is a HyGenScheduler."""
        self = cls.__new__(cls)
        self.llm, self.opts = llm, None
        self._bind()
        return self

    def _bind(self) -> None:
        self.engine = self.llm.llm_engine
        self.scheduler: HyGenScheduler = self.engine.engine_core.engine_core.scheduler
        self.vocab_size = self.engine.model_config.get_vocab_size()

    def replay(
        self,
        requests: Sequence[ReplayRequest],
        *,
        on_step: Callable[[int, int], Any] | None = None,
        time_limit_s: float | None = None,
        until_online_done: bool = False,
        stall_s: float = 120.0,
    ) -> ReplayResult:
        """Feed requests at their arrival times, step until all finish; time every token.

        The offline backlog that is there from the start (offline, arrival <= 0) is handed
        to the engine before the clock starts, as the simulator's backlog is: adding 1,000
        requests takes the engine 0.2-0.3 s of CPU, which an online request arriving at 0
        otherwise waited behind in every run with offline work (160-320 ms of TTFT on the
        CPU engine, most of a 96-request slice's P99 TTFT).

        With ``until_online_done`` the replay ends when the last online request
        finishes: unfinished offline requests are aborted and offline throughput is
        what was done in that window (as the simulator measures it). A replay in
        which no request gains a token for ``stall_s`` raises instead of hanging.
        """
        from vllm import SamplingParams

        def add(r: ReplayRequest) -> None:
            sp = SamplingParams(
                max_tokens=r.max_tokens,
                temperature=0.0,
                ignore_eos=True,
                extra_args={CLASS_KEY: "offline"} if r.offline else None,
            )
            self.engine.add_request(r.rid, {"prompt_token_ids": r.prompt_token_ids}, sp)

        backlog: list[ReplayRequest] = []
        pending: list[ReplayRequest] = []
        for r in requests:
            (backlog if r.offline and r.arrival_s <= 0 else pending).append(r)
        pending.sort(key=lambda r: r.arrival_s)
        res = ReplayResult(wall_s=0.0, offline_ids={r.rid for r in requests if r.offline})
        seen: dict[str, int] = {}
        for r in backlog:
            add(r)
        start = time.perf_counter()
        for r in backlog:
            res.timings[r.rid] = RequestTiming(arrival=start)
        i = 0
        total = len(pending)
        online_left = sum(1 for r in pending if not r.offline)
        last_progress = start
        while i < total or self.engine.has_unfinished_requests():
            if until_online_done and online_left == 0:
                left = [rid for rid in res.offline_ids if rid not in res.outputs]
                self.engine.abort_request(left)
                while self.engine.has_unfinished_requests():
                    self.engine.step()
                break
            now = time.perf_counter() - start
            if time_limit_s is not None and now > time_limit_s:
                raise TimeoutError(f"replay did not finish within {time_limit_s:.0f} s")
            while i < total and pending[i].arrival_s <= now:
                r = pending[i]
                add(r)
                res.timings[r.rid] = RequestTiming(arrival=start + r.arrival_s)
                i += 1
                last_progress = time.perf_counter()
            if not self.engine.has_unfinished_requests():
                time.sleep(min(0.01, max(0.0, pending[i].arrival_s - now)))
                continue
            outs = self.engine.step()
            t = time.perf_counter()
            if t - last_progress > stall_s:
                raise RuntimeError(
                    f"replay stalled: no request made progress for {stall_s:.0f} s "
                    f"({len(res.outputs)} of {i} finished)"
                )
            for out in outs:
                n = len(out.outputs[0].token_ids)
                new = n - seen.get(out.request_id, 0)
                if new > 0:
                    res.timings[out.request_id].token_times.extend([t] * new)
                    seen[out.request_id] = n
                    last_progress = t
                if out.finished:
                    res.outputs[out.request_id] = list(out.outputs[0].token_ids)
                    online_left -= out.request_id not in res.offline_ids
            if on_step is not None:
                on_step(i, len(res.outputs))
        res.wall_s = time.perf_counter() - start
        last = [t.token_times[-1] for t in res.by_class(offline=False) if t.token_times]
        if until_online_done and last:
            # The window ends at the last online token, not after the abort drain.
            res.wall_s = max(last) - start
        return res


class EngineRunner:
    """The profiler's `Runner` on a real engine: measured steps and latencies.

    ``online`` is one slice of online requests or a list of slices (each replayed with
    the same offline backlog).
    """

    def __init__(
        self,
        engine: Engine,
        online: Sequence[ReplayRequest] | Sequence[Sequence[ReplayRequest]],
        offline: Sequence[ReplayRequest],
        capture: Sequence[ReplayRequest],
        *,
        model: str,
        hardware: str = "cpu",
    ) -> None:
        self.online: list[list[ReplayRequest]] = as_slices(online, ReplayRequest, "EngineRunner")
        self.slices = len(self.online)
        self.eng, self.offline, self.capture_reqs = engine, offline, capture
        self.model, self.hardware = model, hardware
        self.engine_args: dict = engine.opts.model_dump(exclude={"hygen"}) if engine.opts else {}
        self._round = 0

    def _fresh(self, reqs: Sequence[ReplayRequest]) -> list[ReplayRequest]:
        # Request ids must be unique per engine: tag each replay.
        self._round += 1
        return [dataclasses.replace(r, rid=f"{r.rid}-r{self._round}") for r in reqs]

    def capture(self, seed: int):
        from hygen_pod.contract.control import OfflineControl
        from hygen_pod.policy.step_trace import timing_samples

        s = self.eng.scheduler
        s.set_control(OfflineControl(mode="qps", qps=None))
        s.trace.records.clear()
        self.eng.replay(self._fresh(self.capture_reqs))
        return timing_samples(list(s.trace)[5:])  # skip warm-up steps

    def use_predictor(self, predictor) -> None:
        self.eng.scheduler.predictor = predictor

    def run(self, control, with_offline: bool, part: int = 0):
        from hygen_pod.policy.latency import summarize
        from hygen_pod.profiling.profiler import RunOutcome

        s = self.eng.scheduler
        s.set_control(control)
        assert s.reset_prefix_cache()
        reqs = self.online[part] + (list(self.offline) if with_offline else [])
        res = self.eng.replay(self._fresh(reqs), until_online_done=True)
        offline_tokens = sum(len(t.token_times) for t in res.by_class(offline=True))
        # by request id: the same online requests in the same order in every run (paired)
        online = [t for rid, t in sorted(res.timings.items()) if rid not in res.offline_ids]
        return RunOutcome(summarize(online), offline_tokens / res.wall_s, list(online))
