"""examples/online_traffic.py against a streaming OpenAI-shaped stub: it counts requests,
errors and reports TTFT/TBT percentiles."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse

from hygen_pod.dev.pod_process import free_port

ROOT = Path(__file__).resolve().parents[2]


def stub() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        if body["model"] != "m":
            return JSONResponse({"error": {"message": "no such model"}}, status_code=404)

        async def events():
            for word in ("a", "b", "c", "d"):
                await asyncio.sleep(0.01)
                chunk = {"choices": [{"delta": {"content": word}}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def test_online_traffic_reports_latency_and_errors():
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(stub(), host="127.0.0.1", port=port, log_level="warning")
    )
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.01)
    try:
        run = lambda model: subprocess.run(  # noqa: E731
            [sys.executable, str(ROOT / "examples" / "online_traffic.py"), "--url",
             f"http://127.0.0.1:{port}", "--model", model, "--qps", "20", "--seconds", "1"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        ok = run("m")
        assert ok.returncode == 0, ok.stderr
        n = int(ok.stdout.split("requests ")[1].split(",")[0])
        assert n >= 5 and "errors 0" in ok.stdout
        tbt_p50 = float(ok.stdout.split("TBT  p50 ")[1].split(" ms")[0])
        assert 5 < tbt_p50 < 100  # the stub spaces tokens 10 ms apart
        bad = run("other")
        assert "errors 0" not in bad.stdout and "HTTP 404" in bad.stdout
    finally:
        server.should_exit = True
        t.join(10)
