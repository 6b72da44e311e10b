"""``hygen-pod serve``: vLLM's own OpenAI server with the HyGen scheduler and the pod routes.

Online endpoints (completions, chat, models, tokenize, health, /metrics) are
vLLM's, built by its ``build_app``/``init_app_state``. On top of that this
module: loads the HyGen scheduler plugin, times every token per request class
(by wrapping the engine client's ``generate``), runs offline requests through
vLLM's own completion/chat handlers, mounts the pod routes (`hygen_pod.server.pod_app`)
and drains gracefully on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

from hygen_pod.contract.control import OfflineControl, write_control
from hygen_pod.contract.settings import request_class
from hygen_pod.server.access import read_key_file
from hygen_pod.server.arrival import body_received
from hygen_pod.server.listeners import listeners, serve_all
from hygen_pod.server.pod_app import Pod, PodSettings, attach, running, validation_message
from hygen_pod.server.slo_window import SLOWindow
from hygen_pod.server.start_gate import reached_engine

logger = logging.getLogger("hygen.server")
SCHEDULER_CLS = "hygen_pod.vllm_adapter.scheduler.HyGenScheduler"


POD_GROUP = "HyGen pod"


def build_parser():
    """vLLM's full server parser with the HyGen pod options in front (also in --help)."""
    import argparse

    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from hygen_pod.vllm_adapter.cli_args import make_arg_parser

    class PodParser(FlexibleArgumentParser):
        def format_help(self) -> str:
            """Our options, with their descriptions, first; then vLLM's own help (its
            config groups; --help=GROUP or --help=all shows their options)."""
            if self._search_keyword is not None:
                return super().format_help()
            f = self._get_formatter()
            f.add_usage(self.usage, [], [])
            f.add_text(self.description)
            group = next(g for g in self._action_groups if g.title == POD_GROUP)
            f.start_section(POD_GROUP + " options")
            f.add_arguments(group._group_actions)
            f.end_section()
            kept = self.usage, self.description
            self.usage, self.description = argparse.SUPPRESS, None
            try:
                return (
                    f.format_help()
                    + "\nvLLM's options (--help=GROUP, or --help=all):\n"
                    + (super().format_help().lstrip("\n"))
                )
            finally:
                self.usage, self.description = kept

    p = PodParser(
        prog="hygen-pod serve",
        usage="hygen-pod serve --model MODEL [HyGen pod options] [vLLM server options]",
        description="HyGen serving pod: vLLM's OpenAI API with the HyGen scheduler, an "
        "OpenAI Batch API and a single-request offline API persisted in --state-dir, a "
        "token-protected control API and Prometheus metrics. All vLLM server options apply.",
    )
    g = p.add_argument_group(POD_GROUP)
    g.add_argument(
        "--state-dir",
        default="hygen-state",
        help="offline state (files, batches, results, control): mount a volume here",
    )
    g.add_argument(
        "--control-token-file",
        help="file holding the control API bearer token (else $HYGEN_CONTROL_TOKEN, "
        "else one is generated into STATE_DIR/control.token)",
    )
    g.add_argument(
        "--api-key-file",
        help="file of API keys (one per line; a mounted Secret) for the OpenAI, files and "
        "batch routes; each key owns the files and batches it creates. vLLM's --api-key "
        "and $VLLM_API_KEY are taken too. No key: those routes are open (warned at start)",
    )
    g.add_argument(
        "--admin-port",
        type=int,
        help="serve the operator's routes (/control, /v1/offline) on this port only, and "
        "nothing else there, so a NetworkPolicy can fence them off; default: main port",
    )
    g.add_argument(
        "--batch-gateway",
        help="forward /v1/files and /v1/batches to this URL (the operator's cluster-wide "
        "Batch API; set by the operator for a ServingSLO with batchApi)",
    )
    g.add_argument(
        "--hygen-profile",
        help="profile JSON (hygen-pod profile): its predictor, and the setting (budget or QPS, "
        "with its chunking) that did more offline work while profiling",
    )
    g.add_argument("--hygen-predictor", help="predictor JSON, when there is no profile")
    g.add_argument(
        "--budget-ms",
        type=float,
        help="initial offline latency budget per iteration (0 = online only)",
    )
    g.add_argument(
        "--offline-qps", type=float, help="initial mode HyGen*: offline request starts per second"
    )
    g.add_argument(
        "--slo",
        action="append",
        default=[],
        metavar="METRIC=MS",
        help="SLO target reported on /metrics, e.g. p99_tbt=50 (repeatable)",
    )
    g.add_argument("--slo-window-s", type=float, default=60.0, help="live metrics window")
    g.add_argument(
        "--offline-max-inflight",
        type=int,
        default=256,
        help="offline requests handed to the engine at once",
    )
    g.add_argument(
        "--offline-max-starting",
        type=int,
        default=2,
        help="offline requests on their way into the engine at once (vLLM's tokenizer "
        "queue, which online requests share: they wait behind at most this many)",
    )
    g.add_argument(
        "--offline-max-queued",
        type=int,
        default=10_000,
        help="queued single offline requests before POST returns 429",
    )
    g.add_argument(
        "--drain-timeout-s",
        type=float,
        default=30.0,
        help="on SIGTERM, wait this long for running work before exiting",
    )
    return make_arg_parser(p)


