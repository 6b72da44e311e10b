"""Import every vLLM name the pod uses and print the signatures it calls.

Run by other_version.sh against another vLLM release: a moved or renamed name fails here,
before anything is served.
"""

from __future__ import annotations

import importlib
import inspect

# (module, name) for every vLLM name the adapter imports, beside the adapter's own modules
NAMES = [
    ("hygen_pod.vllm_adapter.cli_args", "make_arg_parser"),
    ("hygen_pod.vllm_adapter.cli_args", "validate_parsed_serve_args"),
    ("vllm.entrypoints.launchers.api_server.app_state", "init_app_state"),
    ("vllm.entrypoints.launchers.api_server.entry", "build_async_engine_client"),
    ("vllm.entrypoints.launchers.app", "build_app"),
    ("vllm.entrypoints.serve", "create_error_response"),
    ("vllm.entrypoints.openai.chat_completion.protocol", "ChatCompletionRequest"),
    ("vllm.entrypoints.openai.completion.protocol", "CompletionRequest"),
    ("vllm.sampling_params", "RequestOutputKind"),
    ("vllm.sampling_params", "SamplingParams"),
    ("vllm", "LLM"),
]


def main() -> int:
    import vllm

    print("vLLM", vllm.__version__)
    for mod in ("cli_args", "scheduler", "engine", "server"):
        importlib.import_module(f"hygen_pod.vllm_adapter.{mod}")
    for mod, name in NAMES:
        obj = getattr(importlib.import_module(mod), name)
        if inspect.isfunction(obj):
            print(obj.__module__, name, inspect.signature(obj))
    from hygen_pod.vllm_adapter.server import build_parser

    cls = "hygen_pod.vllm_adapter.scheduler.HyGenScheduler"
    args = build_parser().parse_args(["--model", "x", "--scheduler-cls", cls])
    print("parsed", args.model, args.scheduler_cls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
