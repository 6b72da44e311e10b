"""The general method's decode carry: equal to reading every request, and dropped whenever
it might not be (decode_carry.py)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

pytest.importorskip("vllm")

from hygen_pod.contract.control import OfflineControl
from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.vllm_adapter.decode_carry import DecodeCarry
from hygen_pod.vllm_adapter.scheduler import HyGenScheduler
from tests.helpers.sched_harness import build, model_output, requests

BS, MAX_LEN = 16, 4096


@dataclass(eq=False)
class _Req:
    """The fields the carry reads, decoding one token a step."""

    request_id: str
    num_computed_tokens: int
    num_prompt_tokens: int
    max_tokens: int

    def decodes_one(self, max_len: int) -> bool:
        """The general method's want is one token (`_split_wants`, a token in flight)."""
        left = self.num_prompt_tokens + self.max_tokens - self.num_computed_tokens
        return left > 1 and self.num_computed_tokens < max_len - 2


def _fresh(held: list[_Req], offline: set[_Req], lookahead: int) -> tuple:
    """What the carry must give at a step, read from each request."""
    sums = [0, 0, 0, 0]
    edges: tuple[set, set] = (set(), set())
    for r in held:
        c = r.num_computed_tokens
        x, side = c + 1, int(r in offline)
        sums[2 * side] += x
        sums[2 * side + 1] += x * x
        if (c + lookahead + BS) // BS > (c + BS - 1) // BS:
            edges[side].add((r, c))
    return tuple(sums), edges


@pytest.mark.parametrize("lookahead", [0, 3])
def test_carried_decodes_equal_a_fresh_read_as_requests_join_decode_and_leave(lookahead) -> None:
    """Over 200 steps requests join at random, decode, finish early (let go) or run into
    their end or the model length (let go by their horizon): at every step the sums and
    block-boundary requests equal a fresh read of the requests held, and every request
    held decodes one token by the general method's rule."""
    rng = random.Random(lookahead)
    max_len = 1200
    carry = DecodeCarry.empty(1, BS, lookahead, max_len)
    held: list[_Req] = []
    offline: set[_Req] = set()
    running: list[_Req] = []
    k = finished = expired = 0
    for step in range(1, 201):
        before = set(carry.ctx)
        assert step == 1 or carry.usable(step)  # a new carry is used at its base step
        expired += len(before) - len(carry.ctx)
        gone = [r for r in running if rng.random() < 0.02]  # stopped early
        carry.let_go(gone)
        finished += len(gone)
        running = [r for r in running if r not in gone]
        for _ in range(rng.randint(0, 3)):  # new decodes (their prefill just ran)
            prompt = rng.randint(10, 300)
            r = _Req(f"r{k}", prompt + rng.randint(0, 900), prompt, rng.randint(2, 400))
            k += 1
            running.append(r)
        for r in running:
            joins = r not in carry.ctx and r.decodes_one(max_len)
            if joins and carry.join(r, r.num_computed_tokens, rng.random() < 0.5, step):
                offline.update([r] if r.request_id in carry.off_plan else [])
        held = [r for r in running if r in carry.ctx]
        for r in held:
            assert r.decodes_one(max_len), (step, r)
        assert carry.sums(step) == _fresh(held, offline, lookahead)[0], step
        on, off = carry.edges(step)
        assert (set(on), set(off)) == _fresh(held, offline, lookahead)[1], step
        assert set(carry.on_plan) | set(carry.off_plan) == {r.request_id for r in held}
        carry.ran(step)
        for r in running:
            r.num_computed_tokens += 1
        # a request at its end or the model length leaves (the engine finishes it)
        done = [
            r for r in running
            if r.num_computed_tokens >= min(r.num_prompt_tokens + r.max_tokens, max_len - 1)
        ]  # fmt: skip
        carry.let_go(done)
        running = [r for r in running if r not in done]
    assert finished > 0 and expired > 0 and k > 200


def test_a_carry_lets_a_request_go_at_its_horizon_not_before() -> None:
    """Held while a fresh read still gives one token; let go the step a fresh read would
    not (its last tokens, async), and at the model length."""
    for r in (_Req("end", 110, 100, 20), _Req("len", MAX_LEN - 12, 100, 1 << 20)):
        carry = DecodeCarry.empty(1, BS, 0, MAX_LEN)
        assert carry.join(r, r.num_computed_tokens, False, 1)
        carry.ran(1)
        step = 1
        while True:
            r.num_computed_tokens += 1
            step += 1
            assert carry.usable(step)
            if r not in carry.ctx:
                break
            assert r.decodes_one(MAX_LEN), step
            carry.ran(step)
        # let go with two tokens left (a fresh read decodes it once more, then its last
        # token is in flight) or two short of the model length
        left = r.num_prompt_tokens + r.max_tokens - r.num_computed_tokens
        assert (left, r.num_computed_tokens) in ((2, 118), (1 << 20, MAX_LEN - 2)) or (
            r.request_id == "len" and r.num_computed_tokens == MAX_LEN - 2
        ), (r, step)
        assert not carry.join(r, r.num_computed_tokens, False, step)


def test_a_carry_is_only_usable_at_the_step_after_the_last_it_ran() -> None:
    carry = DecodeCarry.empty(5, BS, 0, MAX_LEN)
    carry.ran(5)
    assert not carry.usable(7)
    assert carry.usable(6)


PREDICTOR = LatencyPredictor(["intercept", "num_decodes"], [0.001, 1e-6])


def _churning_scheduler(tiny_model) -> tuple[HyGenScheduler, list]:
    """A sync scheduler with online prompts arriving every step beside offline decodes, so
    each step runs the general method with a decode carry; returns it and the last
    step's (output, model output), not yet given back."""
    s = build(HyGenScheduler, tiny_model, async_scheduling=False, max_seqs=16)
    s.predictor = PREDICTOR
    s.set_control(OfflineControl(mode="budget", budget_ms=100.0))
    for r in requests(4, 40, 200, prefix="on") + requests(8, 40, 200, prefix="off", offline=True):
        s.add_request(r)
    for k in range(30):
        for r in requests(1, 40, 3, prefix=f"late{k}-"):
            s.add_request(r)
        out = s.schedule()
        s.update_from_output(out, model_output(s, out))
    assert s._decodes is not None and s._decodes.ctx, "no decode carry"
    for r in requests(1, 40, 3, prefix="last-"):
        s.add_request(r)
    out = s.schedule()
    return s, [out, model_output(s, out)]


def test_an_output_without_one_token_per_decode_drops_the_decode_carry(tiny_model) -> None:
    s, (out, result) = _churning_scheduler(tiny_model)
    assert s._decodes is not None
    held = s._decodes.ctx
    i = next(i for i, rid in enumerate(result.req_ids) if s.requests[rid] in held)
    result.sampled_token_ids[i] = []  # one held decode came back without a token
    s.update_from_output(out, result)
    assert s._decodes is None


def test_the_right_output_keeps_the_decode_carry(tiny_model) -> None:
    s, (out, result) = _churning_scheduler(tiny_model)
    s.update_from_output(out, result)
    assert s._decodes is not None


def test_a_held_request_that_left_other_than_by_finishing_refuses_the_carry(
    tiny_model,
) -> None:
    """A held request missing from the running list without a finish: the general
    method reads every request again (the carry's sums would count it)."""
    s, (out, result) = _churning_scheduler(tiny_model)
    s.update_from_output(out, result)
    carry = s._decodes
    assert carry is not None
    held = next(r for r in s.running if r in carry.ctx)
    s.running.remove(held)  # not through _free_request
    assert s._split_carried(carry, s.running, 0, 1 << 20) is None