def _slo_targets(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for it in items:
        name, sep, val = it.partition("=")
        try:
            out[name.strip()] = float(val)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"--slo {it!r}: expected METRIC=MS, e.g. p99_tbt=50")
    return out


def api_keys(args: Namespace) -> list[str]:
    """The API keys from --api-key-file, vLLM's --api-key and $VLLM_API_KEY, taken away
    from vLLM: its own key check would also refuse the operator's token on /v1/offline."""
    keys = [k for k in (args.api_key or []) if k]
    if not keys and os.environ.get("VLLM_API_KEY"):
        keys.append(os.environ["VLLM_API_KEY"])
    if args.api_key_file:
        keys += read_key_file(args.api_key_file)
    args.api_key = None
    os.environ.pop("VLLM_API_KEY", None)
    return keys


# The serve option each PodSettings / OfflineControl field comes from, so a bad value is
# refused in one line naming what the user typed.
_FLAG_OF = {
    "qps": "--offline-qps",
    "budget_ms": "--budget-ms",
    "slo_targets_ms": "--slo",
    "window_s": "--slo-window-s",
    "max_inflight": "--offline-max-inflight",
    "max_starting": "--offline-max-starting",
    "max_queued": "--offline-max-queued",
    "drain_timeout_s": "--drain-timeout-s",
    "admin_port": "--admin-port",
    "batch_gateway": "--batch-gateway",
}


def pod_settings(args: Namespace) -> PodSettings:
    """The pod's settings from the serve options; ValueError naming the option for a bad
    value (one line, not pydantic's page)."""
    from pydantic import ValidationError

    try:
        return _pod_settings(args)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(x) for x in err["loc"]]
        where = _FLAG_OF.get(loc[0], loc[0]) if loc else ""
        if len(loc) > 1:  # a key inside the option's value (--slo p50=5): name it too
            where += f" ({'.'.join(loc)})"
        raise ValueError(f"{where}: {err['msg']}") from None


