"""HyGen's two-phase scheduler as a vLLM v1 ``--scheduler-cls`` plugin.

It wraps the stock ``Scheduler.schedule()`` rather than forking it (vLLM is imported
only in this package, ``vllm_adapter``; an import-linter contract keeps it so):

1. *Phase 1 (online)*: offline requests are taken out of the stock queues, so the
   base method sees only online work and schedules it exactly as stock vLLM
   would. Before that, a shadow of the base's arithmetic works out the online
   work of this step (tokens, request slots, KV blocks) and, if the KV cache
   is short, offline requests are preempted so that online work never waits
   behind offline work.
2. *Phase 2 (offline)*: `hygen_pod.policy.phase2` (shared with the simulator)
   picks offline decodes and prefill chunks that fit the latency budget (by the
   predictor), the rest of the token budget, the free KV blocks and request
   slots. The admitted requests are put behind the online ones (running list,
   then waiting queue) and the step's token budget is set to online + admitted
   tokens, so the base method grants each exactly its allocation. A partial
   chunk is only ever the last item. With ``yield_to_prompts`` (budget mode), a
   step that serves an online prompt chunk or leaves an online request waiting
   gets no offline work.

Offline requests that are running but not admitted this step stay out of the
base method's reach; the engine keeps their KV and resumes them later.
Preempted offline requests go back to the front of the offline queue.

Two bindings, one policy: `HyGenScheduler` over vLLM's synchronous ``Scheduler``, and
`HyGenAsyncScheduler` over ``AsyncScheduler`` for vLLM's async scheduling (on by
default on GPUs: the engine core keeps two batches in flight and schedules step N+1
while step N runs). Naming ``HyGenScheduler`` in ``--scheduler-cls`` is enough: it
builds the async binding whenever the resolved engine config has async scheduling
on. See docs/scheduler.md ("Async scheduling").
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.request_queue import SchedulingPolicy
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus

from hygen_pod.contract.control import ControlFile, OfflineControl
from hygen_pod.contract.profile import ProfileDocument
from hygen_pod.contract.scheduler_status import SchedulerStatus, StatusWriter
from hygen_pod.contract.settings import SchedulerSettings, request_class
from hygen_pod.policy.admission import Admitter, Limits, OfflineCandidate, cdiv
from hygen_pod.policy.batch_shape import BatchShape
from hygen_pod.policy.offline_queue import OfflineQueue
from hygen_pod.policy.online_chunk import OnlinePrefillCap
from hygen_pod.policy.phase2 import fill_offline, step_budget
from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.policy.rate import TokenBucket
from hygen_pod.policy.step_trace import StepRecord, StepTrace
from hygen_pod.vllm_adapter.prefix_hits import PrefixHits
from hygen_pod.vllm_adapter.steady_scan import SteadyCarry, SteadyScan, steady_scan

logger = logging.getLogger("hygen.scheduler")

# Far beyond any step counter: the base schedule() skips a running request whose
# next_decode_eligible_step is in the future, which is how non-admitted offline
# requests stay visible (as preemption victims) without being scheduled.
_NEVER = 1 << 62
_IDLE_SLEEP_S = 0.002
# Relative distance from the budget within which `_admit_all_decodes` sums decode costs
# one at a time, as `Admitter._offer` does, instead of trusting the closed form (whose
# rounding differs by ~1e-15 relative).
_NEAR_BUDGET = 1e-9


def _async_scheduling(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the engine config a scheduler is built with has async scheduling on."""
    config = kwargs.get("vllm_config", args[0] if args else None)
    sched = getattr(config, "scheduler_config", None)
    return bool(getattr(sched, "async_scheduling", False))


@dataclass(slots=True)
class _StepPlan:
    """A step as planned: tokens per request, the decodes' sums (by `BatchShape.add`'s
    rule) and the other items' ids, and the online/offline totals."""

    tokens: dict[str, int]
    prefills: list[str]
    decodes: int
    decode_context: int
    decode_context_sq: int
    online_tokens: int
    online_reqs: int
    offline_tokens: int
    offline_reqs: int


@dataclass(slots=True)
class OfflineDecodes:
    """The running offline requests when every one with work is a plain decode
    (`_split_wants`): those decodes in running order, the sums of their contexts
    (computed + 1), the decodes whose next token may need a new KV block (as
    `steady_scan`), and the requests with nothing to compute this step (async: the last
    token in flight), which phase 2 does not offer."""

    reqs: list[Request] = field(default_factory=list)
    idle: list[Request] = field(default_factory=list)
    total: int = 0
    total_sq: int = 0
    edge: list[tuple[Request, int]] = field(default_factory=list)


@dataclass(slots=True)
class _WaitingShadow:
    """What phase 1's shadow of the online waiting queues leaves (`_shadow_waiting`)."""

    tokens_left: int
    slots_left: int
    kv_need: int  # KV blocks online work needs this step, the started prompts included
    started: int  # online prompts the base method will start
    cut: Request | None  # the prompt the online prefill cap cut short, if any


