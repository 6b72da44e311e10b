"""Discrete-event simulation of one vLLM engine under a co-location policy.

The simulator replays online arrivals and an offline backlog through the SAME
policy code the engine plugin uses (`policy.phase2.fill_offline` over
`policy.admission.Admitter`, `policy.offline_queue.OfflineQueue` and
`policy.rate.TokenBucket`), with vLLM's mechanics modelled
in between: chunked prefill under a token budget, request slots, KV blocks,
preemption (recompute) and a prefix cache at the trace's block granularity.
Each iteration's duration comes from an oracle (measured GPU kernel tables), not
from our predictor, so predictor error shows up in the results.

Policies:

* ``online_only``  - offline requests are ignored.
* ``offline_only`` - only offline requests, no latency cap (the capacity limit).
* ``naive``        - vLLM's priority scheduling with offline at low priority and no
  budget: one running list in admission order, waiting by (priority, arrival),
  the lowest-priority newest running request preempted when KV runs out.
* ``hygen_qps``    - HyGen*: online first, offline starts capped at a fixed QPS.
* ``hygen``        - HyGen: online first, offline admitted under a latency budget
  (with ``yield_to_prompts``, none in a step with an online prompt chunk or an online
  request waiting, as the engine plugin does).

Throughput counts served tokens (prompt, including prefix-cache hits, and
generated) once; recomputation after a preemption is not counted again.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from hygen_pod.policy.admission import Admitter, Limits, OfflineCandidate, cdiv
from hygen_pod.policy.batch_shape import BatchShape
from hygen_pod.policy.latency import LatencySummary, RequestTiming, summarize
from hygen_pod.policy.offline_queue import OfflineQueue
from hygen_pod.policy.online_chunk import OnlinePrefillCap
from hygen_pod.policy.phase2 import fill_offline, step_budget
from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.policy.rate import TokenBucket
from hygen_pod.profiling.oracle import MixedBatch
from hygen_pod.profiling.traces import TraceRequest

Policy = Literal["online_only", "offline_only", "naive", "hygen_qps", "hygen"]
POLICIES: tuple[Policy, ...] = ("online_only", "offline_only", "naive", "hygen_qps", "hygen")


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request of a workload."""

    arrival: float
    prompt: int
    output: int
    offline: bool = False
    prefix: tuple[int, ...] = ()  # chained ids of shared prefix blocks (Mooncake hash_ids)


def online_requests(
    trace: Sequence[TraceRequest], start: int, qps: float, window_s: float
) -> list[RequestSpec]:
    """Trace requests from ``start`` with arrival gaps rescaled to a mean of ``qps``, up to
    ``window_s`` seconds; real lengths and prefix ids."""
    rows = trace[start : start + int(qps * window_s * 1.5) + 10]
    scale = (len(rows) - 1) / qps / (rows[-1].arrival_s - rows[0].arrival_s)
    out = []
    for r in rows:
        t = (r.arrival_s - rows[0].arrival_s) * scale
        if t > window_s:
            break
        out.append(RequestSpec(t, r.prompt_tokens, max(1, r.output_tokens), False, r.prefix_blocks))
    return out


def offline_requests(pool: Sequence[TraceRequest], count: int, seed: int) -> list[RequestSpec]:
    """An offline backlog (all arriving at 0) of ``count`` requests sampled from ``pool``."""
    return [
        RequestSpec(0.0, r.prompt_tokens, max(1, r.output_tokens), True, r.prefix_blocks)
        for r in random.Random(seed).sample(list(pool), count)
    ]


@dataclass(frozen=True, slots=True)
class HostCosts:
    """CPU seconds per step spent scheduling and preparing it: stock vLLM's, and what the
    HyGen plugin adds while offline work is present, each a base plus a cost per running
    request. Zero by default (the device step alone)."""

    base_s: float = 0.0
    per_request_s: float = 0.0
    hygen_base_s: float = 0.0
    hygen_per_request_s: float = 0.0

    def step_s(self, running: int, hygen: bool) -> float:
        s = self.base_s + self.per_request_s * running
        if hygen:
            s += self.hygen_base_s + self.hygen_per_request_s * running
        return s


