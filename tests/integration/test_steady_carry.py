"""The carried steady-state scan: equal to a fresh scan, and dropped whenever it might not be."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

pytest.importorskip("vllm")

from hygen_pod.contract.control import OfflineControl
from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.vllm_adapter.scheduler import HyGenScheduler
from hygen_pod.vllm_adapter.steady_scan import SteadyCarry, SteadyScan, steady_scan
from tests.helpers.sched_harness import build, drive, model_output, requests

BS, LOOKAHEAD, MAX_LEN = 16, 0, 4096


@dataclass(eq=False)
class _Req:
    """The request fields the scan reads, decoding one token a step (sync engine)."""

    request_id: str
    num_computed_tokens: int
    num_prompt_tokens: int
    max_tokens: int
    num_output_placeholders: int = 0

    @property
    def num_tokens_with_spec(self) -> int:
        return self.num_computed_tokens + 1

    def step(self) -> None:
        self.num_computed_tokens += 1


def _fields(s: SteadyScan) -> tuple:
    """What the step uses from a scan, with edges as sets."""
    return (
        s.online_run, s.offline_run, s.plan, s.on_sum, s.on_sq, s.off_sum, s.off_sq,
        set(s.online_edge), set(s.offline_edge),
    )  # fmt: skip


def _running(n: int, seed: int) -> tuple[list[_Req], set[str]]:
    rng = random.Random(seed)
    reqs = []
    for i in range(n):
        prompt = rng.randint(10, 300)
        reqs.append(_Req(f"r{i}", prompt + rng.randint(0, 200), prompt, rng.randint(400, 900)))
    offline = {r.request_id for r in reqs if rng.random() < 0.5}
    return reqs, offline


@pytest.mark.parametrize("lookahead", [0, 3])
def test_a_carried_scan_equals_a_fresh_one_as_requests_decode_and_leave(lookahead) -> None:
    reqs, offline = _running(60, seed=lookahead)
    scan = steady_scan(reqs, offline, BS, lookahead, MAX_LEN)
    assert scan is not None
    carry = SteadyCarry.start(scan, 1, BS, lookahead, MAX_LEN, offline)
    assert carry is not None
    running = scan.online_run + scan.offline_run  # the order the step leaves
    assert carry.ran(1, running, scan)
    rng = random.Random(7)
    for step in range(2, 120):
        for r in running:
            r.step()
        freed = []
        if step % 5 == 0:  # some finish
            freed = [r for r in running if rng.random() < 0.05]
            running = [r for r in running if r not in freed]
        got = carry.at(step, running, freed)
        want = steady_scan(running, offline, BS, lookahead, MAX_LEN)
        assert got is not None and want is not None
        assert _fields(got) == _fields(want), step
        assert carry.ran(step, running, got)


@dataclass(eq=False)
class _AsyncReq(_Req):
    """A request under async scheduling: its last sampled token is in flight at each
    step's start (one placeholder), so the token list trails the computed count."""

    num_output_placeholders: int = 1

    @property
    def num_tokens_with_spec(self) -> int:
        return self.num_computed_tokens


@pytest.mark.parametrize("lookahead", [0, 3])
def test_a_carried_scan_equals_a_fresh_one_as_requests_start_finish_and_idle(
    lookahead,
) -> None:
    """A busy async server: each step some requests reach their last token (idle while it
    is in flight, gone the step after), and new ones started by the step join at the end
    of the list. Every carried step must equal a fresh scan, and the carry must survive."""
    rng = random.Random(lookahead)
    offline: set[str] = set()
    made = [0]

    def fresh() -> _AsyncReq:
        i = made[0]
        made[0] += 1
        prompt = rng.randint(10, 300)
        r = _AsyncReq(f"r{i}", prompt, prompt, rng.randint(2, 40))
        if rng.random() < 0.5:
            offline.add(r.request_id)
        return r

    running: list[_Req] = [fresh() for _ in range(40)]
    scan = steady_scan(running, offline, BS, lookahead, MAX_LEN)
    assert scan is not None
    carry = SteadyCarry.start(scan, 1, BS, lookahead, MAX_LEN, offline)
    assert carry is not None
    carried = idled = joined = 0
    for step in range(1, 200):
        assert scan is not None
        # the step: idle requests' last tokens come back (they leave), the others decode,
        # and the step starts new requests, which join the list behind the arranged ones
        idle = set(scan.offline_idle) | {
            r for r in scan.online_run if r.request_id not in scan.plan
        }
        starts = [fresh() for _ in range(rng.randint(0, 3))]
        arranged = scan.online_run + scan.offline_run + scan.offline_idle + starts
        if carry is not None:
            assert carry.ran(step, arranged, scan)
        running = [r for r in arranged if r not in idle]
        for r in running:
            if r not in starts:
                r.step()
        idled += len(idle)
        joined += len(starts)
        want = steady_scan(running, offline, BS, lookahead, MAX_LEN)
        got = carry.at(step + 1, running, list(idle)) if carry is not None else None
        assert want is not None
        if got is not None:
            carried += 1
            assert _fields(got) == _fields(want), step
            assert (got.online_idle, got.offline_idle) == (want.online_idle, want.offline_idle)
            scan = got
        else:
            carry = SteadyCarry.start(want, step + 1, BS, lookahead, MAX_LEN, offline)
            scan = want
    assert idled > 100 and joined > 100
    assert carried >= 190, carried  # only a start from a scan of idle requests may break it


