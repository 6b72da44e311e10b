"""The pod's routes on a bare FastAPI app with a fake engine, served by uvicorn in a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from hygen_pod.dev.pod_process import free_port
from hygen_pod.server.listeners import listeners, serve_all
from hygen_pod.server.pod_app import Pod, PodSettings, attach, running
from hygen_pod.server.start_gate import reached_engine


class FakeEngine:
    """Answers completions after `delay_s`; can hold requests to simulate a crash mid-batch."""

    def __init__(
        self, delay_s: float = 0.01, hold_after: int | None = None, pad_bytes: int = 0
    ) -> None:
        """``pad_bytes``: each response carries this much text (results of a real size)."""
        self.delay_s = delay_s
        self.hold_after = hold_after
        self.pad_bytes = pad_bytes
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.calls.append(body)
        # In the engine at once (the pod's generate wrapper says so after vLLM's tokenizer);
        # a held request stays there. Unlike vLLM, an unknown model is refused only after
        # the delay: tests hold requests with any body.
        reached_engine()
        if self.hold_after is not None and len(self.calls) > self.hold_after:
            await asyncio.Event().wait()  # never returns: cancelled on shutdown
        await asyncio.sleep(self.delay_s)
        if body.get("model") != "tiny":
            return 404, {
                "error": {
                    "message": f"model {body.get('model')!r} not found",
                    "type": "NotFoundError",
                    "code": 404,
                }
            }
        out = {
            "object": "text_completion",
            "echo": body.get("prompt"),
            "xargs": body.get("vllm_xargs"),
        }
        if self.pad_bytes:
            out["text"] = "x" * self.pad_bytes
        return 200, out


class FakePodServer:
    def __init__(
        self, state_dir: Path, engine: FakeEngine, *, admin: bool = False, **settings: Any
    ) -> None:
        """``admin``: the operator's routes on a second port (``admin_port``), as on a cluster."""
        self.port = free_port()
        self.admin_port = free_port() if admin else None
        if admin:
            settings["admin_port"] = self.admin_port
        self.engine = engine
        self.registry = CollectorRegistry()
        self.pod = Pod(
            PodSettings(state_dir=state_dir, control_token="secret", **settings),
            engine,
            registry=self.registry,
        )

        @asynccontextmanager
        async def lifespan(_app):
            self.loop = asyncio.get_running_loop()
            async with running(self.pod):
                yield

        app = self.app = FastAPI(lifespan=lifespan)
        attach(app, self.pod)
        self.servers = listeners(app, "127.0.0.1", self.port, self.admin_port, log_level="warning")
        self.thread = threading.Thread(
            target=lambda: asyncio.run(serve_all(self.servers)), daemon=True
        )
        self.http = httpx.Client(base_url=self.url)
        # the operator's client: its token on every call, at the port its routes live on
        op_url = f"http://127.0.0.1:{self.admin_port}" if admin else self.url
        self.op = httpx.Client(base_url=op_url, headers={"Authorization": "Bearer secret"})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro, timeout_s: float = 10) -> Any:
        """Run a coroutine on the server's event loop (where the pod's runner lives)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def __enter__(self) -> FakePodServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not all(s.started for s in self.servers):
            assert time.monotonic() < deadline, "fake pod did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.http.close()
        self.op.close()
        for s in self.servers:
            s.should_exit = True
        self.thread.join(10)
