"""What the demo may conclude from its rounds: medians with their spread, and one line.

A shared laptop's CPU can make any policy look better or worse than it is. The demo runs
every policy once per round, in rotated order, so a load drift hits them alike; it claims
a winner only when every round agrees by a clear margin and the machine's own noise
(predictor error, online-only P99 spread) is low enough to tell. Otherwise it says
"inconclusive" and why: never a ranking the numbers do not carry.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MAX_MAPE = 0.25  # predictor error on held-out steps above which budgets are guesses
MAX_SPREAD = 1.5  # online-only P99 TBT max/min over rounds above which tails are noise
MARGIN = 0.8  # a round counts for HyGen when its P99 TBT is below 0.8x no-budget's


@dataclass(frozen=True)
class Spread:
    """Median and range of one metric over the rounds."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def ratio(self) -> float:
        """max / min (1.0 = no spread)."""
        lo = min(self.values)
        return max(self.values) / lo if lo > 0 else float("inf")

    def fmt(self, scale: float = 1.0, digits: int = 1) -> str:
        """ "12.3 [10.1-14.0]": the median and the range, scaled (e.g. 1e3 for ms)."""
        m, lo, hi = (v * scale for v in (self.median, min(self.values), max(self.values)))
        return f"{m:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("no rounds")
    return Spread(tuple(values))


def noise_problem(predictor_mape: float, online_only_p99_tbt: Sequence[float]) -> str | None:
    """Why this machine is too noisy to rank policies, or None."""
    s = spread(online_only_p99_tbt)
    if predictor_mape > MAX_MAPE:
        return (
            f"the step-time predictor is off by {predictor_mape:.0%} on held-out steps "
            f"(> {MAX_MAPE:.0%}): step times swing with other load"
        )
    if len(s.values) > 1 and s.ratio > MAX_SPREAD:
        return (
            f"online alone, P99 TBT ranged {min(s.values) * 1e3:.1f}-{max(s.values) * 1e3:.1f} "
            f"ms over the rounds ({s.ratio:.1f}x > {MAX_SPREAD:.1f}x)"
        )
    return None


def verdict(
    online_only: Sequence[float],
    no_budget: Sequence[float],
    hygen: Sequence[float],
    hygen_offline_tps: Sequence[float],
    no_budget_offline_tps: Sequence[float],
    predictor_mape: float,
) -> str:
    """One line: does HyGen keep online P99 TBT below offline-without-budget's, and at what
    share of its offline throughput? Arguments are per round (seconds, tokens/s)."""
    if not (len(online_only) == len(no_budget) == len(hygen) > 0):
        raise ValueError("every policy needs the same number of rounds")
    o, n, h = spread(online_only), spread(no_budget), spread(hygen)
    share = spread(hygen_offline_tps).median / max(spread(no_budget_offline_tps).median, 1e-9)
    nums = (
        f"P99 TBT: online alone {o.median * 1e3:.1f} ms, no budget {n.median * 1e3:.1f} ms, "
        f"HyGen {h.median * 1e3:.1f} ms (medians of {len(h.values)} rounds)"
    )
    problem = noise_problem(predictor_mape, online_only)
    if problem is not None:
        return f"inconclusive on this machine: {problem}. {nums}. See the simulated GPU below."
    if len(h.values) < 2:
        return f"inconclusive: one round cannot separate noise from effect. {nums}."
    if all(x < MARGIN * y for x, y in zip(h.values, n.values, strict=True)):
        return (
            f"HyGen kept online P99 TBT below the no-budget run in every round, doing "
            f"{share:.0%} of its offline work. {nums}."
        )
    if all(x > y for x, y in zip(h.values, n.values, strict=True)):
        return (
            f"HyGen did NOT lower online P99 TBT here: worse than no budget in every round. {nums}."
        )
    return f"inconclusive: HyGen and no budget overlap on P99 TBT across rounds. {nums}."
