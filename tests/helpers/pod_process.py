"""A real `hygen-pod serve` (vLLM CPU engine, tiny model) with the engine tests' settings."""

from __future__ import annotations

from pathlib import Path

from hygen_pod.dev.pod_process import PodProcess
from tests.helpers.engine import BYTES_PER_TOKEN

TOKEN = "test-token"


def tiny_pod(model: Path, state_dir: Path, *extra: str) -> PodProcess:
    args = [
        "--model", str(model), "--served-model-name", "tiny",
        "--dtype", "float32", "--enforce-eager", "--block-size", "32",
        "--max-model-len", "1024", "--max-num-seqs", "16",
        "--kv-cache-memory-bytes", str(4096 * BYTES_PER_TOKEN),
        "--drain-timeout-s", "5", "--uvicorn-log-level", "warning", *extra,
    ]  # fmt: skip
    log = state_dir.parent / f"{state_dir.name}.log"
    return PodProcess(args, state_dir, log, env={"HYGEN_CONTROL_TOKEN": TOKEN})
