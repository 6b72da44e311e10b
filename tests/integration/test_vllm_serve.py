"""The plugin on vLLM's own OpenAI server: `--scheduler-cls`, a separate engine-core
process, and the offline marker arriving over HTTP as ``vllm_xargs``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hygen_pod.contract.control import OfflineControl, write_control
from hygen_pod.dev.pod_process import free_port
from hygen_pod.policy.step_trace import read_trace
from tests.helpers.engine import BYTES_PER_TOKEN

pytestmark = pytest.mark.engine


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def test_vllm_api_server_runs_the_plugin(tiny_model: Path, tmp_path: Path) -> None:
    port = free_port()
    trace = tmp_path / "steps.jsonl"
    control = tmp_path / "control.json"
    # QPS mode with no cap needs no predictor: offline work runs behind online work.
    write_control(control, OfflineControl(mode="qps", qps=None))
    hygen = {"trace_path": str(trace), "control_path": str(control)}
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(tiny_model),
            "--served-model-name",
            "tiny",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dtype",
            "float32",
            "--enforce-eager",
            "--block-size",
            "32",
            "--max-model-len",
            "1024",
            "--max-num-seqs",
            "8",
            "--kv-cache-memory-bytes",
            str(4096 * BYTES_PER_TOKEN),
            "--scheduler-cls",
            "hygen_pod.vllm_adapter.scheduler.HyGenScheduler",
            "--additional-config",
            json.dumps({"hygen": hygen}),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(1)
        body = {
            "model": "tiny",
            "prompt": "the cat sat on the",
            "max_tokens": 8,
            "temperature": 0,
            "ignore_eos": True,
        }
        online = _post(base + "/v1/completions", body)
        offline = _post(base + "/v1/completions", body | {"vllm_xargs": {"hygen_class": "offline"}})
        assert online["usage"]["completion_tokens"] == 8
        assert offline["usage"]["completion_tokens"] == 8
        # Greedy: the same prompt gives the same text whichever class ran it.
        assert online["choices"][0]["text"] == offline["choices"][0]["text"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    recs = read_trace(trace)
    assert sum(r.online_tokens for r in recs) >= 8
    assert sum(r.offline_tokens for r in recs) >= 8
    assert all(r.measured_s and r.measured_s > 0 for r in recs if r.online_tokens)