def test_a_carry_refuses_what_it_cannot_derive() -> None:
    reqs, offline = _running(20, seed=3)
    scan = steady_scan(reqs, offline, BS, LOOKAHEAD, MAX_LEN)
    assert scan is not None
    carry = SteadyCarry.start(scan, 1, BS, LOOKAHEAD, MAX_LEN, offline)
    assert carry is not None
    running = scan.online_run + scan.offline_run
    assert not carry.ran(1, list(reversed(running)), scan)  # the step changed the order
    assert carry.ran(1, running, scan)
    for r in running:
        r.step()
    assert carry.at(3, running, []) is None  # a step in between did not run from it
    joined = [*running, _Req("new", 50, 50, 100)]
    assert carry.at(2, joined, []) is None  # a request joined that no step started
    assert carry.at(2, list(reversed(running)), []) is None  # the order changed
    assert carry.at(2, running[1:], []) is None  # one left without being freed
    assert carry.at(2, running, running[:1]) is None  # one freed that did not leave
    got = carry.at(2, running[1:], running[:1])  # one freed that left
    want = steady_scan(running[1:], offline, BS, LOOKAHEAD, MAX_LEN)
    assert got is not None and want is not None and _fields(got) == _fields(want)


def test_a_started_request_that_is_not_a_decode_ends_the_carry() -> None:
    reqs, offline = _running(10, seed=5)
    scan = steady_scan(reqs, offline, BS, LOOKAHEAD, MAX_LEN)
    assert scan is not None
    carry = SteadyCarry.start(scan, 1, BS, LOOKAHEAD, MAX_LEN, offline)
    assert carry is not None
    chunked = _Req("chunked", 64, 200, 100)  # its prompt only partly computed
    running = scan.online_run + scan.offline_run + [chunked]
    assert carry.ran(1, running, scan)
    for r in running:
        r.step()
    assert steady_scan(running, offline, BS, LOOKAHEAD, MAX_LEN) is None
    assert carry.at(2, running, []) is None


def test_an_idle_request_that_does_not_leave_ends_the_carry() -> None:
    """A request idle at one step (its last token in flight) finishes when the token
    comes back; if it is still there next step, the carry cannot tell what it is."""
    near = _AsyncReq("near", 110, 100, 12)  # 2 tokens left: decodes at step 2
    other = _AsyncReq("other", 100, 100, 50)
    scan = steady_scan([near, other], set(), BS, LOOKAHEAD, MAX_LEN)
    assert scan is not None and scan.online_idle == 0
    carry = SteadyCarry.start(scan, 1, BS, LOOKAHEAD, MAX_LEN, set())
    assert carry is not None and carry.ran(1, [near, other], scan)
    near.step()
    other.step()
    got = carry.at(2, [near, other], [])  # 1 token left, in flight: idle
    assert got is not None and got.online_idle == 1 and "near" not in got.plan
    assert carry.ran(2, [near, other], got)
    other.step()
    assert carry.at(3, [near, other], []) is None  # it did not finish
    got = carry.at(3, [other], [near])  # it did: the carry goes on without it
    want = steady_scan([other], set(), BS, LOOKAHEAD, MAX_LEN)
    assert got is not None and want is not None and _fields(got) == _fields(want)


def test_a_carry_ends_where_a_fresh_scan_would_stop_at_the_model_length() -> None:
    long = _Req("long", MAX_LEN - 10, 100, 1 << 20)
    scan = steady_scan([long], set(), BS, LOOKAHEAD, MAX_LEN)
    assert scan is not None
    carry = SteadyCarry.start(scan, 1, BS, LOOKAHEAD, MAX_LEN, set())
    assert carry is not None
    assert carry.ran(1, [long], scan)
    step = 1
    while True:
        long.step()
        got = carry.at(step + 1, [long], [])
        if got is None:
            break
        step += 1
        assert carry.ran(step, [long], got)
    assert steady_scan([long], set(), BS, LOOKAHEAD, MAX_LEN) is None  # it stopped in time
    long.num_computed_tokens -= 1
    assert steady_scan([long], set(), BS, LOOKAHEAD, MAX_LEN) is not None  # not too early