def _pod_settings(args: Namespace) -> PodSettings:
    token = os.environ.get("HYGEN_CONTROL_TOKEN")
    if args.control_token_file:
        token = Path(args.control_token_file).read_text().strip()
        if not token:
            raise ValueError(f"--control-token-file {args.control_token_file} is empty")
    if args.offline_qps is not None:
        initial = OfflineControl(mode="qps", qps=args.offline_qps)
    elif args.budget_ms is not None:
        initial = OfflineControl(mode="budget", budget_ms=args.budget_ms)
    elif args.hygen_profile:
        from hygen_pod.contract.profile import ProfileDocument

        # the mode that did more offline work while profiling, with its own chunking
        initial = ProfileDocument.load(args.hygen_profile).control()
    else:
        # No profile: offline work runs behind online work with no latency cap, so a
        # batch still completes; profile the pod (or set a budget) to protect SLOs.
        logger.warning("no --hygen-profile/--budget-ms: offline work runs uncapped behind online")
        initial = OfflineControl(mode="qps", qps=None)
    return PodSettings(
        state_dir=Path(args.state_dir),
        control_token=token,
        api_keys=api_keys(args),
        slo_targets_ms=_slo_targets(args.slo),
        window_s=args.slo_window_s,
        max_inflight=args.offline_max_inflight,
        max_starting=args.offline_max_starting,
        max_queued=args.offline_max_queued,
        drain_timeout_s=args.drain_timeout_s,
        admin_port=args.admin_port,
        batch_gateway=args.batch_gateway,
        profile_path=Path(args.hygen_profile) if args.hygen_profile else None,
        has_predictor=bool(args.hygen_profile or args.hygen_predictor),
        initial_control=initial,
    )


def configure_engine(args: Namespace, settings: PodSettings) -> None:
    """Point vLLM at the HyGen scheduler and its control/status files."""
    if args.hygen_profile and args.hygen_predictor:
        raise ValueError("give --hygen-profile or --hygen-predictor, not both")
    if args.scheduling_policy not in (None, "fcfs"):
        raise ValueError("--scheduling-policy must be fcfs: HyGen orders offline work itself")
    args.scheduler_cls = SCHEDULER_CLS
    extra = args.additional_config or {}
    if isinstance(extra, str):
        extra = json.loads(extra)
    hygen = dict(extra.get("hygen", {}))
    hygen.update(control_path=str(settings.control_path), status_path=str(settings.status_path))
    if args.hygen_profile:
        hygen["profile_path"] = str(Path(args.hygen_profile).resolve())
    if args.hygen_predictor:
        hygen["predictor_path"] = str(Path(args.hygen_predictor).resolve())
    # The control file is the source of truth; the scheduler reads it on start too.
    hygen["initial"] = settings.initial_control.model_dump()
    args.additional_config = {**extra, "hygen": hygen}


def meter(engine_client: Any, window: SLOWindow) -> None:
    """Time every generated token per request class, by wrapping ``generate``.

    A non-streaming request asks vLLM for its final output only; to see each
    token's time it is switched to cumulative outputs and only the final one is
    passed back, so callers get exactly what they asked for.
    """
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    inner = engine_client.generate

    async def generate(prompt: Any, sampling_params: Any, request_id: str, *a: Any, **kw: Any):
        reached_engine()  # rendered and tokenized: the next offline request may start
        if not isinstance(sampling_params, SamplingParams):
            async for out in inner(prompt, sampling_params, request_id, *a, **kw):
                yield out
            return
        cls = request_class(sampling_params.extra_args)
        final_only = sampling_params.output_kind == RequestOutputKind.FINAL_ONLY
        if final_only:
            sampling_params = sampling_params.clone()
            sampling_params.output_kind = RequestOutputKind.CUMULATIVE
        delta = sampling_params.output_kind == RequestOutputKind.DELTA
        last = time.monotonic()
        # An online request's TTFT counts from when its body was in (a client's view: the
        # front end's rendering and tokenizer queue included); offline, from here.
        received = body_received() if cls == "online" else None
        start = last if received is None else received
        seen = 0
        async for out in inner(prompt, sampling_params, request_id, *a, **kw):
            now = time.monotonic()
            total = sum(len(o.token_ids) for o in out.outputs)
            new = total if delta else total - seen
            seen = seen + total if delta else total
            if new > 0:
                if seen == new:
                    window.first_token(cls, now - start)
                    if new > 1:
                        window.next_tokens(cls, 0.0, new - 1)
                else:
                    window.next_tokens(cls, now - last, new)
                last = now
            if out.finished:
                window.finished(cls)
            if final_only and not out.finished:
                continue
            yield out

    engine_client.generate = generate


