"""When the pod had a request's whole body: where its TTFT starts, as a client sees it.

vLLM renders and tokenizes requests on one worker thread before they reach the engine,
and the pod's ``generate`` wrapper (where token times are taken) only sees a request
after that. A request that queued there behind others (a batch's prompts, a burst of
long online ones) waited without the SLO window seeing it. `ArrivalClock` notes the
moment the last body chunk arrived, in the request's context; the wrapper starts the
TTFT there (`body_received`). A slow upload is not counted: the clock starts once the
body is in, so a client cannot inflate the metric the operator tunes on by trickling it.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

from hygen_pod.server.access import ASGIApp, Scope


class _Arrival:
    """One request's clock; shared by reference with the tasks its handler spawns."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: float | None = None


_ARRIVAL: ContextVar[_Arrival | None] = ContextVar("hygen_arrival", default=None)


def body_received() -> float | None:
    """``time.monotonic()`` when this context's HTTP request body was complete; None
    outside an HTTP request (the offline runner) or before the body is in."""
    arrival = _ARRIVAL.get()
    return None if arrival is None else arrival.at


class ArrivalClock:
    """ASGI middleware: puts a clock in each HTTP request's context and stops it when
    the last chunk of the body arrives (a request without a body: at once)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        arrival = _Arrival()
        if scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            arrival.at = time.monotonic()

        async def timed_receive() -> Any:
            message = await receive()
            if (
                arrival.at is None
                and message.get("type") == "http.request"
                and not message.get("more_body", False)
            ):
                arrival.at = time.monotonic()
            return message

        token = _ARRIVAL.set(arrival)
        try:
            return await self.app(scope, timed_receive, send)
        finally:
            _ARRIVAL.reset(token)
