"""The running decodes carried across the general method's steps.

On a busy server every step mixes a few prefills (new prompts, online and offline) with
hundreds of decodes, so the steady-state shortcut (`steady_scan`) never applies and the
general method read every running request twice a step: once to split the running list
and once for phase 1's shadow. `DecodeCarry` keeps, for the requests that decoded one
token in every step since they joined it, their contexts relative to a base step, the
context sums of each side and a block-boundary index (as `SteadyCarry`), so the next
step reads only the requests it does not hold: those that joined the running list, and
those still prefilling. A request joins once it decodes; one that left the running list
is taken out; any other change (a preemption, a step that did not run as planned, an
output without exactly the expected tokens) drops the carry, and the general method then
reads every request again (docs/benchmarks.md, "Scheduler overhead").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vllm.v1.request import Request

from hygen_pod.vllm_adapter.steady_scan import edge_residues


@dataclass(slots=True)
class DecodeCarry:
    """Requests that decode one token each step, as of step ``base``; usable at step
    ``last + 1``. A request's context at step ``s`` is its entry in ``ctx`` plus
    ``s - base`` (entries may be below 1 for requests that joined later). Each is held
    through the last step at which it is sure to decode one token (``expiry``) and is
    then let go, to be read by the general method again."""

    bs: int
    lookahead: int
    max_model_len: int
    base: int
    last: int = -1
    ctx: dict[Request, int] = field(default_factory=dict)
    offline: set[Request] = field(default_factory=set)
    on_plan: dict[str, int] = field(default_factory=dict)  # carried ids -> 1 token
    off_plan: dict[str, int] = field(default_factory=dict)
    on_sum: int = 0  # sums of ``ctx`` entries and of their squares, per side
    on_sq: int = 0
    off_sum: int = 0
    off_sq: int = 0
    by_residue: list[dict[Request, None]] = field(default_factory=list)
    residues: list[int] = field(default_factory=list)
    expiry: dict[int, list[Request]] = field(default_factory=dict)  # last step held

    @classmethod
    def empty(cls, step: int, bs: int, lookahead: int, max_model_len: int) -> DecodeCarry:
        return cls(
            bs, lookahead, max_model_len, step,
            by_residue=[{} for _ in range(bs)], residues=edge_residues(bs, lookahead),
        )  # fmt: skip

    def usable(self, step: int) -> bool:
        """Whether the carry applies at ``step`` (the one after the last it ran); the
        requests held only through the step before are let go."""
        if step != self.last + 1:
            return False
        for r in self.expiry.pop(step - 1, ()):
            if r in self.ctx:
                self._let_go(r)
        return True

    def let_go(self, requests: list[Request]) -> None:
        """Stop holding these requests (finished) if held."""
        for r in requests:
            if r in self.ctx:
                self._let_go(r)

    def join(self, r: Request, computed: int, offline: bool, step: int) -> bool:
        """Hold ``r``, a plain decode at ``step`` with ``computed`` tokens (one token past
        its prompt, more than one token short of its end and of the model length).
        False (not held) when it is within four tokens of either, as the general method
        then treats it differently (its last token in flight, the model length cap)."""
        end = r.num_prompt_tokens + r.max_tokens
        left = min(self.max_model_len - 2 - computed, end - computed - 2)
        if left < 2:  # not usable at the next step: read it again
            return False
        self.expiry.setdefault(step + left - 1, []).append(r)
        x = computed + 1 - (step - self.base)
        self.ctx[r] = x
        self.by_residue[(x - 1) % self.bs][r] = None
        if offline:
            self.offline.add(r)
            self.off_plan[r.request_id] = 1
            self.off_sum += x
            self.off_sq += x * x
        else:
            self.on_plan[r.request_id] = 1
            self.on_sum += x
            self.on_sq += x * x
        return True

    def sums(self, step: int) -> tuple[int, int, int, int]:
        """(online context sum, its squares, offline sum, its squares) at ``step``."""
        d = step - self.base
        n_on, n_off = len(self.on_plan), len(self.off_plan)
        return (
            self.on_sum + n_on * d, self.on_sq + 2 * d * self.on_sum + n_on * d * d,
            self.off_sum + n_off * d, self.off_sq + 2 * d * self.off_sum + n_off * d * d,
        )  # fmt: skip

    def edges(self, step: int) -> tuple[list[tuple[Request, int]], list[tuple[Request, int]]]:
        """The held requests whose next token (with the look-ahead) needs a block past
        those covering their computed tokens, online and offline: (request, computed)."""
        d = step - self.base
        online: list[tuple[Request, int]] = []
        offline: list[tuple[Request, int]] = []
        ctx, off = self.ctx, self.offline
        for rho in self.residues:
            for r in self.by_residue[(rho - d) % self.bs]:
                (offline if r in off else online).append((r, ctx[r] - 1 + d))
        return online, offline

    def drop_offline(self) -> None:
        """Stop holding the offline requests (a step that did not run them all)."""
        for r in self.offline:
            x = self.ctx.pop(r)
            del self.by_residue[(x - 1) % self.bs][r]
        self.offline.clear()
        self.off_plan.clear()
        self.off_sum = self.off_sq = 0

    def ran(self, step: int) -> None:
        """Step ``step`` ran one token for every held request."""
        self.last = step

    def _let_go(self, r: Request) -> None:
        x = self.ctx.pop(r)
        del self.by_residue[(x - 1) % self.bs][r]
        if r in self.offline:
            self.offline.discard(r)
            del self.off_plan[r.request_id]
            self.off_sum -= x
            self.off_sq -= x * x
        else:
            del self.on_plan[r.request_id]
            self.on_sum -= x
            self.on_sq -= x * x
