"""Lets only a few offline requests at a time through vLLM's front end on their way into
the engine, so online requests never queue behind a whole batch there.

vLLM renders and tokenizes every request on one worker thread, first come first served
(`--renderer-num-workers`, default 1). The offline runner starts up to 256 requests the
moment a batch arrives; all of them queued there, and an online request arriving then
waited for every one: on the tiny CPU model with 4.5 KB prompts, online TTFT reached
0.8-2.5 s after a batch was submitted, against 61-105 ms two at a time, with no offline
token generated (`bench/batch_arrival.py`; docs/pod.md, "Starting offline requests").

A request holds a place from before vLLM's handler sees it until it reaches the engine
(`reached_engine`, called from the pod's ``generate`` wrapper) or fails before that.
The place travels with the request's context, so a handler that fans out into tasks
still releases it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar

_RELEASE: ContextVar[Callable[[], None] | None] = ContextVar("hygen_start_gate", default=None)


class StartGate:
    """At most ``limit`` requests between `entering()` and `reached_engine()` at once."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a start gate needs limit >= 1, got {limit}")
        self._places = asyncio.Semaphore(limit)
        self.starting = 0  # requests holding a place now

    @contextlib.asynccontextmanager
    async def entering(self) -> AsyncIterator[None]:
        """Wait for a place; hold it until the request reaches the engine or this block
        ends (an error, a cancellation or a request refused before the engine)."""
        await self._places.acquire()
        self.starting += 1
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.starting -= 1
                self._places.release()

        token = _RELEASE.set(release)
        try:
            yield
        finally:
            _RELEASE.reset(token)
            release()


def reached_engine() -> None:
    """The request in this context is in the engine now: give its place to the next one.
    A no-op for requests that never held one (online requests)."""
    release = _RELEASE.get()
    if release is not None:
        release()
