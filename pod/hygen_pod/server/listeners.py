"""The pod's HTTP listeners: the main port, and the admin port when there is one.

Both serve the same app; `AccessMiddleware` decides by the port a request came in on which
routes answer there. Only the main listener runs the app's lifespan (vLLM's start-up and
shutdown run once).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import uvicorn


def listeners(
    app: Any, host: str, port: int, admin_port: int | None, **config: Any
) -> list[uvicorn.Server]:
    """uvicorn servers for ``app``: main first, then admin; signal handling left to the caller."""
    out = [uvicorn.Server(uvicorn.Config(app, host=host, port=port, **config))]
    if admin_port is not None:
        admin = uvicorn.Config(app, host=host, port=admin_port, lifespan="off", **config)
        out.append(uvicorn.Server(admin))
    for s in out:
        s.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    return out


async def serve_all(servers: list[uvicorn.Server], *, handle_signals: bool = False) -> None:
    """Serve until every server has stopped; one stopping (or failing) stops the others.
    ``handle_signals``: SIGTERM/SIGINT stop them gracefully, as uvicorn alone would."""
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: [setattr(s, "should_exit", True) for s in servers])
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:
        if t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