def make_executor(state: Any):
    """Run an offline request body through vLLM's own completion or chat handler."""
    from pydantic import ValidationError
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.entrypoints.serve import create_error_response

    async def execute(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if url == "/v1/completions":
            model, handler = CompletionRequest, state.openai_serving_completion.create_completion
        else:
            model, handler = ChatCompletionRequest, state.openai_serving_chat.create_chat_completion
        try:
            req = model.model_validate(body)
            resp = await handler(req)
        except asyncio.CancelledError:
            raise
        except ValidationError as e:
            msg, loc = validation_message(e)
            return 400, {
                "error": {"message": msg, "type": "BadRequestError", "param": loc, "code": 400}
            }
        except Exception as e:
            resp = create_error_response(e)
        data = resp.model_dump(mode="json")
        if "error" in data and isinstance(data["error"], dict):
            return int(data["error"].get("code") or 500), data
        return 200, data

    return execute


def _log_to_stderr() -> None:
    """The pod's own log lines (hygen.*) on stderr next to vLLM's, e.g. where a generated
    control token was written; vLLM configures only its own logger."""
    log = logging.getLogger("hygen")
    if not log.handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(levelname)s %(asctime)s [%(name)s] %(message)s"))
        log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False


async def serve(args: Namespace) -> None:
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client
    from vllm.entrypoints.launchers.app import build_app

    _log_to_stderr()
    settings = pod_settings(args)
    configure_engine(args, settings)
    # The initial control goes to the file before the engine starts (the scheduler
    # reads it first); after that the operator's PUT /control/offline changes it.
    write_control(settings.control_path, settings.initial_control)

    async with build_async_engine_client(args) as engine_client:
        tasks = await engine_client.get_supported_tasks()
        app = build_app(args, tasks, engine_client.model_config)
        await init_app_state(engine_client, app.state, args, tasks)
        pod = Pod(settings, make_executor(app.state))
        meter(engine_client, pod.window)
        attach(app, pod)
        servers = listeners(
            app,
            args.host or "0.0.0.0",
            args.port,
            settings.admin_port,
            log_level=args.uvicorn_log_level,
            access_log=not args.disable_uvicorn_access_log,
            timeout_graceful_shutdown=max(1, int(settings.drain_timeout_s)),
        )
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        async with running(pod):
            serve_task = asyncio.create_task(serve_all(servers))
            done, _ = await asyncio.wait(
                [serve_task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            if serve_task not in done:
                logger.info("draining: no new work; waiting up to %.0f s", settings.drain_timeout_s)
                pod.draining = True
                aborted = await pod.runner.drain(settings.drain_timeout_s)
                logger.info("drained; %d offline requests re-queued for the next start", aborted)
                for server in servers:
                    server.should_exit = True
                await serve_task


def check_model(argv: list[str], model: str) -> None:
    """A model must be named (vLLM would quietly fall back to a hub default and retry the
    network), and a model given as a path must be a model folder."""
    if not any(a == "--model" or a.startswith("--model=") for a in argv):
        raise ValueError(
            "--model is required: a model folder, or a Hugging Face id the pod can download"
        )
    path = Path(model).expanduser()
    if model.startswith(("/", "./", "../", "~")) or path.exists():
        if not path.is_dir():
            raise ValueError(f"--model {model}: no such folder")
        if not (path / "config.json").is_file():
            raise ValueError(f"--model {model}: no config.json there (not a model folder)")


def main(argv: list[str]) -> int:
    import uvloop

    from hygen_pod.vllm_adapter.cli_args import validate_parsed_serve_args

    args = build_parser().parse_args(argv)
    if getattr(args, "model_tag", None):  # `hygen-pod serve MODEL`, as `vllm serve MODEL`
        args.model = args.model_tag
        argv = [*argv, "--model"]
    check_model(argv, args.model)
    validate_parsed_serve_args(args)
    uvloop.run(serve(args))
    return 0