PREDICTOR = LatencyPredictor(["intercept", "num_decodes"], [0.001, 1e-6])


def _steady_scheduler(tiny_model) -> tuple[HyGenScheduler, list]:
    """A sync scheduler run into the steady state with a carried scan; returns it and the
    last step's (output, model output), not yet given back."""
    s = build(HyGenScheduler, tiny_model, async_scheduling=False, max_seqs=8)
    s.predictor = PREDICTOR
    s.set_control(OfflineControl(mode="budget", budget_ms=100.0))
    for r in requests(4, 40, 200, prefix="on") + requests(4, 40, 200, prefix="off", offline=True):
        s.add_request(r)
    for _ in range(30):
        out = s.schedule()
        s.update_from_output(out, model_output(s, out))
    assert s._carry is not None, "the steady state was not reached"
    out = s.schedule()
    return s, [out, model_output(s, out)]


def test_an_output_without_one_token_per_decode_drops_the_carry(tiny_model) -> None:
    s, (out, result) = _steady_scheduler(tiny_model)
    assert s._carry is not None
    result.sampled_token_ids[0] = []  # one decode came back without a token
    s.update_from_output(out, result)
    assert s._carry is None


def test_a_step_the_base_did_not_run_as_planned_is_not_carried(tiny_model, monkeypatch) -> None:
    s, (out, result) = _steady_scheduler(tiny_model)
    s.update_from_output(out, result)
    # the base method skips one request this step (as it would for, e.g., an
    # ineligible decode): its tokens differ from the plan
    skip = s.running[0]
    base = HyGenScheduler.__mro__[1].schedule

    def skipping(self, *a, **kw):
        saved = skip.next_decode_eligible_step
        skip.next_decode_eligible_step = 1 << 62
        try:
            return base(self, *a, **kw)
        finally:
            skip.next_decode_eligible_step = saved

    monkeypatch.setattr(HyGenScheduler.__mro__[1], "schedule", skipping)
    out = s.schedule()
    assert skip.request_id not in out.num_scheduled_tokens
    assert s._carry is None


def test_a_preemption_drops_the_carry_until_its_step_is_back(tiny_model) -> None:
    s, (out, result) = _steady_scheduler(tiny_model)
    s.update_from_output(out, result)
    out = s.schedule()
    assert s._carry is not None
    victim = next(r for r in s.running if s.is_offline(r))
    s.running.remove(victim)
    s._preempt_request(victim, 0.0)
    assert s._carry is None
    assert s._stale_through == s._step > s._updated_through


@pytest.mark.parametrize("async_on", [True, False], ids=["async", "sync"])
def test_the_online_counts_shown_to_the_base_method_are_exact(
    tiny_model, async_on, monkeypatch
) -> None:
    """`get_request_counts` inside the base method counts only what it appended to the
    running list since it started; each answer must equal a count of the whole list, on
    a run with arrivals, offline starts and preemptions."""
    checked = {"inside": 0, "preempted": 0}
    counts = HyGenScheduler.get_request_counts

    def checking(self: HyGenScheduler) -> tuple[int, int]:
        got = counts(self)
        if self._inside_base and self.offline_ids:
            off = self._offline_reqs.__contains__
            running = len(self.running) - sum(map(off, self.running))
            waiting = len(self.waiting) - sum(map(off, self.waiting))
            assert got == (running, waiting + len(self.kv_holding_waiting))
            checked["inside"] += 1
            checked["preempted"] += self._preempted_offline > 0
        return got

    monkeypatch.setattr(HyGenScheduler, "get_request_counts", checking)
    s = build(HyGenScheduler, tiny_model, async_scheduling=async_on, num_blocks=160)
    s.predictor = PREDICTOR
    s.set_control(OfflineControl(mode="budget", budget_ms=4.0))
    offline = requests(24, prompt=120, out=50, prefix="off", offline=True)
    online = requests(4, prompt=90, out=30, prefix="on")
    late = {k: requests(1, prompt=300 + 10 * k, out=12, prefix=f"late{k}-") for k in (5, 17, 40)}
    drive(s, online + offline, 2 if async_on else 1, arrivals=late)
    assert checked["inside"] > 100 and checked["preempted"] > 0