# Fitted to bench/scheduler_overhead.py on the 2-core dev VM (docs/benchmarks.md, with all
# N requests really running): stock schedule()+update() ~0.2 ms + 35 us per running
# request; HyGen with an offline backlog adds ~90 us + 4.0 us per request (136 / 374 /
# 1,117 us at 16 / 64 / 256, with the per-step shortcuts and the one-pass steady-state
# scan; least squares). Not a bound for a GPU server: the dev VM (2 vCPUs of an AMD EPYC,
# Zen 4) is of a GPU host's generation, and stock's own step at 256 took 3.7-13.3 ms from
# one dev VM to the next (docs/benchmarks.md, "Scheduler overhead"). With the scan
# carried across steps HyGen adds 124 / 323 / 784 us (the honest probe); the fit is kept,
# a steady-state figure that busy steps (the general method) exceed, and the documented
# co-location tables were run with it.
MEASURED_HOST_COSTS = HostCosts(2e-4, 3.5e-5, 9e-5, 4.0e-6)


@dataclass(slots=True)
class EngineSpec:
    """The simulated engine's limits and pipeline."""

    kv_blocks: int = 28_000  # 16-token blocks (~448k tokens: Llama-3.1-8B on an 80 GB GPU)
    block_size: int = 16
    max_batched_tokens: int = 2048
    max_seqs: int = 256
    prefix_block_tokens: int = 512  # tokens per RequestSpec.prefix id
    # 1: vLLM's synchronous loop (schedule, run, process output, repeat); 2: async
    # scheduling, the GPU default: step N+1 is scheduled while step N runs, with N's
    # tokens in flight, so host time hides under device time but a request arriving
    # during step N first runs in step N+2
    batch_queue: int = 1
    host: HostCosts = field(default_factory=HostCosts)
    # vLLM's scheduler_reserve_full_isl (default on since 0.32): a new request starts only
    # if KV for its whole sequence is free, not just for its first chunk
    reserve_full_isl: bool = True


@dataclass(slots=True, eq=False)  # identity equality: list membership stays cheap
class _Req:
    rid: int
    spec: RequestSpec
    computed: int = 0
    generated: int = 0
    blocks: int = 0
    preemptions: int = 0
    hwm: int = 0
    cached_blocks: int = 0
    active: bool = False  # in the running list
    timing: RequestTiming | None = None

    @property
    def offline(self) -> bool:
        return self.spec.offline

    @property
    def num_tokens(self) -> int:
        return self.spec.prompt + self.generated

    @property
    def wanted(self) -> int:
        return self.num_tokens - self.computed

    @property
    def done(self) -> bool:
        return self.generated >= self.spec.output

    @property
    def decoding(self) -> bool:
        """Past its prompt (and any recompute): one token a step."""
        return self.computed >= self.spec.prompt and self.wanted == 1


@dataclass
class SimResult:
    """What one simulated run measured over its window."""

    policy: str
    window_s: float
    online: LatencySummary
    online_tokens: int = 0
    offline_tokens: int = 0
    steps: int = 0
    preemptions: int = 0
    online_preemptions: int = 0
    # steps carrying offline tokens (not idle-engine progress) whose *step time* (the
    # oracle's, with jitter if any: what the GPU took) exceeded the budget; and those the
    # predictor already put over it when admitting (0 unless the admission code is wrong)
    over_budget_steps: int = 0
    over_budget_predicted: int = 0
    progress_steps: int = 0
    timings: list[RequestTiming] = field(default_factory=list, repr=False)

    @property
    def offline_tps(self) -> float:
        return self.offline_tokens / self.window_s

    @property
    def online_tps(self) -> float:
        return self.online_tokens / self.window_s

    @property
    def total_tps(self) -> float:
        return (self.online_tokens + self.offline_tokens) / self.window_s


