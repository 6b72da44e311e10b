"""BatchJob dispatch: feed lines to the pods' offline queues, collect exactly one result each.

The same loop runs in the operator (a kopf daemon per ConfigMap/inline job) and in the
dispatcher Job of a volume job. Resume state lives in two durable places:

- each line has a fixed request id ``<job uid>-<line>``, and pods store requests
  idempotently on that id, so resubmitting after any crash never runs a line twice on a pod;
- a result is written to the sink (`batch_io`) *before* it is acknowledged (DELETE) on the
  pod, so a crash between the two leaves a result the next run finds done, never a lost one.

Lines are spread over ready pods by line number, at most ``parallelism`` outstanding per
pod; a 429 or an unreachable pod backs off that pod only. A line whose pod disappears or
lost its state is resubmitted elsewhere; the sink's per-line key keeps it to one result.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hygen_operator.batch_io import ResultSink
from hygen_operator.pod_client import PodAddress, PodClient, PodError
from hygen_operator.resources import BatchJobSpec
from hygen_pod.api import OfflineResult, OfflineSubmit, batch_output_line, window_seconds
from hygen_pod.batch_input import BadLine, BatchLine, parse_batch_file

logger = logging.getLogger(__name__)


@dataclass
class Progress:
    total: int
    completed: int = 0
    failed: int = 0

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
    read_input: Callable[[], Awaitable[bytes]]
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

    def rid(self, line: int) -> str:
        return f"{self.job_uid}-{line}"

    async def flush(self) -> None:
        """Write buffered results, then acknowledge them on their pods (in that order)."""
        if self._results:
            await self.sink.write(dict(self._results))
            self._results.clear()
        acks, self._acks = self._acks, []
        for pod, rid in acks:
            try:
                await self.pods.ack(pod, rid)
            except PodError as e:  # the result is safe in the sink; the pod keeps a copy
                logger.info("ack of %s on %s failed: %s", rid, pod.name, e)

    # ------------------------------------------------------------ the loop
    async def run(self, should_stop: Callable[[], str | None]) -> tuple[str, Progress]:
        """Dispatch until every line has a result, or until ``should_stop`` names a reason.

        Returns ("Succeeded" | "Expired" | <stop reason>, progress).
        """
        items = parse_batch_file(await self.read_input(), self.spec.endpoint)
        written = await self.sink.written()
        progress = Progress(total=len(items))
        for it in items:
            if it.line in written:
                ok = json.loads(written[it.line]).get("error") is None
                progress.completed += ok
                progress.failed += not ok
            elif isinstance(it, BadLine):
                err = {"code": it.code, "message": it.message, "line": it.line}
                self._record(it.line, it.custom_id, None, None, None, err, progress)
            else:
                self._pending[it.line] = it
        await self.flush()
        await self.report(progress)
        deadline = None
        if self.spec.completion_window:
            deadline = (self.started_at or time.time()) + window_seconds(
                self.spec.completion_window
            )
        while self._pending or self._inflight:
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
            pods = sorted(await self.ready_pods(), key=lambda p: p.name)
            await self._submit(pods, progress)
            await self._collect(pods, progress)
            await self.flush()
            await self.report(progress)
            if self._pending or self._inflight:
                await asyncio.sleep(self.poll_s)
        return "Succeeded", progress

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
        ok = error is None and (code is None or code < 400)
        progress.completed += ok
        progress.failed += not ok

    async def _submit(self, pods: list[PodAddress], progress: Progress) -> None:
        if not pods:
            return
        now = time.monotonic()
        per_pod: dict[str, int] = {}
        for f in self._inflight.values():
            per_pod[f.pod.name] = per_pod.get(f.pod.name, 0) + 1
        for line, item in list(self._pending.items()):
            pod = pods[line % len(pods)]
            if self._backoff.get(pod.name, 0) > now:
                usable = [p for p in pods if self._backoff.get(p.name, 0) <= now]
                if not usable:
                    return
                pod = usable[line % len(usable)]
            if per_pod.get(pod.name, 0) >= self.spec.parallelism:
                continue
            req = OfflineSubmit(id=self.rid(line), url=self.spec.endpoint, body=item.body)
            try:
                await self.pods.submit(pod, req)
            except PodError as e:
                if e.status in (0, 429) or e.status >= 500:
                    self._backoff[pod.name] = now + (e.retry_after_s or 2.0)
                    continue
                # the pod refused this line for good (e.g. 409: same id, another body)
                err = {"code": "rejected", "message": e.message, "line": line}
                self._record(line, item.custom_id, None, e.status, None, err, progress)
                del self._pending[line]
                continue
            del self._pending[line]
            self._inflight[line] = _Inflight(item, pod, now)
            per_pod[pod.name] = per_pod.get(pod.name, 0) + 1

    async def _collect(self, pods: list[PodAddress], progress: Progress) -> None:
        live = {p.name: p for p in pods}
        now = time.monotonic()
        for line, f in list(self._inflight.items()):
            pod = live.get(f.pod.name)
            if pod is None:  # the pod is gone or unready: resubmit once it is clearly lost
                if now - f.since > self.lost_after_s:
                    self._requeue(line, f)
                continue
            f.pod = pod  # same name, maybe a new address after a restart
            try:
                res: OfflineResult | None = await self.pods.result(pod, self.rid(line))
            except PodError:
                continue  # unreachable for now; the request is durable on the pod
            f.since = now
            if res is None:  # the pod lost its state (new pod): submit again
                self._requeue(line, f)
            elif res.state in ("done", "failed"):
                self._record(
                    line,
                    f.line.custom_id,
                    res.id,
                    res.status_code,
                    res.response,
                    res.error,
                    progress,
                )
                self._acks.append((pod, res.id))
                del self._inflight[line]
            elif res.state == "cancelled":
                self._requeue(line, f)

    def _requeue(self, line: int, f: _Inflight) -> None:
        del self._inflight[line]
        self._pending[line] = f.line

    async def _abandon(self) -> None:
        """Stop: cancel what is queued on pods (results already written stay)."""
        for line, f in list(self._inflight.items()):
            try:
                await self.pods.ack(f.pod, self.rid(line))
            except PodError as e:
                logger.info("cancel of %s on %s failed: %s", self.rid(line), f.pod.name, e)
        self._inflight.clear()
        self._pending.clear()

    async def _expire(self, progress: Progress) -> None:
        lines = {**{n: f.line for n, f in self._inflight.items()}, **self._pending}
        await self._abandon()
        for n, item in lines.items():
            err = {"code": "batch_expired", "message": "the completion window passed", "line": n}
            self._record(n, item.custom_id, None, None, None, err, progress)