class HyGenScheduler(Scheduler):
    """Online-first scheduler that fills each iteration with offline work up to a budget."""

    # Per-step shortcuts with the same decisions and records (the steady-state step, bulk
    # offline decodes in phase 2, the step record from the plan when the base ran it):
    # off in a test that runs both ways and compares every step.
    fast_paths = True

    def __new__(cls, *args: Any, **kwargs: Any) -> HyGenScheduler:
        # One class name for users: under async scheduling build the AsyncScheduler
        # binding (Python then runs its __init__, as it is a subclass).
        if cls is HyGenScheduler and _async_scheduling(args, kwargs):
            cls = HyGenAsyncScheduler
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        extra = self.vllm_config.additional_config
        raw = extra.get("hygen", {}) if isinstance(extra, dict) else {}
        self.hygen = SchedulerSettings.model_validate(raw)
        if self.policy != SchedulingPolicy.FCFS:
            raise ValueError(
                "HyGenScheduler needs --scheduling-policy fcfs (it orders offline work itself)"
            )
        self.predictor: LatencyPredictor | None
        self.predictor, initial = _load_policy(self.hygen)
        self._control_file = (
            ControlFile(self.hygen.control_path) if self.hygen.control_path else None
        )
        self.control = initial
        self._check_control(self.control)
        self.offline_queue: OfflineQueue[Request] = OfflineQueue(
            max_bypass=self.hygen.max_bypass, max_wait_s=self.hygen.max_wait_s
        )
        self.offline_ids: set[str] = set()
        # The same requests by identity: counting them in a list hashes pointers, without
        # reading each request (cold in the CPU cache after vLLM's step).
        self._offline_reqs: set[Request] = set()
        # (running list, its length, offline requests in it, preemptions so far) when the
        # base method starts a planned step (`_offline_running`).
        self._base_running: tuple[list[Request], int, int, int] | None = None
        self.trace = StepTrace(keep=self.hygen.trace_keep, path=self.hygen.trace_path)
        # One entry per schedule() call, in order: (its output, its record or None when
        # it scheduled nothing, when schedule() returned). update_from_output() gets the
        # outputs back in the same order, one step late under async scheduling.
        self._in_flight: deque[tuple[Any, StepRecord | None, float, int]] = deque()
        self._last_result_at = 0.0
        self._status = StatusWriter(self.hygen.status_path) if self.hygen.status_path else None
        self._step = 0
        self._bucket = TokenBucket(self.control.qps if self.control.mode == "qps" else None)
        self._inside_base = False
        self._preempted_offline = 0
        self._preempted_online = 0
        self._plan: _StepPlan | None = None
        self._plan_ran = False  # the base method ran this step exactly as planned
        # The steady-state scan carried from step to step (steady_scan.py): only where
        # every decode samples one token and nothing else moves computed tokens (no
        # speculative decoding, no KV connector, which can roll them back).
        self._carry_ok = (
            self.fast_paths
            and not self.num_spec_tokens
            and self.connector is None
            and getattr(self, "num_sampled_tokens_per_step", 1) == 1
        )
        self._carry: SteadyCarry | None = None
        # Requests freed (finished, aborted) while a carry is kept: it takes them out of
        # its running list (`SteadyCarry.at`); those of the step before this one.
        self._freed: list[Request] = []
        self._freed_before: list[Request] = []
        # Prefix-cache hits with the blocks that prompts planned earlier in this step will
        # have cached when the base method starts the next one (`PrefixHits`).
        # ``_noted`` counts the phase-2 allocations noted.
        self._hits = PrefixHits(
            self.kv_cache_manager, self.connector,
            getattr(self, "dcp_world_size", 1), getattr(self, "pcp_world_size", 1),
        )  # fmt: skip
        self._noted = 0
        self._steady_step: tuple[SteadyScan, SteadyCarry | None] | None = None
        # Outputs of steps up to this one may still deliver tokens to a preempted request
        # (vLLM's stale outputs); no scan is carried until they are all back.
        self._stale_through = 0
        self._updated_through = 0
        logger.info("HyGen scheduler ready: %s, predictor=%s", self.control, self.predictor)

    # ------------------------------------------------------------ control
    def set_control(self, control: OfflineControl) -> None:
        """Change the offline budget / QPS; takes effect at the next step."""
        self._check_control(control)
        if control.mode == "qps" and (self.control.mode, self.control.qps) != ("qps", control.qps):
            self._bucket = TokenBucket(control.qps)
        self.control = control
        logger.info("offline control set to %s", control)
        self._publish_status(force=True)

    def _check_control(self, control: OfflineControl) -> None:
        if control.mode == "budget" and control.budget_ms > 0 and self.predictor is None:
            raise ValueError(
                "a non-zero offline latency budget needs a predictor: set hygen.predictor_path "
                "(fit one with `hygen-pod fit-predictor`)"
            )

    def _poll_control(self) -> None:
        if self._control_file is None:
            return
        new = self._control_file.poll()
        if self._control_file.last_error:
            logger.error("ignoring bad control file: %s", self._control_file.last_error)
        if new is not None and new != self.control:
            try:
                self.set_control(new)
            except ValueError as e:
                logger.error("ignoring control %s: %s", new, e)

    # ------------------------------------------------------- request entry
    def is_offline(self, request: Request) -> bool:
        return request.request_id in self.offline_ids

    def add_request(self, request: Request) -> None:
        sp = request.sampling_params
        if (
            sp is not None
            and request_class(sp.extra_args) == "offline"
            and request.request_id not in self.requests
        ):
            self.offline_ids.add(request.request_id)
            self._offline_reqs.add(request)
            self.requests[request.request_id] = request
            self.offline_queue.add(request.request_id, request.prompt_token_ids or (), request)
            return
        super().add_request(request)

    def _free_request(self, request: Request, delay_free_blocks: bool = False):  # type: ignore[override]
        # Every finish (stop, length, abort) passes here: forget offline bookkeeping.
        if request.request_id in self.offline_ids:
            self.offline_queue.remove(request.request_id)
            self.offline_ids.discard(request.request_id)
            self._offline_reqs.discard(request)
        if self._carry is not None:
            self._freed.append(request)
        return super()._free_request(request, delay_free_blocks=delay_free_blocks)

    def _preempt_request(self, request: Request, timestamp: float, **kw: Any) -> None:
        super()._preempt_request(request, timestamp, **kw)
        self._carry = None
        self._stale_through = self._step
        if self.is_offline(request):
            self._preempted_offline += 1
            self.waiting.remove_request(request)
            self.offline_queue.push_front(request.request_id, request)
        else:
            self._preempted_online += 1

    def get_request_counts(self) -> tuple[int, int]:
        if self._inside_base and self.offline_ids:
            # The base method sizes its long-prefill cap from these (at its start) and
            # its prefill-throttling state (at its end): show it the live online view,
            # so phase 1 matches stock vLLM serving online work alone.
            off = self._offline_reqs.__contains__
            running = len(self.running) - self._offline_running(off)
            waiting = len(self.waiting) - sum(map(off, self.waiting))
            return running, waiting + len(self.kv_holding_waiting)
        running, waiting = super().get_request_counts()
        if self._inside_base:
            return running, waiting
        return running, waiting + len(self.offline_queue)

    def _offline_running(self, off: Any) -> int:
        """Offline requests in the running list while the base method runs: the count it
        started with plus those it appended since (it only appends and, when it preempts,
        deletes), without reading the whole list twice a step."""
        at_start = self._base_running
        if at_start is not None:
            lst, length, offline, preempted = at_start
            if (
                self.running is lst
                and len(lst) >= length
                and self._preempted_offline + self._preempted_online == preempted
            ):
                return offline + sum(map(off, lst[length:]))
        return sum(map(off, self.running))

    # ------------------------------------------------------------ schedule
    def schedule(self, throttle_prefills: bool = False):  # type: ignore[override]
        self._poll_control()
        self._step += 1
        self._preempted_offline = self._preempted_online = 0
        self._progress_step = False
        self._plan = None
        self._plan_ran = False
        self._steady_step = None
        self._freed_before, self._freed = self._freed, []
        self._hits.clear()
        self._noted = 0
        if not self.offline_ids and self.control.online_prefill_cap is None:
            out = self._call_base(throttle_prefills)
        else:
            out = self._schedule_two_phase(throttle_prefills)
        rec = self._record(out)
        self._carry_steady()
        if not out.total_num_scheduled_tokens and self.offline_ids:
            # Offline work is pending (queued or held) but may not run (budget 0, QPS
            # gap): vLLM's busy
            # loop would spin on empty steps. Yield briefly; online arrivals are picked
            # up right after this step returns.
            time.sleep(_IDLE_SLEEP_S)
        self._in_flight.append((out, rec, time.perf_counter(), self._step))
        return out

    def _carry_steady(self) -> None:
        """After a steady-state step that ran as planned, keep its scan for the next step
        (`SteadyCarry`, which takes in the requests it started); otherwise the next step
        scans again."""
        done, self._steady_step = self._steady_step, None
        if done is None or not self._plan_ran or self._updated_through < self._stale_through:
            return
        scan, carry = done
        if carry is None:
            carry = SteadyCarry.start(
                scan, self._step, self.block_size, self.num_lookahead_tokens,
                self.max_model_len, self.offline_ids,
            )  # fmt: skip
        if carry is not None and carry.ran(self._step, self.running, scan):
            self._carry = carry

    def _call_base(self, throttle_prefills: bool):
        """Run the stock schedule(), showing it the online (running, waiting) counts."""
        self._inside_base = True
        try:
            return super().schedule(throttle_prefills)
        finally:
            self._inside_base = False

    def _long_prefill_cap(self, num_eligible: int) -> int:
        cap = self.scheduler_config.long_prefill_token_threshold if num_eligible > 1 else 0
        if cap > 0 and self.adaptive_long_prefill_threshold:
            cap = max(cap, self.scheduler_config.max_num_batched_tokens // num_eligible)
        return cap

    def _held_blocks(self, request: Request) -> int:
        # The coordinator's block lists, not get_block_ids(): that copies every id, and
        # this runs for each running request every step (the overhead bench's top cost).
        blocks = self.kv_cache_manager.coordinator.get_blocks(request.request_id)
        return len(blocks[0]) if blocks else 0

    # A running request holds KV blocks for at least its computed tokens, cdiv(computed,
    # bs). Where that lower bound covers what a step needs, it stands in for the real
    # count: every KV decision (blocks to add, blocks short, tokens that fit) is the same
    # for any count that covers the need, and most decodes are mid-block. The hot loops
    # (phase 1's shadow, `_split_wants`) read the real count (`_held_blocks`) only where
    # the bound falls short ("the covering count").

    def _start_tokens(self, request: Request) -> int:
        """Tokens whose KV must be free for the base method to start ``request``: with
        vLLM's scheduler_reserve_full_isl (the default) its whole sequence, else 0 (only
        the step's chunk)."""
        if self.scheduler_reserve_full_isl:
            return min(request.num_tokens, self.max_model_len)
        return 0

    def _cached_tokens(self, request: Request) -> int:
        """Tokens the base method will find computed for ``request``: its own, or its
        prefix-cache hit counted as ``get_computed_blocks`` counts it (vLLM 0.32 and 0.33),
        but without that method's side effects: with KV cache events in "full" report mode
        it emits a BlockStored event per hit, and this lookup is HyGen's, not a start.
        Blocks that prompts planned earlier in this step will have cached by the time the
        base method reaches ``request`` count as hits (`PrefixHits.note`): prompts that
        share a prefix and start in the same step run as their suffixes, and are planned so."""
        if request.num_computed_tokens:
            return request.num_computed_tokens
        if not self.kv_cache_manager.prefix_cache_lookup_enabled(request):
            return 0
        return self._hits.tokens(request)

    def _is_decode(self, r: Request) -> bool:
        """Past its prompt (and any recompute after preemption): one token a step."""
        return r.num_computed_tokens >= r.num_prompt_tokens and (
            r.num_tokens_with_spec + r.num_output_placeholders - r.num_computed_tokens
            <= 1 + len(r.spec_token_ids)
        )

    def _schedule_two_phase(self, throttle_prefills: bool):
        if self.fast_paths:
            out = self._schedule_steady(throttle_prefills)
            if out is not None:
                return out
            self._hits.clear()  # what the steady attempt noted, if it fell back
            self._noted = 0
        bs = self.block_size
        running = self.running
        n_offline = sum(map(self._offline_reqs.__contains__, running))
        online_waiting = len(self.waiting) + len(self.kv_holding_waiting)
        cap = self._long_prefill_cap(len(running) - n_offline + online_waiting)
        online_run, online_want, offline_run, offline_want, decodes = self._split_wants(
            running, cap
        )
        stock_tokens = self.max_num_scheduled_tokens
        partial_ok = bool(self.scheduler_config.enable_chunked_prefill)
        plan: dict[str, int] = {}  # request id -> tokens this step, as planned
        planned_prefills: list[str] = []  # planned items `_record` recomputes from the step

        # --- The online prefill cap (policy/online_chunk.py): in a step with online
        # decodes, decodes go first and online prefills share the cap in order; the
        # one cut short runs last, and those after it wait (hidden from the base).
        ocap = self.control.online_prefill_cap
        decoding = {r for r in online_run if self._is_decode(r)} if ocap is not None else set()
        chunk = OnlinePrefillCap(ocap, bool(decoding))
        if chunk.active:
            order = sorted(range(len(online_run)), key=lambda i: online_run[i] not in decoding)
            online_run = [online_run[i] for i in order]
            online_want = [online_want[i] for i in order]
        hidden_online: list[Request] = []
        hidden_wait: list[tuple[Any, Request]] = []  # (its queue, request)
        cut: Request | None = None

        # --- Phase 1 shadow: what the base method will give online work.
        online = BatchShape()
        tokens_left = stock_tokens
        kv_need = 0
        # Hot loop (every online request, every step): the decode case is inlined, and a
        # request's KV blocks are looked up only when it may need a new one: it holds
        # at least cdiv(computed, bs), and when that covers the need no block is short
        # (the covering count, above `_start_tokens`).
        held, lookahead = self._held_blocks, self.num_lookahead_tokens
        nd = ctx = ctx2 = 0
        for r, want in zip(online_run, online_want, strict=True):
            n = want if want < tokens_left else tokens_left
            if n <= 0:
                continue
            comp = r.num_computed_tokens
            if n == 1 and comp >= r.num_prompt_tokens and (not chunk.active or r in decoding):
                nd += 1
                ctx += comp + 1
                ctx2 += (comp + 1) * (comp + 1)
                plan[r.request_id] = 1
            else:
                if chunk.active and r not in decoding:
                    got = chunk.grant(n, partial_ok)
                    if got <= 0:
                        hidden_online.append(r)
                        continue
                    if got < n:
                        cut = r
                    n = got
                online.add(n, comp, r.num_prompt_tokens)
                plan[r.request_id] = n
                planned_prefills.append(r.request_id)
                self._hits.note(r, comp, n)
            need = -(-(comp + n + lookahead) // bs)
            if need > -(-comp // bs):
                kv_need += max(0, need - held(r))
            tokens_left -= n
        online.add_decodes(nd, ctx, ctx2)
        slots_left = (
            self.max_num_active_reqs - len(online_run) - self.num_waiting_for_streaming_input
        )
        pool = self.kv_cache_manager.block_pool
        free_now = pool.get_num_free_blocks() - self.kv_cache_manager.watermark_blocks
        wait = self._shadow_waiting(
            chunk, cap, partial_ok, online, plan, planned_prefills, hidden_wait,
            tokens_left, slots_left, kv_need, free_now, offline_run,
        )  # fmt: skip
        tokens_left, slots_left, kv_need = wait.tokens_left, wait.slots_left, wait.kv_need
        online_wait_sched = wait.started
        if wait.cut is not None:
            cut = wait.cut
        online_tokens = stock_tokens - tokens_left

        # --- KV for online first: preempt offline (newest first) if short.
        free = free_now
        now = time.monotonic()
        if free < kv_need and offline_run:
            while free < kv_need and offline_run:
                victim = offline_run[-1]
                free += self._held_blocks(victim)
                self._preempt_offline(victim, offline_run, now)
            del offline_want[len(offline_run) :]  # the victims were the newest, at its end
            decodes = None  # the victims are in its sums

        # --- Phase 2: admit offline work.
        # Online-only needs no predictor: nothing offline is offered at all.
        budget_s = None if self.control.online_only else self._budget_s()
        budget_s = step_budget(budget_s, self.control.yield_to_prompts, online, online_waiting)
        admitter = Admitter(
            self.predictor if budget_s is not None else None,
            online,
            Limits(
                budget_s=budget_s,
                tokens=tokens_left,
                free_blocks=max(0, free - kv_need),
                slots=max(0, slots_left),
                block_size=bs,
                # a partial offline chunk must be the step's last item; so must a cut
                # online chunk, which then wins
                allow_partial=online_wait_sched == 0 and not chunk.cut,
            ),
            fast_decodes=self.fast_paths,
        )
        admitted_run: list[Request] = []
        admitted_wait: list[Request] = []
        self._progress_step = False
        bulk = 0  # running offline decodes admitted at once (not in the admitter's allocations)
        if not self.control.online_only:
            engine_idle = online_tokens == 0 and online_waiting == 0

            def evict(victim: Request) -> int:
                # Newer offline work gives its KV to older offline work (recompute later).
                before = pool.get_num_free_blocks()
                self._preempt_offline(victim, offline_run, now)
                return pool.get_num_free_blocks() - before

            # Every running offline request decodes and all fit: admitted at once.
            if decodes is not None and self._admit_all_decodes(
                admitter, decodes.reqs, decodes.total, decodes.total_sq, decodes.edge
            ):
                bulk = len(decodes.reqs)
                plan.update((r.request_id, 1) for r in decodes.reqs)
                nd, ctx, ctx2 = nd + bulk, ctx + decodes.total, ctx2 + decodes.total_sq
            got = fill_offline(
                admitter,
                self._running_candidates(offline_run, offline_want) if not bulk else [],
                evict,
                self.offline_queue,
                lambda r: self._waiting_candidate(r, cap, admitter),
                bucket=self._bucket if self.control.mode == "qps" else None,
                # (admitted decodes rule out a progress chunk)
                progress_chunk=bs if budget_s is not None and engine_idle and not bulk else None,
                start_new=not chunk.cut,
            )
            admitted_run = got.running
            admitted_wait = got.started
            self._progress_step = got.progress
        granted = bulk + admitter.granted_tokens
        if self.fast_paths:
            self._plan = self._step_plan(
                plan, planned_prefills, (nd, ctx, ctx2), admitter, online_tokens, granted, bulk
            )

        # --- Arrange the queues for the base method.
        if bulk and decodes is not None:
            admitted_run, idle = decodes.reqs, decodes.idle
        else:
            admitted = set(admitted_run)
            idle = [r for r in offline_run if r not in admitted]
        room = max(0, admitter.slots)
        shown = [r for r in online_run if r is not cut and r not in hidden_online]
        tail = [cut] if cut is not None and cut in online_run else []
        return self._run_arranged(
            throttle_prefills, shown, admitted_run, idle[:room], tail, admitted_wait,
            hidden_wait, hidden_online + idle[room:], online_tokens + granted,
        )  # fmt: skip

    def _shadow_waiting(
        self,
        chunk: OnlinePrefillCap,
        cap: int,
        partial_ok: bool,
        online: BatchShape,
        plan: dict[str, int],
        planned_prefills: list[str],
        hidden_wait: list[tuple[Any, Request]],
        tokens_left: int,
        slots_left: int,
        kv_need: int,
        free_now: int,
        offline_run: list[Request],
    ) -> _WaitingShadow:
        """Phase 1's shadow of the online waiting queues (KV-holding first, then waiting):
        which prompts the base method will start, and with how many tokens, after the
        running online work took ``tokens_left``, ``slots_left`` and ``kv_need`` blocks.
        Adds each to ``online``, ``plan`` and ``planned_prefills``; those the online
        prefill cap holds back go to ``hidden_wait``. Changes no scheduler state."""
        bs = self.block_size
        online_wait_sched = 0
        cut: Request | None = None
        reclaimable: int | None = None  # free blocks once all offline KV is freed
        for queue, r in itertools.chain(
            ((self.kv_holding_waiting, r) for r in self.kv_holding_waiting),
            ((self.waiting, r) for r in self.waiting),
        ):
            if chunk.stopped:
                hidden_wait.append((queue, r))
                continue
            if tokens_left <= 0 or slots_left <= 0:
                break
            if self._is_blocked_waiting_status(r.status) or r in self.deferred_waiting:
                continue
            cached = self._cached_tokens(r)
            n = r.num_tokens - cached
            if cap:
                n = min(n, cap)
            n = min(n, tokens_left)
            if n <= 0:
                continue
            got = chunk.peek(n, partial_ok)
            if got <= 0:
                chunk.grant(n, partial_ok)  # records that online prefills stop here
                hidden_wait.append((queue, r))
                continue
            blocks = cdiv(cached + got, bs)  # conservative: its cached blocks count as new
            # The base admits a new request only if its KV fits, and with vLLM's
            # scheduler_reserve_full_isl (the default) only if its whole prompt fits: free
            # that much (below), and stop where the base would stop even with every
            # offline block freed, or a long prompt would hold the step's tokens forever.
            full = cdiv(self._start_tokens(r), bs)
            blocks, fits = max(blocks, full), max(blocks, full) - cached // bs
            if kv_need + fits > free_now:  # free blocks alone are short: count the rest
                if reclaimable is None:
                    reclaimable = free_now + sum(self._held_blocks(o) for o in offline_run)
                if kv_need + fits > reclaimable:
                    break
            if chunk.grant(n, partial_ok) < n:
                cut = r
            n = got
            online.add(n, cached, r.num_prompt_tokens)
            plan[r.request_id] = n
            planned_prefills.append(r.request_id)
            self._hits.note(r, cached, n)
            kv_need += blocks
            tokens_left -= n
            slots_left -= 1
            online_wait_sched += 1
        return _WaitingShadow(tokens_left, slots_left, kv_need, online_wait_sched, cut)

    def _schedule_steady(self, throttle_prefills: bool):
        """The steady state, with the general method's decisions at a fraction of its cost:
        every running request decodes one token, the KV cache has room for every decode
        and every online prompt the base method will start, and every running offline
        decode fits the step (budget, tokens, slots, blocks). Then phase 1 gives each
        online decode its token and phase 2 admits every running offline decode, so both
        are worked out from one pass over the running list (`steady_scan`, or carried from
        the last step); online prompts that wait are planned as the general method plans
        them (`_shadow_waiting`), and the offline queue's head is then offered as usual.
        Returns None, having changed nothing, when any condition fails (the general method
        runs).

        Exactness: a decode's want, KV need and cost are the general method's formulas;
        phase 2's per-candidate budget check passes for all of them exactly when it passes
        for the last (costs are non-negative, so the running sum never falls), and near
        the budget that sum is accumulated in the same order (`_admit_all_decodes`). The
        shortcut test compares both."""
        if self.num_waiting_for_streaming_input:
            return None
        control = self.control
        if control.online_only or not self.offline_ids:
            return None
        running = self.running
        bs, lookahead = self.block_size, self.num_lookahead_tokens
        carry, self._carry = self._carry, None
        scan = carry.at(self._step, running, self._freed_before) if carry is not None else None
        if scan is None:
            carry = None
            scan = steady_scan(running, self.offline_ids, bs, lookahead, self.max_model_len)
            if scan is None:
                return None
        online_run, offline_run = scan.online_run, scan.offline_run
        n_on, n_off = len(online_run) - scan.online_idle, len(offline_run)  # decodes
        if not n_off:
            return None
        stock_tokens = self.max_num_scheduled_tokens
        slots = self.max_num_active_reqs - len(online_run)
        if n_on + n_off > stock_tokens or n_off > slots:
            return None
        held = self._held_blocks
        kv_need = 0
        for r, c in scan.online_edge:  # as the general method's shadow
            kv_need += max(0, (c + lookahead + bs) // bs - held(r))
        pool = self.kv_cache_manager.block_pool
        free = pool.get_num_free_blocks() - self.kv_cache_manager.watermark_blocks
        on_sum, on_sq = scan.on_sum, scan.on_sq
        online = BatchShape()
        online.add_decodes(n_on, on_sum, on_sq)
        plan, prefills = scan.plan, []
        hidden_wait: list[tuple[Any, Request]] = []
        online_waiting = len(self.waiting) + len(self.kv_holding_waiting)
        # as the general method sizes it
        cap = self._long_prefill_cap(len(online_run) + online_waiting)
        tokens_left = stock_tokens - n_on
        budget_s = self._budget_s()
        cut = False  # the online prefill cap cut a prompt: it is the step's last item
        started = 0
        if online_waiting:  # as the general method's phase 1, then its step budget
            chunk = OnlinePrefillCap(control.online_prefill_cap, bool(online_run))
            wait = self._shadow_waiting(
                chunk, cap, bool(self.scheduler_config.enable_chunked_prefill), online, plan,
                prefills, hidden_wait, tokens_left, slots, kv_need, free, offline_run,
            )  # fmt: skip
            tokens_left, slots, kv_need, started = (
                wait.tokens_left, wait.slots_left, wait.kv_need, wait.started,
            )  # fmt: skip
            cut = chunk.cut
            budget_s = step_budget(budget_s, control.yield_to_prompts, online, online_waiting)
        if kv_need > free:
            return None  # offline work must give way: the general method preempts
        limits = Limits(
            budget_s=budget_s,
            tokens=tokens_left,
            free_blocks=max(0, free - kv_need),
            slots=max(0, slots),
            block_size=bs,
            allow_partial=started == 0 and not cut,
        )
        admitter = Admitter(self.predictor if budget_s is not None else None, online, limits)
        if admitter.closed:
            return None
        off_sum, off_sq = scan.off_sum, scan.off_sq
        if not self._admit_all_decodes(admitter, offline_run, off_sum, off_sq, scan.offline_edge):
            return None
        # --- Committed: every running request runs its decode.
        got = fill_offline(
            admitter,
            [],
            lambda ref: 0,  # no running candidates: nothing to evict
            self.offline_queue,
            lambda r: self._waiting_candidate(r, cap, admitter),
            bucket=self._bucket if control.mode == "qps" else None,
            progress_chunk=None,  # offline decodes were admitted
            start_new=not cut,
        )
        self._progress_step = False
        granted = n_off + admitter.granted_tokens
        online_tokens = stock_tokens - tokens_left
        if self._carry_ok:
            self._steady_step = (scan, carry)
        self._plan = self._step_plan(
            plan, prefills, (n_on + n_off, on_sum + off_sum, on_sq + off_sq), admitter,
            online_tokens, granted, bulk=n_off,
        )  # fmt: skip
        idle, room = scan.offline_idle, max(0, admitter.slots)
        return self._run_arranged(
            throttle_prefills, online_run, offline_run, idle[:room], [], got.started,
            hidden_wait, idle[room:], online_tokens + granted,
        )  # fmt: skip

    def _run_arranged(
        self,
        throttle_prefills: bool,
        shown: list[Request],
        admitted_run: list[Request],
        visible_idle: list[Request],
        tail: list[Request],
        admitted_wait: list[Request],
        hidden_wait: list[tuple[Any, Request]],
        hidden: list[Request],
        tokens: int,
    ):
        """Run the base method on the planned step, then put everything back.

        The running list is: online work ``shown``, admitted offline requests, idle
        offline ones it may see but not schedule (victims for its preemption; the free
        request slots), and ``tail`` (a cut online chunk, which gets exactly what is
        left). Admitted queued requests join the waiting queue; ``hidden_wait`` leave
        theirs for the step, and ``hidden`` running requests stay out of its sight. The
        step's token budget is ``tokens``: online plus granted offline."""
        stock_tokens = self.max_num_scheduled_tokens
        saved_eligible = [(r, r.next_decode_eligible_step) for r in visible_idle]
        for r in visible_idle:
            r.next_decode_eligible_step = _NEVER
        self.running = shown + admitted_run + visible_idle + tail
        for r in admitted_wait:
            self.waiting.add_request(r)
        for queue, r in hidden_wait:
            queue.remove_request(r)
        self.max_num_scheduled_tokens = tokens
        self._base_running = (
            self.running, len(self.running), len(admitted_run) + len(visible_idle),
            self._preempted_offline + self._preempted_online,
        )  # fmt: skip
        try:
            out = self._call_base(throttle_prefills)
        finally:
            self._base_running = None
            self.max_num_scheduled_tokens = stock_tokens
            for r, step in saved_eligible:
                r.next_decode_eligible_step = step
            for queue, r in hidden_wait:  # a suffix of its queue: appending keeps order
                queue.add_request(r)
            self.running.extend(hidden)
            # Admitted offline requests the base method did not start go back first.
            for r in admitted_wait:
                if (
                    r.status in (RequestStatus.WAITING, RequestStatus.PREEMPTED)
                    and r in self.waiting
                ):
                    self.waiting.remove_request(r)
                    self.offline_queue.push_front(r.request_id, r)
        return out

    def _preempt_offline(self, victim: Request, offline_run: list[Request], now: float) -> None:
        """Preempt a running offline request while planning a step (back to its queue)."""
        offline_run.remove(victim)
        self.running.remove(victim)
        self._preempt_request(victim, now)

    def _split_wants(
        self, running: list[Request], cap: int
    ) -> tuple[list[Request], list[int], list[Request], list[int], OfflineDecodes | None]:
        """Running requests split into online and offline, each with the tokens it would
        compute this step as the base method counts them (capped by the long-prefill cap
        and the model length), in parallel lists, in one pass. With the shortcuts on and
        every offline request a plain decode (one token past its prompt), also their
        context sums for admitting them all at once (`_admit_all_decodes`)."""
        online, online_want, offline, offline_want = [], [], [], []
        offline_ids = self.offline_ids
        max_len = self.max_model_len - 1
        bs, lookahead = self.block_size, self.num_lookahead_tokens
        dec = OfflineDecodes() if self.fast_paths else None
        for r in running:
            comp, ph = r.num_computed_tokens, r.num_output_placeholders
            if ph > 0 and comp + 2 - ph >= r.num_prompt_tokens + r.max_tokens:
                n = 0  # async: its last token is in flight; the base skips it
            else:
                n = r.num_tokens_with_spec + ph - comp
                if cap and n > cap:
                    n = cap
                if n >= max_len - comp:
                    n = max_len - comp
            if r.request_id in offline_ids:
                offline.append(r)
                offline_want.append(n)
                if dec is not None:
                    if n <= 0:
                        dec.idle.append(r)
                    elif n != 1 or comp < r.num_prompt_tokens:
                        dec = None
                    else:  # as `steady_scan`
                        x = comp + 1
                        dec.reqs.append(r)
                        dec.total += x
                        dec.total_sq += x * x
                        if (comp + lookahead + bs) // bs > (comp + bs - 1) // bs:
                            dec.edge.append((r, comp))
            else:
                online.append(r)
                online_want.append(n)
        return online, online_want, offline, offline_want, dec

    def _running_candidates(
        self, offline_run: list[Request], wants: list[int]
    ) -> list[OfflineCandidate]:
        """Running offline requests that have work (phase 2 orders them), each with a
        block count that covers what it wants (the covering count)."""
        bs, lookahead, held = self.block_size, self.num_lookahead_tokens, self._held_blocks
        cands = []
        for r, n in zip(offline_run, wants, strict=True):
            if n > 0:
                comp = r.num_computed_tokens
                have = -(-comp // bs)
                cands.append(
                    OfflineCandidate(
                        r,
                        comp,
                        n,
                        r.num_prompt_tokens,
                        have if -(-(comp + n + lookahead) // bs) <= have else held(r),
                        True,
                        (r.arrival_time, r.request_id),
                    )
                )
        return cands

    def _admit_all_decodes(
        self,
        admitter: Admitter,
        reqs: list[Request],
        total: int,
        total_sq: int,
        edge: list[tuple[Request, int]],
    ) -> bool:
        """Admit every running offline decode at once when all of them fit the step: the
        budget check passes for each exactly when it passes for the last, as costs are
        non-negative and summed in the general method's order; tokens, slots and new KV
        blocks in total. The decodes are ``reqs``, in running order, with the sums of their
        contexts (computed + 1: ``total``, ``total_sq``) and those at a block boundary
        (``edge``: request, computed tokens). Used by the steady-state step and the general
        method; else changes nothing and says so.

        The predicted time is the decodes' costs in closed form from the sums, which
        differs from `Admitter._offer`'s running sum only by rounding (relative ~1e-15):
        within `_NEAR_BUDGET` of the budget the running sum decides, over the contexts read
        from the requests, so the decision is always `_offer`'s."""
        n = len(reqs)
        if not n or admitter.closed or n > admitter.tokens or n > admitter.slots:
            return False
        # New blocks for a decode: cdiv(ctx, bs) - held; only those short of `need` (with
        # the look-ahead) may need any, and the candidate's held count is the real one.
        bs, held = self.block_size, self._held_blocks
        new_blocks = 0
        for r, c in edge:  # as `_offer`: cdiv(ctx, bs) - held
            new_blocks += max(0, (c + bs) // bs - held(r))
        if new_blocks > admitter.blocks:
            return False
        predicted = admitter.predicted
        budget_s = admitter.limits.budget_s
        if admitter.predictor is not None:
            w_nd, w_sd, w_sd2, w_icpt = admitter.predictor.decode_weights
            icpt = w_icpt if admitter.shape.empty else 0.0
            closed = predicted + (n * w_nd + w_sd * total + w_sd2 * total_sq + icpt)
            if budget_s is not None and closed > budget_s * (1 - _NEAR_BUDGET):
                # `Admitter._offer`'s sum, one decode at a time in the same order (so the
                # same float; the first carries the intercept): rare, so the contexts are
                # read from the requests here
                extra = icpt
                for r in reqs:
                    x = r.num_computed_tokens + 1
                    predicted += (w_nd + w_sd * x + w_sd2 * x * x) + extra
                    extra = 0.0
                if predicted > budget_s:
                    return False
            else:
                predicted = closed
        admitter.add_admitted_decodes(n, total, total_sq, new_blocks, predicted)
        return True

    def _waiting_candidate(self, r: Request, cap: int, admitter: Admitter) -> OfflineCandidate:
        # the prompt chunks admitted before it cache their blocks before the base starts it
        if self._hits.same_step:
            allocations = admitter.allocations
            for c, n in allocations[self._noted :]:
                if not c.running or c.computed < c.num_prompt_tokens:
                    self._hits.note(c.ref, c.computed, n)
            self._noted = len(allocations)
        cached = self._cached_tokens(r)
        wanted = r.num_tokens - cached
        return OfflineCandidate(
            ref=r,
            computed=cached,
            wanted=min(wanted, cap) if cap else wanted,
            num_prompt_tokens=r.num_prompt_tokens,
            held_blocks=0,  # conservative: count its cached blocks as new
            running=False,
            start_tokens=self._start_tokens(r),
        )

    def _budget_s(self) -> float | None:
        if self.control.mode == "budget":
            return self.control.budget_ms / 1000.0
        return None

    # -------------------------------------------------------------- trace
    def _step_plan(
        self,
        plan: dict[str, int],
        prefills: list[str],
        online_decodes: tuple[int, int, int],
        admitter: Admitter,
        online_tokens: int,
        offline_tokens: int,
        bulk: int = 0,
    ) -> _StepPlan:
        """What phase 1 and phase 2 planned for this step, for `_record`: ``plan`` holds
        the online items and ``bulk`` running offline decodes (one token each, in the
        ``decodes`` sums, not in the admitter's allocations: `_schedule_steady`);
        ``offline_tokens`` is every offline token granted."""
        online_reqs = len(plan) - bulk
        nd, ctx, ctx2 = online_decodes
        for c, n in admitter.allocations:
            rid = c.ref.request_id
            plan[rid] = n
            if c.running and n == 1 and c.computed >= c.num_prompt_tokens:
                nd += 1
                ctx += c.computed + 1
                ctx2 += (c.computed + 1) * (c.computed + 1)
            else:
                prefills.append(rid)
        return _StepPlan(
            plan, prefills, nd, ctx, ctx2, online_tokens, online_reqs, offline_tokens,
            len(admitter.allocations) + bulk,
        )  # fmt: skip

    def _record(self, out) -> StepRecord | None:
        """The step's record; an empty step is traced at once, a non-empty one is
        returned to be timed when its output comes back."""
        shape = BatchShape()
        requests, add = self.requests, shape.add
        plan, self._plan = self._plan, None
        if plan is not None and out.num_scheduled_tokens == plan.tokens:
            self._plan_ran = True
            # The base method ran exactly the plan: the decodes' sums are the planned ones
            # (running requests, whose computed tokens the plan read), and the few other
            # items are read back from the requests, as below.
            for rid in plan.prefills:
                n, r = plan.tokens[rid], requests[rid]
                add(n, r.num_computed_tokens - n, r.num_prompt_tokens)
            shape.add_decodes(plan.decodes, plan.decode_context, plan.decode_context_sq)
            off_tokens, off_reqs = plan.offline_tokens, plan.offline_reqs
            on_tokens, on_reqs = plan.online_tokens, plan.online_reqs
        else:
            offline_ids = self.offline_ids
            off_tokens = off_reqs = on_tokens = on_reqs = nd = ctx = ctx2 = 0
            for rid, n in out.num_scheduled_tokens.items():
                r = requests[rid]
                comp = r.num_computed_tokens - n
                if n == 1 and comp >= r.num_prompt_tokens:  # a decode (BatchShape.add, inlined)
                    nd += 1
                    ctx += comp + 1
                    ctx2 += (comp + 1) * (comp + 1)
                else:
                    add(n, comp, r.num_prompt_tokens)
                if rid in offline_ids:
                    off_tokens += n
                    off_reqs += 1
                else:
                    on_tokens += n
                    on_reqs += 1
            shape.add_decodes(nd, ctx, ctx2)
        empty = shape.empty
        # A plain dataclass (1.8 us): the trace validates it as a document when written.
        rec = StepRecord(
            step=self._step,
            mode=self.control.mode,
            online_tokens=on_tokens,
            offline_tokens=off_tokens,
            online_reqs=on_reqs,
            offline_reqs=off_reqs,
            shape=shape.as_dict(),
            budget_s=self._budget_s(),
            predicted_s=(
                self.predictor.predict(shape) if self.predictor is not None and not empty else None
            ),
            progress=self._progress_step,
            offline_preempted=self._preempted_offline,
            online_preempted=self._preempted_online,
            online_waiting=len(self.waiting),
            offline_waiting=len(self.offline_queue),
        )
        if rec.over_budget:
            logger.warning("step %d over budget: %s", self._step, rec)
            if self._status is not None:
                self._status.over_budget_steps += 1
        if empty:
            self.trace.append(rec)
            return None
        return rec

    def update_from_output(self, scheduler_output, model_runner_output):  # type: ignore[override]
        now = time.perf_counter()
        if self._carry is not None:
            # The carry assumes each decode got exactly one token (n outputs, n tokens).
            n = len(scheduler_output.num_scheduled_tokens)
            sampled = model_runner_output.sampled_token_ids
            if len(sampled) != n or sum(map(len, sampled)) != n:
                self._carry = None
        while self._in_flight:
            sent, rec, scheduled_at, step = self._in_flight.popleft()
            self._updated_through = step
            if rec is not None:
                # The step ran from when it was scheduled or when the step before it
                # returned, whichever is later (with two batches in flight the device
                # starts this one when the previous one ends), until now.
                rec.measured_s = now - max(scheduled_at, self._last_result_at)
                self.trace.append(rec)
                if self._status is not None:
                    self._status.step_timed(rec.predicted_s, rec.measured_s)
            if sent is scheduler_output:
                break
        self._last_result_at = now
        out = super().update_from_output(scheduler_output, model_runner_output)
        self._publish_status()
        return out

    def _publish_status(self, force: bool = False) -> None:
        if self._status is None or not (force or self._status.due()):
            return
        try:
            self._status.write(
                SchedulerStatus(
                    written_at=time.time(),
                    steps=self._step,
                    control=self.control,
                    offline_waiting=len(self.offline_queue),
                    offline_running=sum(1 for r in self.running if self.is_offline(r)),
                    over_budget_steps=self._status.over_budget_steps,
                    predictor_mape=self._status.mape,
                    control_error=self._control_file.last_error if self._control_file else None,
                )
            )
        except OSError as e:  # a full or read-only disk must not stop the engine
            logger.error("cannot write scheduler status %s: %s", self._status.path, e)

    def shutdown(self) -> None:
        self.trace.close()
        super().shutdown()


class HyGenAsyncScheduler(HyGenScheduler, AsyncScheduler):
    """HyGen over vLLM's ``AsyncScheduler`` (built by `HyGenScheduler` when the engine
    runs async scheduling).

    The policy is `HyGenScheduler`'s; ``AsyncScheduler`` adds the in-flight token
    placeholders (``num_output_placeholders``) that let a running request be scheduled
    again before its last token is back, which the phase-1 shadow and the offline
    candidates already count, and drops them on preemption.
    """


def _load_policy(settings: SchedulerSettings) -> tuple[LatencyPredictor | None, OfflineControl]:
    """Predictor and initial control from the settings (a profile, a predictor file, or none)."""
    if settings.profile_path and settings.predictor_path:
        raise ValueError("give hygen.profile_path or hygen.predictor_path, not both")
    if settings.profile_path:
        doc = ProfileDocument.load(settings.profile_path)
        predictor = LatencyPredictor.from_document(doc.predictor)
        initial = settings.initial or doc.control()
        return predictor, initial
    predictor = LatencyPredictor.load(settings.predictor_path) if settings.predictor_path else None
    return predictor, settings.initial or OfflineControl()