class _Run:
    """Mutable state of one simulation."""

    def __init__(
        self,
        sim: Simulator,
        policy: Policy,
        budget_s: float | None,
        qps: float | None,
        online_prefill_cap: int | None = None,
        yield_to_prompts: bool = False,
    ) -> None:
        self.sim, self.e, self.policy, self.budget_s = sim, sim.engine, policy, budget_s
        self.yield_to_prompts = yield_to_prompts and policy == "hygen"
        # vLLM's own chunking for the stock baselines; the cap is HyGen's setting
        self.online_cap = (
            online_prefill_cap if policy in ("hygen", "hygen_qps", "online_only") else None
        )
        self.cut_online = False  # this step's online prefill was cut by the cap
        self.budgeted_step = False  # this step carries offline tokens under the budget
        self.jitter = random.Random(sim.jitter_seed)
        self.now = 0.0
        self.running: list[_Req] = []
        self.used = 0  # KV blocks held by running requests
        self.waiting: list[tuple[float, int, _Req]] = []  # online, heap by (arrival, rid)
        # The naive policy is vLLM's queue: FIFO by arrival (max_bypass 0 = oldest first).
        bypass = 0 if policy == "naive" else sim.max_bypass
        self.queue: OfflineQueue[_Req] = OfflineQueue(max_bypass=bypass, clock=lambda: self.now)
        self.cache: OrderedDict[int, None] = OrderedDict()  # prefix block ids, LRU
        self.bucket = TokenBucket(qps, clock=lambda: self.now) if policy == "hygen_qps" else None
        self.res = SimResult(policy, 0.0, summarize([]))

    # ------------------------------------------------------------ helpers
    def free(self) -> int:
        return self.e.kv_blocks - self.used

    def grow(self, r: _Req, n: int) -> int:
        return max(0, cdiv(r.computed + n, self.e.block_size) - r.blocks)

    def take(self, r: _Req, n: int) -> None:
        g = self.grow(r, n)
        r.blocks += g
        self.used += g

    def release(self, r: _Req) -> None:
        self.used -= r.blocks
        r.blocks = 0

    def start_need(self, r: _Req, computed: int, n: int) -> int:
        """KV blocks that must be free for ``r`` to start with an ``n``-token chunk."""
        tokens = r.num_tokens if self.e.reserve_full_isl else computed + n
        return cdiv(max(tokens, computed + n), self.e.block_size)

    def cached_tokens(self, r: _Req) -> int:
        hit = 0
        for b in r.spec.prefix:
            if b not in self.cache:
                break
            self.cache.move_to_end(b)
            hit += 1
        return min(hit * self.e.prefix_block_tokens, r.num_tokens - 1)

    def start(self, r: _Req) -> None:
        self.running.append(r)
        r.active = True

    def stop(self, r: _Req) -> None:
        self.running.remove(r)
        r.active = False
        self.release(r)

    def preempt(self, r: _Req) -> None:
        self.stop(r)
        r.computed = 0
        r.preemptions += 1
        self.res.preemptions += 1
        self.res.online_preemptions += not r.offline
        if r.offline:
            self.queue.push_front(str(r.rid), r)
        else:
            heapq.heappush(self.waiting, (r.spec.arrival, r.rid, r))

    def evict_offline(self) -> bool:
        for r in reversed(self.running):
            if r.offline:
                self.preempt(r)
                return True
        return False

    # ------------------------------------------------------------- phases
    def plan_online(self) -> tuple[list[tuple[_Req, int]], BatchShape, int]:
        """vLLM's running loop then waiting loop, for online requests; offline work
        is preempted (newest first) whenever online work needs its KV or slot."""
        e = self.e
        plan: list[tuple[_Req, int]] = []
        shape = BatchShape()
        tokens = e.max_batched_tokens
        online = [r for r in self.running if not r.offline]
        cap = OnlinePrefillCap(self.online_cap, any(r.active and r.decoding for r in online))
        if cap.active:  # decodes first, so the cap never takes a decode's token
            online.sort(key=lambda r: not r.decoding)
        for r in online:
            if tokens <= 0:
                break
            if not r.active:
                continue
            n = min(r.wanted, tokens)
            if not r.decoding:
                n = cap.grant(n)
                if n <= 0:
                    continue
            while self.grow(r, n) > self.free() and self.evict_offline():
                pass
            while self.grow(r, n) > self.free():  # online victims: newest first
                victim = next(x for x in reversed(self.running) if not x.offline)
                self.preempt(victim)
                if victim is r:
                    break
            if not r.active:
                continue
            shape.add(n, r.computed, r.spec.prompt)
            self.take(r, n)
            plan.append((r, n))
            tokens -= n
        while self.waiting and tokens > 0:
            r = self.waiting[0][2]
            if len(self.running) >= e.max_seqs and not self.evict_offline():
                break
            computed = self.cached_tokens(r)
            want = min(r.num_tokens - computed, tokens)
            n = cap.peek(want)
            if n <= 0:
                cap.grant(want)  # records that online prefills stop here
                break
            need = self.start_need(r, computed, n)
            while need > self.free() and self.evict_offline():
                pass
            if need > self.free():
                break
            cap.grant(want)
            heapq.heappop(self.waiting)
            r.computed = computed
            shape.add(n, r.computed, r.spec.prompt)
            self.take(r, n)
            self.start(r)
            plan.append((r, n))
            tokens -= n
        self.cut_online = cap.cut
        return plan, shape, tokens

    def plan_offline(self, shape: BatchShape, tokens: int, idle: bool) -> list[tuple[_Req, int]]:
        """Phase 2 with the engine plugin's own admission code."""
        e, hygen = self.e, self.policy == "hygen"
        budget = step_budget(self.budget_s, self.yield_to_prompts, shape, len(self.waiting))
        adm = Admitter(
            self.sim.predictor if hygen else None,
            shape,
            Limits(
                budget_s=budget if hygen else None,
                tokens=tokens,
                free_blocks=self.free(),
                slots=e.max_seqs - sum(1 for r in self.running if not r.offline),
                block_size=e.block_size,
                # a cut online chunk is the step's last item (as in the engine plugin)
                allow_partial=not self.cut_online,
            ),
        )
        cands = [
            OfflineCandidate(
                r, r.computed, r.wanted, r.spec.prompt, r.blocks, True, (r.spec.arrival, r.rid)
            )
            for r in self.running
            if r.offline and r.wanted > 0
        ]

        def evict(r: _Req) -> int:
            freed = r.blocks
            self.preempt(r)
            return freed

        def waiting(r: _Req) -> OfflineCandidate:
            computed = self.cached_tokens(r)
            start = r.num_tokens if e.reserve_full_isl else 0
            return OfflineCandidate(
                r, computed, r.num_tokens - computed, r.spec.prompt, 0, False, start_tokens=start
            )

        got = fill_offline(
            adm,
            cands,
            evict,
            self.queue,
            waiting,
            bucket=self.bucket,
            progress_chunk=e.block_size if hygen and idle else None,
            start_new=not self.cut_online,
        )
        self.res.progress_steps += got.progress
        plan = []
        for c, n in adm.allocations:
            r = c.ref
            if not c.running:
                r.computed = c.computed
                self.start(r)
            self.take(r, n)
            plan.append((r, n))
        self.budgeted_step = hygen and bool(adm.allocations) and not adm.progress_step
        if self.budgeted_step:
            assert self.sim.predictor is not None and budget is not None
            if self.sim.predictor.predict(adm.shape) > budget * (1 + 1e-9):
                self.res.over_budget_predicted += 1
        return plan

    def plan_naive(self) -> list[tuple[_Req, int]]:
        """vLLM priority scheduling: running list in admission order, then waiting by
        (priority, arrival); a KV shortage preempts the lowest priority, newest."""
        e = self.e
        plan: list[tuple[_Req, int]] = []
        tokens = e.max_batched_tokens
        preempted = False
        for r in list(self.running):
            if tokens <= 0:
                break
            if not r.active:
                continue
            n = min(r.wanted, tokens)
            while self.grow(r, n) > self.free():
                victim = max(self.running, key=lambda x: (x.offline, x.spec.arrival, x.rid))
                self.preempt(victim)
                preempted = True
                if victim is r:
                    break
            if not r.active:
                continue
            self.take(r, n)
            plan.append((r, n))
            tokens -= n
        if preempted:
            return plan
        while tokens > 0 and len(self.running) < e.max_seqs:
            r = self.waiting[0][2] if self.waiting else self.queue.peek()
            if r is None:
                break
            computed = self.cached_tokens(r)
            n = min(r.num_tokens - computed, tokens)
            if self.start_need(r, computed, n) > self.free():
                break
            if r.offline:
                self.queue.pop()
            else:
                heapq.heappop(self.waiting)
            r.computed = computed
            self.take(r, n)
            self.start(r)
            plan.append((r, n))
            tokens -= n
        return plan

    # ------------------------------------------------------------- apply
    def apply(self, plan: list[tuple[_Req, int]], window_s: float, at: float) -> int:
        """Advance requests for a step whose tokens come out at ``at``; returns online
        finishes."""
        e, res = self.e, self.res
        finished_online = 0
        in_window = at <= window_s
        for r, n in plan:
            r.computed += n
            if r.computed >= r.num_tokens:  # a token is sampled
                r.generated += 1
                if r.timing is not None:
                    r.timing.token_times.append(at)
            if r.computed > r.hwm:
                if in_window:
                    if r.offline:
                        res.offline_tokens += r.computed - r.hwm
                    else:
                        res.online_tokens += r.computed - r.hwm
                r.hwm = r.computed
            full = min(r.computed, r.spec.prompt) // e.prefix_block_tokens
            while r.cached_blocks < min(full, len(r.spec.prefix)):
                b = r.spec.prefix[r.cached_blocks]
                self.cache[b] = None
                self.cache.move_to_end(b)
                r.cached_blocks += 1
            if r.done:
                self.stop(r)
                if not r.offline and r.spec.arrival <= window_s:
                    finished_online += 1
        # The prefix cache lives in free KV blocks: evict LRU beyond them.
        room = self.free() * e.block_size // e.prefix_block_tokens
        while len(self.cache) > room:
            self.cache.popitem(last=False)
        return finished_online


