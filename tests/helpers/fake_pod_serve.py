"""``hygen-pod serve`` with the fake engine, as a process: the kubelet stand-in runs this for
pods of ServingSLOs whose model is ``tiny`` so e2e tests can kill -9 a pod without vLLM."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from hygen_pod.contract.control import OfflineControl
from hygen_pod.contract.profile import ProfileDocument
from hygen_pod.server.access import read_key_file
from hygen_pod.server.listeners import listeners, serve_all
from hygen_pod.server.pod_app import Pod, PodSettings, attach, running
from tests.helpers.fake_pod import FakeEngine


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--hygen-profile")
    p.add_argument("--control-token-file")
    p.add_argument("--api-key-file")
    p.add_argument("--admin-port", type=int)
    p.add_argument("--slo", nargs="*", default=[])
    p.add_argument("--batch-gateway")
    args, _engine_args = p.parse_known_args(argv)
    if not Path(args.model).is_dir() and args.model != "tiny":  # as `hygen-pod serve` checks
        print(f"error: --model {args.model}: no such folder", file=sys.stderr)
        return 2
    profile = ProfileDocument.load(args.hygen_profile) if args.hygen_profile else None
    settings = PodSettings(
        state_dir=Path(args.state_dir),
        control_token=Path(args.control_token_file).read_text().strip(),
        api_keys=read_key_file(args.api_key_file) if args.api_key_file else [],
        admin_port=args.admin_port,
        batch_gateway=args.batch_gateway,
        slo_targets_ms={k: float(v) for k, v in (s.split("=") for s in args.slo)},
        profile_path=Path(args.hygen_profile) if profile else None,
        has_predictor=profile is not None,
        initial_control=profile.control() if profile else OfflineControl(),
    )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    engine = FakeEngine(
        delay_s=float(os.environ.get("FAKE_ENGINE_DELAY_S", "0.02")),
        pad_bytes=int(os.environ.get("FAKE_ENGINE_PAD_BYTES", "0")),
    )
    pod = Pod(settings, engine)

    async def online_load(tbt_ms: float) -> None:
        """Synthetic online traffic for retuning tests: 20 requests/s at this TBT."""
        while True:
            pod.window.first_token("online", 0.05)
            for _ in range(8):
                pod.window.next_tokens("online", tbt_ms / 1e3)
            pod.window.finished("online")
            await asyncio.sleep(0.05)

    @asynccontextmanager
    async def lifespan(_app):
        async with running(pod):
            tbt = os.environ.get("FAKE_ONLINE_TBT_MS")
            load = asyncio.create_task(online_load(float(tbt))) if tbt else None
            yield
            if load is not None:
                load.cancel()

    app = FastAPI(lifespan=lifespan)
    attach(app, pod)

    @app.post("/v1/completions")
    async def online(request: Request) -> JSONResponse:
        """The online path (vLLM's own route on a real pod), answered by the fake engine."""
        code, body = await engine("/v1/completions", await request.json())
        return JSONResponse(body, status_code=code)

    servers = listeners(app, args.host, args.port, args.admin_port, log_level="warning")
    asyncio.run(serve_all(servers, handle_signals=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
