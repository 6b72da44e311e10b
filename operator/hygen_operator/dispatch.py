"""BatchJob dispatch: feed lines to the pods' offline queues, collect exactly one result each.

The same loop runs in the operator (a kopf daemon per ConfigMap/inline job) and in the
dispatcher Job of a volume job. Resume state lives in two durable places:

- each line has a fixed request id ``<job uid>-<line>``, and pods store requests
  idempotently on that id, so resubmitting after any crash never runs a line twice on a pod;
- a result is written to the sink (`batch_io`) *before* it is acknowledged (DELETE) on the
  pod, so a crash between the two leaves a result the next run finds done, never a lost one.

The input is read as a stream (`batch_io`): a window of at most twice what the pods may hold
is pending at a time, so a job of any size runs in bounded memory; a first pass counts its
lines for the status. Lines are spread over ready pods by line number, at most
``parallelism`` outstanding per pod; a 429 or an unreachable pod backs off that pod only.
Each poll lists the job's requests on every ready pod (one GET per pod, ids
``<job uid>-*``): finished ones are recorded, work an earlier run left on a pod is adopted
(once its line is read) rather than submitted again, a second copy of a line is cancelled,
and a line whose pod disappears or lost its state is resubmitted elsewhere; the sink's
per-line key keeps it to one result. Stopping the job (cancel, delete, expiry) and
finishing it forget the job's prefix on every ready pod, so nothing of it keeps running,
even work submitted by a run that crashed.

A result is taken for a line only when the pod's stored digest of the request equals the
digest of that line (`request_digest`): a request someone else stored under the line's id
is deleted and the line submitted again, so no output ever holds a result it did not ask for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hygen_operator.batch_io import ResultSink
from hygen_operator.pod_client import PodAddress, PodClient, PodError
from hygen_operator.resources import BatchJobSpec
from hygen_pod.contract.api import (
    BULK_MAX,
    OfflineResult,
    OfflineSubmit,
    batch_output_line,
    request_digest,
    window_seconds,
)
from hygen_pod.contract.batch_input import BadLine, BatchLine, BatchParser, split_lines

logger = logging.getLogger(__name__)
REPORT_EVERY_S = 1.0  # at most one status write a second per job
BUSY_POLL_S = 0.05  # the next poll, when the last one brought results back


def job_prefix(job_uid: str) -> str:
    """The id prefix of every request of one BatchJob on any pod."""
    return f"{job_uid}-"


async def forget_on(client: PodClient, pods: list[PodAddress], prefix: str) -> set[str]:
    """DELETE the prefix on each pod (cancels queued and running work, drops unacknowledged
    results); the names of the pods that answered. A pod that did not is logged."""
    done: set[str] = set()
    for pod in pods:
        try:
            await client.forget_prefix(pod, prefix)
            done.add(pod.name)
        except PodError as e:
            logger.info("forgetting %s* on %s failed: %s", prefix, pod.name, e)
    return done


@dataclass
class Progress:
    total: int
    completed: int = 0
    failed: int = 0
    problem: str | None = None  # why lines are not moving (e.g. a pod refuses our token)

    @property
    def done(self) -> int:
        return self.completed + self.failed


@dataclass
class _Inflight:
    line: BatchLine
    pod: PodAddress
    since: float


@dataclass
class Dispatcher:
    pods: PodClient
    job_uid: str
    spec: BatchJobSpec
    input_chunks: Callable[[], AsyncIterator[bytes]]  # the input from its start, each call
    sink: ResultSink
    ready_pods: Callable[[], Awaitable[list[PodAddress]]]
    report: Callable[[Progress], Awaitable[None]]
    poll_s: float = 1.0
    lost_after_s: float = 30.0
    started_at: float | None = None
    _inflight: dict[int, _Inflight] = field(default_factory=dict)
    _backoff: dict[str, float] = field(default_factory=dict)
    _pending: dict[int, BatchLine] = field(default_factory=dict)
    _results: dict[int, str] = field(default_factory=dict)  # line -> output, not yet written
    _acks: list[tuple[PodAddress, str]] = field(default_factory=list)
    _digests: dict[int, str] = field(default_factory=dict)  # line -> request_digest
    _done: set[int] = field(default_factory=set)  # lines with a result in the sink
    _source: AsyncIterator[BatchLine | BadLine] | None = None
    _eof: bool = False
    _reported: tuple[int, int, str | None] | None = None
    _reported_at: float = float("-inf")
    _pods: list[PodAddress] | None = None
    _pods_at: float = float("-inf")

    @property
    def prefix(self) -> str:
        return job_prefix(self.job_uid)

    def rid(self, line: int) -> str:
        return f"{self.prefix}{line}"

    def digest(self, item: BatchLine) -> str:
        d = self._digests.get(item.line)
        if d is None:
            d = self._digests[item.line] = request_digest(self.spec.endpoint, item.body)
        return d

    def _line_of(self, rid: str) -> int | None:
        tail = rid[len(self.prefix) :] if rid.startswith(self.prefix) else ""
        return int(tail) if tail.isdigit() else None

    async def flush(self) -> None:
        """Write buffered results, then acknowledge them on their pods (in that order)."""
        if self._results:
            await self.sink.write(dict(self._results))
            self._results.clear()
        acks, self._acks = self._acks, []
        per_pod: dict[PodAddress, list[str]] = {}
        for pod, rid in acks:
            per_pod.setdefault(pod, []).append(rid)

        async def ack_all(pod: PodAddress, rids: list[str]) -> None:
            for i in range(0, len(rids), BULK_MAX):
                await self._ack_many(pod, rids[i : i + BULK_MAX])

        await asyncio.gather(*(ack_all(pod, rids) for pod, rids in per_pod.items()))

    async def _ack_many(self, pod: PodAddress, rids: list[str]) -> None:
        try:
            await self.pods.ack_many(pod, rids)
            return
        except PodError as e:
            if e.status != 404:  # the results are safe in the sink; the pod keeps copies
                logger.info("ack of %d requests on %s failed: %s", len(rids), pod.name, e)
                return
        for rid in rids:  # a pod without the bulk route
            try:
                await self.pods.ack(pod, rid)
            except PodError as e:
                logger.info("ack of %s on %s failed: %s", rid, pod.name, e)

    # ------------------------------------------------------------ the loop
    async def run(self, should_stop: Callable[[], str | None]) -> tuple[str, Progress]:
        """Dispatch until every line has a result, or until ``should_stop`` names a reason.

        Returns ("Succeeded" | "Expired" | <stop reason>, progress).
        """
        written = await self.sink.written()
        self._done = set(written)
        progress = Progress(total=await self._count())
        progress.completed = sum(written.values())
        progress.failed = len(written) - progress.completed
        self._source, self._eof = self._items(), False
        await self._report(progress, force=True)
        deadline = None
        if self.spec.completion_window:
            deadline = (self.started_at or time.time()) + window_seconds(
                self.spec.completion_window
            )
        while self._pending or self._inflight or not self._eof:
            reason = should_stop()
            if reason:
                if reason != "Stopped":  # cancelled or deleted; "Stopped" = operator exiting
                    await self._abandon()
                return reason, progress
            if deadline is not None and time.time() > deadline:
                await self._expire(progress)
                await self.flush()
                await self.report(progress)
                return "Expired", progress
            pods = await self._ready()
            before = progress.done
            await self._fill(pods, progress)
            await self._collect(pods, progress)  # before submitting: adopt what a crash left
            await self._submit(pods, progress)
            await self.flush()
            await self._report(progress)
            if self._pending or self._inflight:
                # results came back: the pods are busy, look again soon; else wait a poll
                moved = progress.done > before
                await asyncio.sleep(min(self.poll_s, BUSY_POLL_S) if moved else self.poll_s)
        await self._forget_everywhere()  # stray copies of finished lines
        return "Succeeded", progress

    async def _ready(self) -> list[PodAddress]:
        """The ready pods, listed from the API at most once a poll (not once a busy poll)."""
        now = time.monotonic()
        if self._pods is None or now - self._pods_at >= self.poll_s:
            self._pods = sorted(await self.ready_pods(), key=lambda p: p.name)
            self._pods_at = now
        return self._pods

    async def _report(self, progress: Progress, force: bool = False) -> None:
        """Report progress when it changed, at most every REPORT_EVERY_S (each report is
        a status write to the API server), and always when ``force``."""
        now = time.monotonic()
        state = (progress.completed, progress.failed, progress.problem)
        if not force and (state == self._reported or now - self._reported_at < REPORT_EVERY_S):
            return
        self._reported, self._reported_at = state, now
        await self.report(progress)

    async def _count(self) -> int:
        """The input's non-blank lines: a streaming pass, for the status's total."""
        n = 0
        async for _, raw in split_lines(self.input_chunks()):
            n += bool(raw.strip())
        return n

    async def _items(self) -> AsyncIterator[BatchLine | BadLine]:
        parser = BatchParser(self.spec.endpoint)
        async for no, raw in split_lines(self.input_chunks()):
            item = parser.parse(no, raw)
            if item is not None:
                yield item

    async def _fill(self, pods: list[PodAddress], progress: Progress) -> None:
        """Read lines until twice what the pods may hold is pending or in flight."""
        window = 2 * self.spec.parallelism * max(1, len(pods))
        while len(self._pending) + len(self._inflight) < window:
            item = await self._next_unwritten()
            if item is None:
                break
            if isinstance(item, BadLine):
                self._record_bad(item, progress)
            else:
                self._pending[item.line] = item

    async def _next_unwritten(self) -> BatchLine | BadLine | None:
        """The next input line without a result in the sink; None (and _eof) at the end."""
        assert self._source is not None
        while not self._eof:
            try:
                item = await anext(self._source)
            except StopAsyncIteration:
                self._eof = True
                break
            if item.line not in self._done:
                return item
        return None

    def _record_bad(self, item: BadLine, progress: Progress) -> None:
        err = {"code": item.code, "message": item.message, "line": item.line}
        self._record(item.line, item.custom_id, None, None, None, err, progress)

    def _record(
        self,
        line: int,
        custom_id: str | None,
        rid: str | None,
        code: int | None,
        body: dict[str, Any] | None,
        error: dict[str, Any] | None,
        progress: Progress,
    ) -> None:
        out = batch_output_line(f"{self.job_uid}-{line}", custom_id, rid or "", code, body, error)
        self._results[line] = json.dumps(out)
        self._done.add(line)
        self._digests.pop(line, None)
        ok = error is None and (code is None or code < 400)
        progress.completed += ok
        progress.failed += not ok

    async def _submit(self, pods: list[PodAddress], progress: Progress) -> None:
        """Send pending lines, up to ``parallelism`` in flight per pod: one bulk call per pod
        (per BULK_MAX lines), each line's outcome handled as its own POST's would be."""
        if not pods:
            return
        now = time.monotonic()
        per_pod: dict[str, int] = {}
        for f in self._inflight.values():
            per_pod[f.pod.name] = per_pod.get(f.pod.name, 0) + 1
        plan: dict[str, list[BatchLine]] = {}
        by_name = {p.name: p for p in pods}
        for line, item in self._pending.items():
            pod = pods[line % len(pods)]
            if self._backoff.get(pod.name, 0) > now:
                usable = [p for p in pods if self._backoff.get(p.name, 0) <= now]
                if not usable:
                    break
                pod = usable[line % len(usable)]
            if per_pod.get(pod.name, 0) >= self.spec.parallelism:
                continue
            plan.setdefault(pod.name, []).append(item)
            per_pod[pod.name] = per_pod.get(pod.name, 0) + 1

        async def send_all(pod: PodAddress, items: list[BatchLine]) -> None:
            for i in range(0, len(items), BULK_MAX):
                if not await self._send(pod, items[i : i + BULK_MAX], now, progress):
                    return

        await asyncio.gather(*(send_all(by_name[n], items) for n, items in plan.items()))

    async def _send(
        self, pod: PodAddress, items: list[BatchLine], now: float, progress: Progress
    ) -> bool:
        """Submit ``items`` to ``pod``; False when the pod should get no more this poll."""
        reqs = [
            OfflineSubmit(id=self.rid(x.line), url=self.spec.endpoint, body=x.body,
                          digest=self.digest(x))
            for x in items
        ]  # fmt: skip
        try:
            out = await self.pods.submit_many(pod, reqs)
        except PodError as e:
            if e.status != 404:  # the whole call failed: no line is refused for it
                code = e.status if e.status in (0, 401, 403, 429) or e.status >= 500 else 503
                await self._outcome(pod, items[0], code, e.message, e.retry_after_s, now, progress)
                return False
            for item, req in zip(items, reqs, strict=True):  # a pod without the bulk route
                try:
                    await self.pods.submit(pod, req)
                    status, msg, retry = 202, "", None
                except PodError as one:
                    status, msg, retry = one.status, one.message, one.retry_after_s
                if not await self._outcome(pod, item, status, msg, retry, now, progress):
                    return False
            return True
        go_on = True
        for item, o in zip(items, out.outcomes, strict=True):
            retry = float(out.retry_after_s) if out.retry_after_s else None
            go_on &= await self._outcome(pod, item, o.status, o.error or "", retry, now, progress)
        return go_on

    async def _outcome(
        self,
        pod: PodAddress,
        item: BatchLine,
        status: int,
        message: str,
        retry_after_s: float | None,
        now: float,
        progress: Progress,
    ) -> bool:
        """Act on one line's submit status; False when the pod should be left alone now."""
        line = item.line
        if status in (200, 202):
            del self._pending[line]
            progress.problem = None
            self._inflight[line] = _Inflight(item, pod, now)
            return True
        if status in (0, 429) or status >= 500:
            self._backoff[pod.name] = now + (retry_after_s or 2.0)
            return False
        if status == 409:  # another request sits under our id: remove, retry next poll
            await self._remove_foreign(pod, self.rid(line))
            return True
        if status in (401, 403):  # our token, not the line: wait for the fix
            self._backoff[pod.name] = now + 5.0
            progress.problem = (
                f"pod {pod.name} refuses the dispatcher's token ({status}): the "
                "control-token Secret and the pods' token differ"
            )
            logger.warning("%s", progress.problem)
            return False
        # the pod refused this line for good (e.g. 400: a body it cannot run)
        err = {"code": "rejected", "message": message, "line": line}
        self._record(line, item.custom_id, None, status, None, err, progress)
        del self._pending[line]
        return True

    async def _collect(self, pods: list[PodAddress], progress: Progress) -> None:
        """List the job's requests on each ready pod and settle every line found there."""
        now = time.monotonic()
        live = {p.name for p in pods}
        for line, f in list(self._inflight.items()):
            if f.pod.name not in live and now - f.since > self.lost_after_s:
                self._requeue(line, f)  # the pod is gone or unready: resubmit, clearly lost

        async def listing(pod: PodAddress) -> list[OfflineResult] | None:
            try:
                return await self.pods.requests(pod, self.prefix)
            except PodError:
                return None  # unreachable for now; its requests are durable

        listings = await asyncio.gather(*(listing(p) for p in pods))  # the pods at once
        for pod, held in zip(pods, listings, strict=True):
            if held is None:
                continue
            seen: set[int] = set()
            for res in held:
                line = self._line_of(res.id)
                if line is None:
                    continue
                item = self._line_item(line)
                if item is None and line not in self._done:
                    continue  # not read from the input yet: adopted once it is
                if item is not None and res.digest != self.digest(item):
                    # Not the request this line sent (forged, or from another input):
                    # never its result. Remove it; the line is submitted again.
                    await self._remove_foreign(pod, res.id)
                    continue
                seen.add(line)
                self._settle(pod, line, res, progress, now)
            for line, f in list(self._inflight.items()):
                if f.pod.name != pod.name:
                    continue
                if line in seen:
                    f.pod, f.since = pod, now  # same name, maybe a new address
                else:
                    self._requeue(line, f)  # the pod lost its state (a new pod): submit again

    def _settle(
        self, pod: PodAddress, line: int, res: OfflineResult, progress: Progress, now: float
    ) -> None:
        """One request of this job found on ``pod``: record, adopt, or drop it."""
        f = self._inflight.get(line)
        finished = res.state in ("done", "failed")
        if f is None and line in self._pending:  # left here by an earlier run: adopt it
            f = self._inflight[line] = _Inflight(self._pending.pop(line), pod, now)
        elif f is not None and f.pod.name != pod.name and finished:
            self._acks.append((f.pod, res.id))  # take this result; cancel the other copy
            f.pod = pod
        if f is None or f.pod.name != pod.name:
            self._acks.append((pod, res.id))  # written already, or a second copy: drop it
        elif finished:
            self._record(
                line, f.line.custom_id, res.id, res.status_code, res.response, res.error, progress
            )
            self._acks.append((pod, res.id))
            del self._inflight[line]
        elif res.state == "cancelled":
            self._acks.append((pod, res.id))
            self._requeue(line, f)

    def _line_item(self, line: int) -> BatchLine | None:
        f = self._inflight.get(line)
        return f.line if f is not None else self._pending.get(line)

    async def _remove_foreign(self, pod: PodAddress, rid: str) -> None:
        logger.warning("%s holds a request %s that this job did not send: deleting it", pod, rid)
        try:
            await self.pods.ack(pod, rid)
        except PodError as e:
            logger.info("delete of %s on %s failed: %s", rid, pod.name, e)

    def _requeue(self, line: int, f: _Inflight) -> None:
        del self._inflight[line]
        self._pending[line] = f.line

    async def _forget_everywhere(self) -> set[str]:
        """Forget the job's prefix on every ready pod; the names of the pods that answered."""
        return await forget_on(self.pods, await self.ready_pods(), self.prefix)

    async def _abandon(self) -> None:
        """Stop: cancel everything of this job on the pods (results already written stay)."""
        done = await self._forget_everywhere()
        for line, f in list(self._inflight.items()):
            if f.pod.name in done:
                continue
            try:  # a pod not ready now: cancel what we know is there
                await self.pods.ack(f.pod, self.rid(line))
            except PodError as e:
                logger.info("cancel of %s on %s failed: %s", self.rid(line), f.pod.name, e)
        self._inflight.clear()
        self._pending.clear()

    async def _expire(self, progress: Progress) -> None:
        lines = {**{n: f.line for n, f in self._inflight.items()}, **self._pending}
        await self._abandon()
        for item in lines.values():
            self._record_expired(item, progress)
        while (rest := await self._next_unwritten()) is not None:  # unread lines expire too
            self._record_expired(rest, progress)

    def _record_expired(self, item: BatchLine | BadLine, progress: Progress) -> None:
        if isinstance(item, BadLine):
            self._record_bad(item, progress)
            return
        msg = "the completion window passed"
        err = {"code": "batch_expired", "message": msg, "line": item.line}
        self._record(item.line, item.custom_id, None, None, None, err, progress)
