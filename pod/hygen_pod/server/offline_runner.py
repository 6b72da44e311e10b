"""Runs queued offline requests through the engine and records each result once.

The runner keeps up to `max_inflight` offline requests inside the engine, so the
HyGen scheduler's own offline queue (prefix-trie order, latency budget) decides
what runs when; the runner only feeds it, `max_starting` at a time through vLLM's
front end (`start_gate.py`: online requests share its tokenizer queue). Results go
to the store with a compare-and-set, so a result is written once; requests running
when the process dies are still queued in the store and run again after a restart.
Results finishing together are committed together (group commit: one transaction
and one fsync for all that arrived while the previous commit ran), and a request
counts as finished only once its result is committed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hygen_pod.contract.settings import CLASS_KEY
from hygen_pod.server.offline_store import OfflineStore, Queued
from hygen_pod.server.start_gate import StartGate

logger = logging.getLogger("hygen.offline")

# (url, body) -> (HTTP status, JSON body). The body already carries the offline marker.
Executor = Callable[[str, dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]
T = TypeVar("T")


def mark_offline(rid: str, body: dict[str, Any]) -> dict[str, Any]:
    """The request body as the engine sees it: offline class, our id, never streamed."""
    xargs = dict(body.get("vllm_xargs") or {})
    xargs[CLASS_KEY] = "offline"
    return {**body, "vllm_xargs": xargs, "request_id": rid.replace(":", "-"), "stream": False}


class OfflineRunner:
    """Feeds the engine from the store; finalizes batches; honours cancel and expiry."""

    def __init__(
        self,
        store: OfflineStore,
        execute: Executor,
        *,
        max_inflight: int = 256,
        max_starting: int = 2,
        poll_s: float = 0.5,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.execute = execute
        self.max_inflight = max_inflight
        # Requests past the store but not yet in the engine (tokenizer queue, engine add).
        self.start_gate = StartGate(max_starting)
        self.poll_s = poll_s
        self.on_result = on_result
        self.clock: Callable[[], float] = time.time  # wall clock, for completion windows
        self.inflight: dict[str, asyncio.Task] = {}
        self.accepting = True
        self._wake = asyncio.Event()
        self._last_housekeeping = 0.0
        self.depth: dict[str, int] = {}  # requests per state, refreshed with housekeeping
        self._loop_task: asyncio.Task | None = None
        # Held while picking and starting requests, and while deleting them: a delete
        # can then never fall between "read as queued" and "task created".
        self._starting = asyncio.Lock()
        # One thread owns every SQLite call, off the event loop that serves online traffic.
        self._db = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hygen-store")
        self._to_commit: list[tuple[tuple[Any, ...], asyncio.Future[bool]]] = []
        self._committer: asyncio.Task | None = None

    async def db(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, lambda: fn(*args, **kw))

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                # Batch bookkeeping (counts, finalizing) at most every poll_s: results
                # can arrive hundreds per second and each would otherwise rescan batches.
                if time.monotonic() - self._last_housekeeping >= self.poll_s:
                    self._last_housekeeping = time.monotonic()
                    await self._housekeeping()
                    await self.refresh_depth()
                if self.accepting:
                    await self._fill()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep serving: log and retry on the next tick
                logger.exception("offline runner iteration failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)

    async def _fill(self) -> None:
        async with self._starting:
            room = self.max_inflight - len(self.inflight)
            for q in await self.db(self.store.next_queued, room, set(self.inflight)):
                task = asyncio.get_running_loop().create_task(self._run(q))
                self.inflight[q.id] = task
                # A done-callback, not a `finally` in _run: a task cancelled before its
                # first step never enters its coroutine, and its slot would leak for good.
                task.add_done_callback(lambda t, rid=q.id: self._finished(rid, t))

    def _finished(self, rid: str, task: asyncio.Task) -> None:
        if self.inflight.get(rid) is task:
            del self.inflight[rid]
        self.wake()

    async def _run(self, q: Queued) -> None:
        try:
            async with self.start_gate.entering():
                code, resp = await self.execute(q.url, mark_offline(q.id, q.body))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # an engine-side failure of this request only
            logger.exception("offline request %s failed", q.id)
            code, resp = 500, {"error": {"message": str(e), "type": "InternalServerError"}}
        ok = 200 <= code < 300
        err = None if ok else _error_of(code, resp)
        # Written only under the generation that ran: a request deleted and re-posted
        # under the same id meanwhile is another request, and keeps its own result.
        written = await self._commit((q.id, code, resp, err, q.seq))
        if written and self.on_result is not None:
            self.on_result("done" if ok else "failed")

    async def forget(self, delete: Callable[[], list[str]]) -> list[str]:
        """Delete requests from the store (``delete`` returns their ids) and stop those
        running, with no start in between: a request deleted here never starts again."""
        async with self._starting:
            ids = await self.db(delete)
            await self.cancel_requests(ids)
        return ids

    async def _housekeeping(self) -> None:
        """Cancel, expire and finalize batches (also those left mid-way by a crash)."""
        now = self.clock()
        for bid, status, expires_at in await self.db(self.store.open_batches):
            expired = status == "in_progress" and expires_at is not None and now > expires_at
            if status == "cancelling" or expired:
                await self._stop_batch(bid)
                code, msg = (
                    ("batch_expired", "the batch's completion window ended first")
                    if expired
                    else ("batch_cancelled", "the batch was cancelled first")
                )
                await self.db(self.store.close_open_requests, bid, code, msg)
                await self.db(self.store.finalize_batch, bid, expired=expired)
            elif await self.db(self.store.queued_count, bid) == 0:
                await self.db(self.store.finalize_batch, bid)

    async def refresh_depth(self) -> None:
        self.depth = await self.db(self.store.depth)

    async def _stop_batch(self, batch_id: str) -> None:
        await _cancel([t for rid, t in self.inflight.items() if rid.startswith(batch_id + ":")])

    async def _commit(self, result: tuple[Any, ...]) -> bool:
        """Queue a result for the next group commit; True once it is written."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._to_commit.append((result, fut))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.get_running_loop().create_task(self._commit_all())
        return await fut

    async def _commit_all(self) -> None:
        while self._to_commit:
            group, self._to_commit = self._to_commit, []
            try:
                written = await self.db(self.store.complete_many, [r for r, _ in group])
            except Exception as e:  # each waiting request sees the failure, as before
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), ok in zip(group, written, strict=True):
                if not fut.done():  # a request cancelled meanwhile no longer waits
                    fut.set_result(ok)

    async def cancel_requests(self, rids: list[str]) -> None:
        """Stop these requests if they are running in the engine (each writes nothing)."""
        await _cancel([t for rid in rids if (t := self.inflight.get(rid)) is not None])

    async def drain(self, timeout_s: float) -> int:
        """Stop starting work, wait up to ``timeout_s`` for running requests, then abort
        the rest (they stay queued and run after restart). Returns how many were aborted."""
        self.accepting = False
        deadline = time.monotonic() + timeout_s
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        left = list(self.inflight.values())
        await _cancel(left)
        await self._housekeeping()
        return len(left)

    async def stop(self) -> None:
        await _cancel([self._loop_task] if self._loop_task is not None else [])
        await _cancel(list(self.inflight.values()))
        self._db.shutdown(wait=True)


async def _cancel(tasks: list[asyncio.Task]) -> None:
    """Cancel tasks and wait until each has finished (a cancelled request writes nothing)."""
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _error_of(code: int, resp: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-style {code, message} from an error response body."""
    e = resp.get("error") if isinstance(resp, dict) else None
    if isinstance(e, dict):
        return {
            "code": str(e.get("type") or e.get("code") or code),
            "message": str(e.get("message")),
        }
    return {"code": str(code), "message": str(resp)}
