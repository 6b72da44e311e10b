"""The retuning rule: tighten the offline budget/QPS when an online metric nears its target.

Pure: given the profiled value, the value in force and what the pods observed, return the
next value and why. Tighten by `tighten` when any targeted metric exceeds `near` x target;
relax by `relax` (never above `ceiling` x the profiled value) when every one is below
`far` x target; otherwise hold. Windows with too few online requests change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TuningRule:
    near: float = 0.9
    far: float = 0.6
    tighten: float = 0.7
    relax: float = 1.15
    ceiling: float = 1.5
    floor: float = 0.0
    min_requests: int = 8


@dataclass(frozen=True)
class Decision:
    value: float
    reason: str  # Tightened | Relaxed | Held | NoSamples
    message: str

    @property
    def changed(self) -> bool:
        return self.reason in ("Tightened", "Relaxed")


def retune(
    current: float,
    profiled: float,
    observed_ms: dict[str, float | None],
    targets_ms: dict[str, float],
    online_requests: int,
    rule: TuningRule = TuningRule(),
) -> Decision:
    """Next offline budget (ms) or QPS from the worst targeted metric over all pods."""
    if online_requests < rule.min_requests:
        return Decision(current, "NoSamples", f"{online_requests} online requests in the window")
    ratios = {
        m: observed_ms[m] / t for m, t in targets_ms.items() if observed_ms.get(m) is not None
    }
    if not ratios:
        return Decision(current, "NoSamples", "no targeted metric observed")
    worst = max(ratios, key=lambda m: ratios[m])
    r = ratios[worst]
    seen = f"{worst} {observed_ms[worst]:.1f} ms = {r:.0%} of target {targets_ms[worst]:g} ms"
    if r > rule.near:
        new = max(rule.floor, current * rule.tighten)
        return Decision(new, "Tightened", f"{seen}: {current:.3g} -> {new:.3g}")
    if r < rule.far and current < profiled * rule.ceiling:
        base = current if current > 0 else profiled * 0.1
        new = min(profiled * rule.ceiling, base * rule.relax)
        return Decision(new, "Relaxed", f"{seen}: {current:.3g} -> {new:.3g}")
    return Decision(current, "Held", seen)
