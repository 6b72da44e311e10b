"""The pod's online TTFT starts when the request's body was in, as a client sees it: a
wait in vLLM's front end (the tokenizer queue) counts, a slow upload does not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import Request

from hygen_pod.server.arrival import ArrivalClock, body_received
from tests.helpers.fake_pod import FakeEngine, FakePodServer

QUEUED_S = 0.3  # the handler's wait before the engine (vLLM's tokenizer thread)
UPLOAD_GAP_S = 1.0  # a client's pause between two body chunks


class _Ttfts:
    """The part of `SLOWindow` the wrapper feeds: the TTFTs, per class."""

    def __init__(self) -> None:
        self.ttft: dict[str, list[float]] = {"online": [], "offline": []}

    def first_token(self, cls: str, ttft_s: float) -> None:
        self.ttft[cls].append(ttft_s)

    def next_tokens(self, cls: str, gap_s: float, n: int = 1) -> None:
        pass

    def finished(self, cls: str) -> None:
        pass


def _metered_client(window: _Ttfts) -> Any:
    pytest.importorskip("vllm")
    from hygen_pod.vllm_adapter.server import meter

    class Client:
        async def generate(self, prompt: Any, params: Any, request_id: str):  # type: ignore[no-untyped-def]
            yield SimpleNamespace(outputs=[SimpleNamespace(token_ids=[7])], finished=True)

    client = Client()
    meter(client, window)  # type: ignore[arg-type]
    return client


def _params(cls: str) -> Any:
    from vllm.sampling_params import SamplingParams

    from hygen_pod.contract.settings import CLASS_KEY

    return SamplingParams(max_tokens=1, extra_args={CLASS_KEY: cls})


def test_online_ttft_counts_the_front_end_wait_and_not_the_upload(tmp_path: Path) -> None:
    """Through the pod's own app (its middleware, FastAPI, a real HTTP server): a handler
    that waits before the engine, as vLLM's does behind its tokenizer queue."""
    window = _Ttfts()
    client = _metered_client(window)

    async def slow_front_end(request: Request) -> dict[str, Any]:
        body = await request.json()
        await asyncio.sleep(QUEUED_S)  # rendered and tokenized behind other requests

        # as vLLM's handlers do: generate per prompt, from tasks of their own
        async def one() -> None:
            async for _ in client.generate("p", _params(body["class"]), "r"):
                pass

        await asyncio.gather(asyncio.create_task(one()))
        return {}

    srv = FakePodServer(tmp_path, FakeEngine())
    srv.app.add_api_route("/v1/slow_front_end", slow_front_end, methods=["POST"])

    async def in_two_chunks(payload: bytes) -> AsyncIterator[bytes]:
        yield payload[:5]
        await asyncio.sleep(UPLOAD_GAP_S)
        yield payload[5:]

    async def post(cls: str, slow_upload: bool) -> None:
        payload = f'{{"class": "{cls}"}}'.encode()
        content = in_two_chunks(payload) if slow_upload else payload
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.post(
                "/v1/slow_front_end", content=content, headers={"content-type": "application/json"}
            )
            assert r.status_code == 200, r.text

    with srv:
        for slow_upload in (False, True):
            asyncio.run(post("online", slow_upload))
        asyncio.run(post("offline", True))
    fast, slow = window.ttft["online"]
    assert fast >= QUEUED_S, "the front-end wait is part of online TTFT"
    assert QUEUED_S <= slow < QUEUED_S + UPLOAD_GAP_S / 2, "a slow upload is not"
    # offline requests reach the engine from the runner, not a client: timed from there
    (offline,) = window.ttft["offline"]
    assert offline < QUEUED_S


def test_the_clock_stops_at_the_last_body_chunk_and_outside_requests_there_is_none() -> None:
    seen: list[float | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(body_received())  # headers in, body not yet
        while (await receive()).get("more_body"):
            pass
        seen.append(body_received())

    async def main() -> tuple[float, float]:
        chunks = [
            {"type": "http.request", "body": b"a", "more_body": True},
            {"type": "http.request", "body": b"b", "more_body": False},
        ]
        marks: list[float] = []

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(0.05)
            marks.append(time.monotonic())
            return chunks.pop(0)

        await ArrivalClock(app)({"type": "http", "method": "POST"}, receive, None)
        return marks[0], marks[1]

    first, last = asyncio.run(main())
    assert seen[0] is None
    assert seen[1] is not None and last <= seen[1] and seen[1] - last < 0.04 < seen[1] - first
    assert body_received() is None  # outside a request


def test_the_pod_app_times_every_request(tmp_path: Path) -> None:
    srv = FakePodServer(tmp_path, FakeEngine())
    assert any(m.cls is ArrivalClock for m in srv.app.user_middleware)