class Simulator:
    """Runs a workload under one policy; step time from ``step_seconds``."""

    def __init__(
        self,
        step_seconds: Callable[[MixedBatch], float],
        engine: EngineSpec | None = None,
        *,
        predictor: LatencyPredictor | None = None,
        max_bypass: int = 256,
        jitter_cv: float = 0.0,
        jitter_seed: int = 0,
    ) -> None:
        if not 0 <= jitter_cv < 1:
            raise ValueError(f"jitter_cv must be in [0, 1), got {jitter_cv}")
        self.step_seconds = step_seconds
        self.engine = engine or EngineSpec()
        self.predictor = predictor
        self.max_bypass = max_bypass
        # Step-time noise: each step's time times a lognormal factor of mean 1 and this
        # coefficient of variation (a real GPU's steps of one shape differ; tails feel it)
        self.jitter_cv, self.jitter_seed = jitter_cv, jitter_seed
        self._sigma = math.sqrt(math.log1p(jitter_cv**2))

    def run(
        self,
        workload: Sequence[RequestSpec],
        policy: Policy,
        *,
        window_s: float,
        budget_s: float | None = None,
        qps: float | None = None,
        online_prefill_cap: int | None = None,
        yield_to_prompts: bool = False,
        max_steps: int = 10_000_000,
    ) -> SimResult:
        """Simulate until every online request that arrived in the window finished;
        offline work counts inside the window only. ``yield_to_prompts`` (HyGen): no
        offline work in a step with an online prompt chunk or an online request waiting."""
        if policy == "hygen" and (budget_s is None or self.predictor is None):
            raise ValueError("the hygen policy needs budget_s and a predictor")
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose one of {POLICIES}")
        st = _Run(self, policy, budget_s, qps, online_prefill_cap, yield_to_prompts)
        st.res.window_s = window_s
        keep = [
            s
            for s in workload
            if not (policy == "online_only" and s.offline)
            and not (policy == "offline_only" and not s.offline)
        ]
        reqs = sorted((_Req(i, s) for i, s in enumerate(keep)), key=lambda r: r.spec.arrival)
        pending_online = sum(1 for r in reqs if not r.offline and r.spec.arrival <= window_s)
        nxt = 0
        e = self.engine
        if e.batch_queue not in (1, 2):
            raise ValueError(f"batch_queue must be 1 (sync) or 2 (async), got {e.batch_queue}")
        # HyGen's host time is charged only if it is modelled: the scan below is per step
        charge_hygen = policy in ("hygen", "hygen_qps") and bool(
            e.host.hygen_base_s or e.host.hygen_per_request_s
        )
        in_flight: deque[float] = deque()  # device end times of submitted steps
        while pending_online > 0 or (
            st.now < window_s and (st.queue or st.running or nxt < len(reqs))
        ):
            assert st.res.steps < max_steps, "simulation did not finish"
            while nxt < len(reqs) and reqs[nxt].spec.arrival <= st.now:
                r = reqs[nxt]
                nxt += 1
                if r.offline:
                    st.queue.add(str(r.rid), r.spec.prefix or (-1 - r.rid,), r)
                else:
                    r.timing = RequestTiming(arrival=r.spec.arrival)
                    heapq.heappush(st.waiting, (r.spec.arrival, r.rid, r))
            st.budgeted_step = False
            if policy == "naive":
                plan = st.plan_naive()
            else:
                plan, shape, tokens = st.plan_online()
                if policy != "online_only":
                    idle = not plan and not st.waiting
                    plan += st.plan_offline(shape, tokens, idle)
            if not plan:
                if nxt < len(reqs):
                    st.now = max(st.now, reqs[nxt].spec.arrival)
                    continue
                break
            batch = MixedBatch(
                tuple(
                    (n, r.computed) for r, n in plan if not (n == 1 and r.computed >= r.spec.prompt)
                ),
                tuple(r.computed + 1 for r, n in plan if n == 1 and r.computed >= r.spec.prompt),
            )
            dt = self.step_seconds(batch)
            if self._sigma:
                dt *= st.jitter.lognormvariate(-(self._sigma**2) / 2, self._sigma)
            if st.budgeted_step and st.budget_s is not None and dt > st.budget_s * (1 + 1e-9):
                st.res.over_budget_steps += 1
            st.res.steps += 1
            # The pipeline: scheduled by now + host time, on the device once the previous
            # step is off it; the scheduler plans the next step as soon as the batch queue
            # has room. Request state advances at scheduling (vLLM's placeholders); tokens
            # are emitted when the device step ends.
            offline_present = charge_hygen and (
                bool(st.queue) or any(r.offline for r in st.running)
            )
            ready = st.now + e.host.step_s(len(st.running), offline_present)
            end = max(ready, in_flight[-1] if in_flight else 0.0) + dt
            in_flight.append(end)
            pending_online -= st.apply(plan, window_s, at=end)
            st.now = max(ready, in_flight.popleft()) if len(in_flight) >= e.batch_queue else ready
        timings = [r.timing for r in reqs if r.timing is not None and r.spec.arrival <= window_s]
        st.res.online = summarize(timings)
        st.res.timings = timings
        return st.res
