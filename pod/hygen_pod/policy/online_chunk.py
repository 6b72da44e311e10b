"""The online prefill cap: how many online prefill tokens may join a step that decodes.

A step that carries online decodes lasts as long as everything in it, so one long online
prefill chunk (up to the engine's whole token budget, 2,048 by default) turns the TBT of
every decode in that step into a long gap: the P99 TBT sits on those steps. Capping the
online prefill tokens of such steps shortens the gap at the cost of a few more steps to
finish a long prompt (TTFT). Steps without online decodes keep the full budget.

The engine plugin and the simulator plan online prefills through `OnlinePrefillCap` in
request order: each either fits whole under what is left, or is cut to what is left (then
it must be the step's last item, and nothing after it runs), or waits for a later step.
"""

from __future__ import annotations


class OnlinePrefillCap:
    """Online prefill tokens of one step, under ``cap`` when the step has online decodes."""

    __slots__ = ("cut", "left", "stopped")

    def __init__(self, cap: int | None, has_decodes: bool) -> None:
        if cap is not None and cap < 1:
            raise ValueError(f"online prefill cap must be >= 1 token, got {cap}")
        self.left: int | None = cap if cap is not None and has_decodes else None
        self.cut = False  # a prefill got fewer tokens than it would have without the cap
        self.stopped = False  # no further online prefill this step

    @property
    def active(self) -> bool:
        return self.left is not None

    def peek(self, n: int, partial_ok: bool = True) -> int:
        """What `grant` would give now, without taking it (to check KV first)."""
        if self.left is None:
            return n
        if self.stopped or n <= 0:
            return 0
        if n <= self.left:
            return n
        return self.left if partial_ok else 0

    def grant(self, n: int, partial_ok: bool = True) -> int:
        """Tokens a prefill that would otherwise get ``n`` takes now (0: not this step)."""
        got = self.peek(n, partial_ok)
        if self.left is None or self.stopped or n <= 0:
            return got
        if got < n:  # cut short, or refused whole: no further online prefill this step
            self.stopped = True
            self.cut = got > 0
        self.left -= got
        self.stopped = self.stopped or self.left == 0
        return got
