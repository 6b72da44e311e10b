"""The steady-state step's view of the running list: one pass, or carried from the last step.

In the steady state every running request decodes one token a step. `steady_scan` reads
the running list once for what the step needs (each side's requests, context sums, the
requests at a block boundary). `SteadyCarry` keeps that scan after a step that ran
exactly as planned, so the next step derives the same values from it without touching
each request again: every context grew by the steps since, the sums follow in closed
form, and the requests at a block boundary are found by their computed tokens modulo the
block size. Requests that left the running list (finished, aborted) are taken out; any
other change, or a step that did not run as planned, drops the carry and the next step
scans again. The scan in place costs 300-600 us at 256 requests, mostly cache misses on
the request objects after vLLM's own step (docs/benchmarks.md, "Scheduler overhead").
"""

from __future__ import annotations

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
    off_ctx: list[int]  # offline decode contexts (less ``shift``), in running order
    shift: int  # add to each of ``off_ctx``
    online_edge: list[tuple[Request, int]]  # (request, computed) at a block boundary
    offline_edge: list[tuple[Request, int]]
    # Async: requests with only their last token in flight compute nothing this step (the
    # base skips them, as the general method's `_split_wants` counts them): online ones
    # stay in ``online_run`` (``online_idle`` of them), offline ones are apart. A scan
    # with idle requests is not carried.
    online_idle: int = 0
    offline_idle: list[Request] = field(default_factory=list)
    # For a carry, from a full scan only: each scanned request's computed tokens (in the
    # scanned list's order), the largest, and the fewest tokens any has left to its end.
    scanned: list[Request] | None = None
    computed: list[int] | None = None
    max_computed: int = 0
    min_left: int = 0


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
    off_ctx: list[int] = []
    computed: list[int] = []
    online_edge: list[tuple[Request, int]] = []
    offline_edge: list[tuple[Request, int]] = []
    on_sum = on_sq = off_sum = off_sq = 0
    online_idle = 0
    last = max_model_len - 2
    max_c = 0
    min_left = 1 << 62
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
        if left < min_left:
            min_left = left
        if c > max_c:
            max_c = c
        computed.append(c)
        rid = r.request_id
        ids.append(rid)
        x = c + 1
        edge = (c + lookahead + bs) // bs > (c + bs - 1) // bs
        if rid in offline_ids:
            offline_run.append(r)
            off_ctx.append(x)
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
    carried = not online_idle and not offline_idle
    return SteadyScan(
        online_run, offline_run, dict.fromkeys(ids, 1), on_sum, on_sq, off_sum, off_sq,
        off_ctx, 0, online_edge, offline_edge, online_idle, offline_idle,
        running if carried else None, computed if carried else None, max_c, min_left,
    )  # fmt: skip


def _edge_residues(bs: int, lookahead: int) -> list[int]:
    """Computed-token counts modulo the block size at which the next token (with the
    look-ahead) needs a block past those covering the computed tokens (`steady_scan`'s
    test depends on the count only through this residue)."""
    return [c for c in range(bs) if (c + lookahead + bs) // bs > (c + bs - 1) // bs]


@dataclass(slots=True)
class SteadyCarry:
    """A full scan from step ``base``, carried over steps that each ran one decode per
    request. Valid at step ``last + 1`` only, through step ``until``."""

    online_run: list[Request]
    offline_run: list[Request]
    plan: dict[str, int]
    on_sum: int  # sums as of ``base``
    on_sq: int
    off_sum: int
    off_sq: int
    off_ctx: list[int]
    base: int
    last: int
    until: int
    running: list[Request]  # the running list as step ``last`` left it
    computed: dict[Request, int]  # computed tokens at ``base``
    offline: set[Request]
    by_residue: list[dict[Request, None]]  # by computed tokens at ``base`` mod block size
    edge_residues: list[int]

    @classmethod
    def start(
        cls, scan: SteadyScan, step: int, bs: int, lookahead: int, max_model_len: int
    ) -> SteadyCarry | None:
        """Carry a full scan of step ``step`` (which ran as planned) to the next steps;
        None for a scan that is itself carried."""
        if scan.scanned is None or scan.computed is None:
            return None
        computed = dict(zip(scan.scanned, scan.computed, strict=True))
        by_residue: list[dict[Request, None]] = [{} for _ in range(bs)]
        for r, c in computed.items():
            by_residue[c % bs][r] = None
        # The last step whose scan would still pass: computed tokens stay below the
        # model-length limit, and (in flight or not, so without the placeholders, which
        # only delay it) no request is down to its last token.
        steps = min(max_model_len - 2 - scan.max_computed, scan.min_left - 2) - 1
        return cls(
            scan.online_run, scan.offline_run, dict(scan.plan), scan.on_sum, scan.on_sq,
            scan.off_sum, scan.off_sq, scan.off_ctx, step, step, step + steps,
            scan.online_run + scan.offline_run, computed, set(scan.offline_run), by_residue,
            _edge_residues(bs, lookahead),
        )  # fmt: skip

    def at(self, step: int, running: list[Request], bs: int) -> SteadyScan | None:
        """The scan at ``step`` (the one after ``last``), or None when it cannot be carried:
        the step is out of range, or the running list changed other than by requests
        leaving it (they are taken out)."""
        if step != self.last + 1 or step > self.until:
            return None
        if running != self.running and not self._drop_gone(running):
            return None
        d = step - self.base
        n_on, n_off = len(self.online_run), len(self.offline_run)
        online_edge: list[tuple[Request, int]] = []
        offline_edge: list[tuple[Request, int]] = []
        computed, offline = self.computed, self.offline
        for rho in self.edge_residues:
            for r in self.by_residue[(rho - d) % bs]:
                c = computed[r] + d
                (offline_edge if r in offline else online_edge).append((r, c))
        return SteadyScan(
            self.online_run, self.offline_run, dict(self.plan),
            self.on_sum + n_on * d, self.on_sq + 2 * d * self.on_sum + n_on * d * d,
            self.off_sum + n_off * d, self.off_sq + 2 * d * self.off_sum + n_off * d * d,
            self.off_ctx, d, online_edge, offline_edge,
        )  # fmt: skip

    def ran(self, step: int, running: list[Request]) -> None:
        """Step ``step`` ran the carried scan as planned and left ``running``."""
        self.last = step
        self.running = list(running)

    def _drop_gone(self, running: list[Request]) -> bool:
        """Take out the requests that left the running list; False if it changed otherwise
        (a request joined, or the order changed)."""
        now = set(running)
        kept = [r for r in self.running if r in now]
        if len(kept) != len(running) or kept != running:
            return False
        for r in self.running:
            if r in now:
                continue
            c = self.computed.pop(r)
            self.by_residue[c % len(self.by_residue)].pop(r, None)
            del self.plan[r.request_id]
            x = c + 1
            if r in self.offline:
                self.offline.discard(r)
                self.off_sum -= x
                self.off_sq -= x * x
            else:
                self.on_sum -= x
                self.on_sq -= x * x
        if len(self.offline_run) != len(self.offline):
            pairs = zip(self.offline_run, self.off_ctx, strict=True)
            self.off_ctx = [x for r, x in pairs if r in now]
            self.offline_run = [r for r in self.offline_run if r in now]
        self.online_run = [r for r in self.online_run if r in now]
        self.running = kept
        return True
