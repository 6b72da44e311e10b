"""The steady-state step's view of the running list: one pass, or carried from the last step.

In the steady state every running request decodes one token a step. `steady_scan` reads
the running list once for what the step needs (each side's requests, context sums, the
requests at a block boundary). `SteadyCarry` keeps that scan after a step that ran
exactly as planned, so the next step derives the same values from it without touching
each request again: every context grew by the steps since, the sums follow in closed
form, and the requests at a block boundary are found by their computed tokens modulo the
block size. Only a few requests are read again: those the last step started (they join
at the end), and those down to their last token, which (async) have nothing to compute
while it is in flight and leave the list next step. Requests that left (finished,
aborted) are taken out; any other change, or a step that did not run as planned, drops
the carry and the next step scans again. The scan in place costs 200-600 us at 256
requests (docs/benchmarks.md, "Scheduler overhead"); a busy server starts and finishes
requests every step, so the carry has to survive both to matter there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from vllm.v1.request import Request


@dataclass(slots=True)
class SteadyScan:
    """What the steady-state step needs from the running list, as of one step."""

    online_run: list[Request]
    offline_run: list[Request]
    plan: dict[str, int]  # every running request's id -> 1 token
    on_sum: int  # the sums of decode contexts (computed + 1) and of their squares
    on_sq: int
    off_sum: int
    off_sq: int
    online_edge: list[tuple[Request, int]]  # (request, computed) at a block boundary
    offline_edge: list[tuple[Request, int]]
    # Async: requests with only their last token in flight compute nothing this step (the
    # base skips them, as the general method's `_split_wants` counts them): online ones
    # stay in ``online_run`` (``online_idle`` of them), offline ones are apart.
    online_idle: int = 0
    offline_idle: list[Request] = field(default_factory=list)
    # For a carry, from a full scan only: the decoding requests in running order, each
    # one's computed tokens and tokens left to its end, and the largest computed count.
    decoding: list[Request] | None = None
    computed: list[int] | None = None
    lefts: list[int] | None = None
    max_computed: int = 0


def steady_scan(
    running: list[Request], offline_ids: set[str], bs: int, lookahead: int, max_model_len: int
) -> SteadyScan | None:
    """One pass over the running list: None unless every request decodes exactly one
    token past its prompt (as the general method counts it), short of the model length,
    or (async) has only its last token left, in flight (idle this step); else each side's
    requests, context sums and the requests whose next token (with the look-ahead) needs a
    block past those covering their computed tokens (only those may be short).

    A plain loop: CPython 3.11 specializes its attribute reads, which makes it several
    times cheaper than the ~20 `map`/`attrgetter` passes it replaced (the overhead bench)."""
    online_run: list[Request] = []
    offline_run: list[Request] = []
    offline_idle: list[Request] = []
    ids: list[str] = []
    decoding: list[Request] = []
    computed: list[int] = []
    lefts: list[int] = []
    online_edge: list[tuple[Request, int]] = []
    offline_edge: list[tuple[Request, int]] = []
    on_sum = on_sq = off_sum = off_sq = 0
    online_idle = 0
    last = max_model_len - 2
    max_c = 0
    for r in running:
        c = r.num_computed_tokens
        ph = r.num_output_placeholders
        prompt = r.num_prompt_tokens
        if r.num_tokens_with_spec + ph - c != 1 or c < prompt:
            return None
        left = prompt + r.max_tokens - c
        if ph and left <= 2 - ph:  # its last token is in flight: the base skips it
            if r.request_id in offline_ids:
                offline_idle.append(r)
            else:
                online_run.append(r)
                online_idle += 1
            continue
        if c >= last:
            return None
        if c > max_c:
            max_c = c
        decoding.append(r)
        computed.append(c)
        lefts.append(left)
        rid = r.request_id
        ids.append(rid)
        x = c + 1
        edge = (c + lookahead + bs) // bs > (c + bs - 1) // bs
        if rid in offline_ids:
            offline_run.append(r)
            off_sum += x
            off_sq += x * x
            if edge:
                offline_edge.append((r, c))
        else:
            online_run.append(r)
            on_sum += x
            on_sq += x * x
            if edge:
                online_edge.append((r, c))
    return SteadyScan(
        online_run, offline_run, dict.fromkeys(ids, 1), on_sum, on_sq, off_sum, off_sq,
        online_edge, offline_edge, online_idle, offline_idle,
        decoding, computed, lefts, max_c,
    )  # fmt: skip


def _edge_residues(bs: int, lookahead: int) -> list[int]:
    """Computed-token counts modulo the block size at which the next token (with the
    look-ahead) needs a block past those covering the computed tokens (`steady_scan`'s
    test depends on the count only through this residue)."""
    return [c for c in range(bs) if (c + lookahead + bs) // bs > (c + bs - 1) // bs]


@dataclass(slots=True)
class SteadyCarry:
    """A full scan from step ``base``, carried over steps that each ran one decode per
    request, took in the requests each step started and let finished ones go. Valid at
    step ``last + 1`` only, through step ``until`` (the model length)."""

    bs: int
    lookahead: int
    last_computed: int  # a request at this many computed tokens stops the steady state
    offline_ids: set[str]
    online_run: list[Request]  # decoding and idle, in running order
    offline_run: list[Request]  # decoding only
    plan: dict[str, int]
    n_on: int  # online requests decoding
    on_sum: int  # sums as of ``base``
    on_sq: int
    off_sum: int
    off_sq: int
    base: int
    last: int
    until: int
    running: list[Request]  # the running list as step ``last`` left it
    computed: dict[Request, int]  # decoding requests' computed tokens as of ``base``
    offline: set[Request]  # the decoding offline requests
    by_residue: list[dict[Request, None]]  # by computed tokens at ``base`` mod block size
    by_left: dict[int, list[Request]]  # by tokens left at ``base``: read again near the end
    edge_residues: list[int]
    # idle last step (-> offline or not): each must be gone now
    idle: dict[Request, bool] = field(default_factory=dict)
    joins: list[Request] = field(default_factory=list)  # started by step ``last``
    plan_dels: int = 0  # keys deleted from ``plan`` since it was last compacted

    @classmethod
    def start(
        cls,
        scan: SteadyScan,
        step: int,
        bs: int,
        lookahead: int,
        max_model_len: int,
        offline_ids: set[str],
    ) -> SteadyCarry | None:
        """Carry a full scan of step ``step`` (which ran as planned) to the next steps;
        None for a scan that is itself carried."""
        if scan.decoding is None or scan.computed is None or scan.lefts is None:
            return None
        computed = dict(zip(scan.decoding, scan.computed, strict=True))
        by_residue: list[dict[Request, None]] = [{} for _ in range(bs)]
        by_left: dict[int, list[Request]] = {}
        for r, c, left in zip(scan.decoding, scan.computed, scan.lefts, strict=True):
            if left <= 1:
                return None  # a decode on its last token without one in flight (no such)
            by_residue[c % bs][r] = None
            by_left.setdefault(left, []).append(r)
        idle = dict.fromkeys(scan.offline_idle, True)
        if scan.online_idle:
            idle.update((r, False) for r in scan.online_run if r not in computed)
        last_computed = max_model_len - 2
        return cls(
            bs, lookahead, last_computed, offline_ids, scan.online_run, scan.offline_run,
            dict(scan.plan), len(scan.online_run) - scan.online_idle,
            scan.on_sum, scan.on_sq, scan.off_sum, scan.off_sq, step, step,
            step + last_computed - scan.max_computed - 1, [], computed,
            set(scan.offline_run), by_residue, by_left, _edge_residues(bs, lookahead), idle,
        )  # fmt: skip

    def at(self, step: int, running: list[Request], freed: Sequence[Request]) -> SteadyScan | None:
        """The scan at ``step`` (the one after ``last``), or None when it cannot be carried:
        the step is out of range, the running list changed other than by requests in
        ``freed`` (those the scheduler freed since) leaving it, a request idle last step is
        still there, or one the last step started (or one at its last token) is not as
        `steady_scan` would carry it."""
        if step != self.last + 1 or step > self.until:
            return None
        if (freed or running != self.running) and not self._drop_gone(running, freed):
            return None
        if self.idle:
            return None
        d = step - self.base
        online_idle = 0
        offline_idle: list[Request] = []
        for r in self.by_left.pop(d + 1, ()):  # one token left: in flight, or not carried
            if r in self.computed:
                if not self._goes_idle(r, d):
                    return None
                if self.idle[r]:
                    offline_idle.append(r)
                else:
                    online_idle += 1
        if offline_idle:
            self._remove(set(offline_idle), offline=True)
        if self.joins:
            joined = self._join(d)
            if joined is None:
                return None
            online_idle += joined[0]
            offline_idle += joined[1]
        n_on, n_off = self.n_on, len(self.offline_run)
        online_edge: list[tuple[Request, int]] = []
        offline_edge: list[tuple[Request, int]] = []
        computed, offline, bs = self.computed, self.offline, self.bs
        for rho in self.edge_residues:
            for r in self.by_residue[(rho - d) % bs]:
                c = computed[r] + d
                (offline_edge if r in offline else online_edge).append((r, c))
        if self.plan_dels * 3 > len(self.plan):  # else its copy takes the slow path
            self.plan, self.plan_dels = dict(self.plan), 0
        return SteadyScan(
            self.online_run, self.offline_run, self.plan.copy(),
            self.on_sum + n_on * d, self.on_sq + 2 * d * self.on_sum + n_on * d * d,
            self.off_sum + n_off * d, self.off_sq + 2 * d * self.off_sum + n_off * d * d,
            online_edge, offline_edge, online_idle, offline_idle,
        )  # fmt: skip

    def ran(self, step: int, running: list[Request], scan: SteadyScan) -> bool:
        """Step ``step`` ran ``scan`` as planned and left ``running``: its decoding and idle
        requests first, in the scan's order (the offline idle ones anywhere after), then
        the requests it started, which join at the next step. False if it left anything
        else (the carry cannot follow)."""
        on, off = scan.online_run, scan.offline_run
        n, m = len(on), len(on) + len(off)
        if running[:n] != on or running[n:m] != off:
            return False
        idle = self.idle
        self.joins = [r for r in running[m:] if r not in idle]
        self.last = step
        self.running = list(running)
        return True

    def _take_out(self, r: Request, c: int) -> None:
        """Take a decoding request out of the sums (``c``: its computed tokens at
        ``base``, already popped from ``computed``); the caller takes it out of the lists
        (`_remove`)."""
        self.by_residue[c % self.bs].pop(r, None)
        del self.plan[r.request_id]
        self.plan_dels += 1
        x = c + 1
        if r in self.offline:
            self.offline.discard(r)
            self.off_sum -= x
            self.off_sq -= x * x
        else:
            self.n_on -= 1
            self.on_sum -= x
            self.on_sq -= x * x

    def _goes_idle(self, r: Request, d: int) -> bool:
        """A carried decode down to one token left: read again, it must be idle (its last
        token in flight, as `steady_scan` tests it); it then leaves the sums (`at` takes
        an offline one out of the offline decodes; an online one stays in ``online_run``,
        as in a fresh scan) and must be gone next step."""
        c0 = self.computed[r]
        c, ph = r.num_computed_tokens, r.num_output_placeholders
        if c != c0 + d or not (ph and r.num_prompt_tokens + r.max_tokens - c <= 2 - ph):
            return False
        del self.computed[r]
        self.idle[r] = r in self.offline
        self._take_out(r, c0)
        return True

    def _join(self, d: int) -> tuple[int, list[Request]] | None:
        """Read the requests the last step started with `steady_scan` itself (the same
        rules as a fresh scan) and add them at the end of their side, where a fresh scan
        of the running list puts them; returns the online and offline ones idle this
        step, or None if any is not a decode the carry can follow."""
        joined = steady_scan(
            self.joins, self.offline_ids, self.bs, self.lookahead, self.last_computed + 2
        )
        self.joins = []
        if joined is None or joined.decoding is None or joined.computed is None:
            return None
        if joined.lefts is None or any(left <= 1 for left in joined.lefts):
            return None  # a decode on its last token without one in flight (no such)
        for r in joined.offline_idle:
            self.idle[r] = True
        for r in joined.online_run:
            if r.request_id not in joined.plan:
                self.idle[r] = False
        self.online_run += joined.online_run
        self.offline_run += joined.offline_run
        self.offline.update(joined.offline_run)
        self.plan.update(joined.plan)
        self.until = min(self.until, self.base + d + self.last_computed - joined.max_computed - 1)
        bs = self.bs
        for r, c, left in zip(joined.decoding, joined.computed, joined.lefts, strict=True):
            cb = c - d  # as of ``base``
            x = cb + 1
            self.computed[r] = cb
            self.by_residue[cb % bs][r] = None
            self.by_left.setdefault(left + d, []).append(r)
            if r in self.offline:
                self.off_sum += x
                self.off_sq += x * x
            else:
                self.n_on += 1
                self.on_sum += x
                self.on_sq += x * x
        return joined.online_idle, joined.offline_idle

    def _remove(self, gone: set[Request], offline: bool) -> None:
        """Take ``gone`` out of the offline decodes or of ``online_run``, in place (a
        returned scan holds these lists). By identity: a list's own search would call
        vLLM's ``Request`` comparison (a Python method) for every other request."""
        lst = self.offline_run if offline else self.online_run
        lst[:] = [q for q in lst if q not in gone]

    def _drop_gone(self, running: list[Request], freed: Sequence[Request]) -> bool:
        """Take out the requests in ``freed`` that were in the carried running list; False
        unless what is left is exactly ``running`` (anything else changed it). Only the
        few freed requests are handled one by one; the lists are filtered by identity."""
        computed, idle, joins = self.computed, self.idle, self.joins
        gone = [r for r in freed if r in computed or r in idle or r in joins]
        if len(self.running) - len(gone) != len(running):
            return False
        g = set(gone)
        kept = [q for q in self.running if q not in g] if g else self.running
        if kept != running:
            return False
        online = offline = False
        for r in gone:
            c = computed.pop(r, None)
            if c is not None:
                off = r in self.offline
                self._take_out(r, c)
                offline |= off
                online |= not off
            elif r in idle:
                online |= not idle.pop(r)  # an online idle one is in online_run
        if online:
            self._remove(g, offline=False)
        if offline:
            self._remove(g, offline=True)
        if joins:
            self.joins = [r for r in joins if r not in g]
        self.running = kept
        return True
