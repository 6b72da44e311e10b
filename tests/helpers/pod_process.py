"""A real `hygen-pod serve` process (vLLM CPU engine, tiny model) for engine tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.helpers.engine import BYTES_PER_TOKEN
from tests.helpers.fake_pod import free_port

TOKEN = "test-token"


class PodProcess:
    """Starts the pod in its own session, so a crash can take every process with it."""

    def __init__(self, model: Path, state_dir: Path, *extra: str) -> None:
        self.model, self.state_dir, self.extra = model, state_dir, extra
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = state_dir.parent / f"{state_dir.name}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 300) -> PodProcess:
        # The real layout: the engine core in its own process, as in a pod.
        env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
        env["HYGEN_CONTROL_TOKEN"] = TOKEN
        cmd = [
            sys.executable, "-m", "hygen_pod.cli", "serve",
            "--model", str(self.model), "--served-model-name", "tiny",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "float32", "--enforce-eager", "--block-size", "32",
            "--max-model-len", "1024", "--max-num-seqs", "16",
            "--kv-cache-memory-bytes", str(4096 * BYTES_PER_TOKEN),
            "--state-dir", str(self.state_dir), "--drain-timeout-s", "5",
            "--uvicorn-log-level", "warning", *self.extra,
        ]  # fmt: skip
        self.log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, self.log_path.read_text()[-4000:]
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            assert time.monotonic() < deadline, "pod did not become ready"
            time.sleep(0.5)

    def kill9(self) -> None:
        """Crash: SIGKILL to every process of the pod (API server and engine core)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()

    def terminate(self, timeout_s: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.log.close()
