"""The start gate: only a few offline requests at a time on their way into the engine
(vLLM's one tokenizer thread, which online requests share), however many the runner
keeps inside it."""

from __future__ import annotations

import asyncio
import io
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from openai import OpenAI

from hygen_pod.server.start_gate import StartGate, reached_engine
from tests.helpers.fake_pod import FakePodServer

EP = "/v1/completions"


def test_at_most_limit_are_starting_and_all_get_through() -> None:
    async def main() -> tuple[int, list[int]]:
        gate, peak, order = StartGate(2), 0, []

        async def one(i: int) -> None:
            nonlocal peak
            async with gate.entering():
                peak = max(peak, gate.starting)
                await asyncio.sleep(0.001)  # the tokenizer
                order.append(i)
                reached_engine()
                assert gate.starting <= 1  # its own place is given back at once
                await asyncio.sleep(0.01)  # generating: no place held

        await asyncio.gather(*(one(i) for i in range(10)))
        assert gate.starting == 0
        return peak, order

    peak, order = asyncio.run(main())
    assert peak == 2
    assert sorted(order) == list(range(10))


def test_a_place_comes_back_on_errors_cancels_and_child_tasks() -> None:
    async def main() -> None:
        gate = StartGate(1)
        with pytest.raises(ValueError):
            async with gate.entering():
                raise ValueError("refused before the engine (a 400)")
        assert gate.starting == 0

        async def held_forever() -> None:
            async with gate.entering():
                await asyncio.Event().wait()

        t = asyncio.create_task(held_forever())
        await asyncio.sleep(0)
        assert gate.starting == 1
        waiting = asyncio.create_task(held_forever())  # queued behind it
        await asyncio.sleep(0)
        waiting.cancel()
        t.cancel()
        await asyncio.gather(t, waiting, return_exceptions=True)
        assert gate.starting == 0

        # vLLM's handler may iterate the engine's generator in a task of its own: the
        # place travels with the request's context, and a second call is a no-op
        async with gate.entering():
            await asyncio.create_task(_reach())
            assert gate.starting == 0
            reached_engine()
            assert gate.starting == 0
            async with asyncio.timeout(1), gate.entering():  # the one place is free again
                assert gate.starting == 1
                # ... and only one: released twice would have made it two
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.05), gate.entering():
                        pass
        assert gate.starting == 0

    asyncio.run(main())


async def _reach() -> None:
    reached_engine()


def test_outside_a_gate_reaching_the_engine_is_a_no_op_and_limits_are_checked() -> None:
    reached_engine()  # an online request
    with pytest.raises(ValueError, match="limit >= 1"):
        StartGate(0)


class TokenizingEngine:
    """A fake engine with vLLM's front end in it: a tokenizer step before the request
    reaches the engine, then generation. Records the most requests in either stage."""

    def __init__(self) -> None:
        self.tokenizing = self.generating = 0
        self.peak_tokenizing = self.peak_generating = 0

    async def __call__(self, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.tokenizing += 1
        self.peak_tokenizing = max(self.peak_tokenizing, self.tokenizing)
        await asyncio.sleep(0.005)
        self.tokenizing -= 1
        reached_engine()
        self.generating += 1
        self.peak_generating = max(self.peak_generating, self.generating)
        await asyncio.sleep(0.1)
        self.generating -= 1
        return 200, {"object": "text_completion", "echo": body.get("prompt")}


def test_the_runner_starts_a_batch_two_at_a_time_but_keeps_many_inside(tmp_path) -> None:
    eng = TokenizingEngine()
    n = 24
    with FakePodServer(tmp_path, eng, max_inflight=16) as srv:  # max_starting: default 2
        client = OpenAI(base_url=srv.url + "/v1", api_key="unused")
        data = "\n".join(
            json.dumps({"custom_id": f"c{i}", "method": "POST", "url": EP,
                        "body": {"model": "tiny", "prompt": f"p{i}"}})
            for i in range(n)
        ).encode()  # fmt: skip
        f = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
        bid = client.batches.create(input_file_id=f.id, endpoint=EP, completion_window="24h").id
        deadline = time.monotonic() + 30
        while (b := client.batches.retrieve(bid)).status != "completed":
            assert time.monotonic() < deadline, f"batch stuck: {b.status} {b.request_counts}"
            time.sleep(0.05)
        assert b.request_counts is not None and b.request_counts.completed == n
    assert eng.peak_tokenizing == 2
    assert eng.peak_generating > 2  # the gate paces the way in, not the work inside


def test_the_pods_generate_wrapper_gives_the_place_back_before_any_output() -> None:
    """The real hook: `meter`'s wrapper of vLLM's ``engine_client.generate`` releases the
    place when the engine is asked for the request, before its first output."""
    pytest.importorskip("vllm")
    from vllm.sampling_params import SamplingParams

    from hygen_pod.server.slo_window import SLOWindow
    from hygen_pod.vllm_adapter.server import meter

    async def main() -> None:
        gate = StartGate(1)
        asked, go = asyncio.Event(), asyncio.Event()

        class Client:
            async def generate(self, prompt: Any, params: Any, request_id: str):  # type: ignore[no-untyped-def]
                asked.set()
                await go.wait()
                yield SimpleNamespace(outputs=[SimpleNamespace(token_ids=[7])], finished=True)

        client = Client()
        meter(client, SLOWindow())

        async def offline(params: Any) -> None:
            async with gate.entering():
                async for _ in client.generate("p", params, "r"):
                    pass

        for params in (SamplingParams(max_tokens=1), None):
            asked.clear()
            go.clear()
            task = asyncio.create_task(offline(params))
            await asyncio.wait_for(asked.wait(), 5)
            assert gate.starting == 0  # in the engine, nothing generated yet
            go.set()
            await task

    asyncio.run(main())
