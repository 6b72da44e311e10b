"""The demo's conclusion: a claim only when every round agrees and the machine is quiet."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hygen_pod.dev.demo_verdict import MARGIN, noise_problem, spread, verdict

MS = 1e-3


def test_a_clear_win_on_a_quiet_machine_is_claimed_with_its_numbers():
    v = verdict([2 * MS] * 3, [11 * MS, 12 * MS, 10 * MS], [3 * MS, 3.2 * MS, 2.9 * MS],
                [300, 310, 290], [350, 360, 340], 0.08)  # fmt: skip
    assert v.startswith("HyGen kept online P99 TBT below the no-budget run in every round")
    assert "86% of its offline work" in v and "HyGen 3.0 ms" in v and "no budget 11.0 ms" in v


def test_a_clear_loss_is_said_plainly():
    v = verdict([2 * MS] * 3, [3 * MS] * 3, [5 * MS] * 3, [1, 1, 1], [1, 1, 1], 0.05)
    assert v.startswith("HyGen did NOT lower")


def test_overlap_a_noisy_machine_or_one_round_is_inconclusive():
    mixed = verdict([2 * MS] * 3, [10 * MS, 3 * MS, 10 * MS], [3 * MS, 4 * MS, 3 * MS],
                    [1] * 3, [1] * 3, 0.05)  # fmt: skip
    assert mixed.startswith("inconclusive: HyGen and no budget overlap")
    bad_predictor = verdict([2 * MS] * 3, [10 * MS] * 3, [3 * MS] * 3, [1] * 3, [1] * 3, 0.49)
    assert bad_predictor.startswith("inconclusive on this machine") and "49%" in bad_predictor
    swinging = verdict([2 * MS, 9 * MS, 3 * MS], [10 * MS] * 3, [3 * MS] * 3, [1] * 3, [1] * 3,
                       0.05)  # fmt: skip
    assert swinging.startswith("inconclusive on this machine") and "4.5x" in swinging
    one = verdict([2 * MS], [10 * MS], [3 * MS], [1], [1], 0.05)
    assert one.startswith("inconclusive: one round")


@given(
    rounds=st.integers(1, 5).flatmap(
        lambda k: st.tuples(
            *(st.lists(st.floats(1e-4, 1.0), min_size=k, max_size=k) for _ in range(3))
        )
    ),
    mape=st.floats(0, 1),
)
def test_a_win_is_never_claimed_unless_every_round_and_the_noise_gate_agree(rounds, mape):
    online, no_budget, hygen = rounds
    v = verdict(online, no_budget, hygen, [1.0] * len(online), [1.0] * len(online), mape)
    if v.startswith("HyGen kept"):
        assert noise_problem(mape, online) is None and len(hygen) > 1
        assert all(h < MARGIN * n for h, n in zip(hygen, no_budget, strict=True))
    if v.startswith("HyGen did NOT"):
        assert all(h > n for h, n in zip(hygen, no_budget, strict=True))


def test_spread_formats_median_and_range():
    assert spread([3.0, 1.0, 2.0]).fmt(1e3, 0) == "2000 [1000-3000]"
