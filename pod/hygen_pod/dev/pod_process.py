"""Run `hygen-pod serve` as a child process: start, wait for /ready, drain or crash it.

Used by the demo's pod stage, the benches and the engine tests. The pod gets its own
process group, so `kill9` takes the API server and the engine core down together, as
a container crash would. It stays in the caller's session: with the kernel's
autogroup scheduling (on by default in many distributions) a new session is a new
scheduling group, and on a 2-core machine a pod in its own group kept its clients
waiting for a core for up to 2-3 s, and at times its own API server too
(docs/pod.md, "Measuring on a small machine").
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

# Below Linux's ephemeral range (32768-60999): a port handed out here and bound
# a moment later by a child cannot meanwhile be taken by an outgoing connection,
# which the kernel's port 0 could hand out again (CI once lost a pod to that).
_PORT_LOW, _PORT_HIGH = 20000, 32767
_next_port = _PORT_LOW + (os.getpid() * 7919) % (_PORT_HIGH - _PORT_LOW)


def free_port() -> int:
    """A localhost port that is free now and that this process has not handed out before."""
    global _next_port
    for _ in range(_PORT_HIGH - _PORT_LOW):
        port = _next_port
        _next_port = _PORT_LOW if _next_port >= _PORT_HIGH else _next_port + 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORT_LOW}-{_PORT_HIGH}")


class PodProcess:
    """`hygen-pod serve ARGS --host 127.0.0.1 --port P --state-dir STATE` in the background."""

    def __init__(
        self,
        args: Sequence[str],
        state_dir: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.args, self.state_dir, self.log_path = list(args), state_dir, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The real layout: the engine core in its own process, as in a pod.
        self.env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 300) -> PodProcess:
        cmd = [
            sys.executable, "-m", "hygen_pod.cli", "serve", *self.args,
            "--host", "127.0.0.1", "--port", str(self.port), "--state-dir", str(self.state_dir),
        ]  # fmt: skip
        self._log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, process_group=0
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the pod exited: {self.log_tail()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the pod was not ready in {timeout_s:.0f} s; see {self.log_path}"
                )
            time.sleep(0.5)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text()[-chars:]

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM (graceful drain); the exit code. Killed if it does not exit in time."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()
        finally:
            self._log.close()

    def kill9(self) -> None:
        """Crash: SIGKILL to every process of the pod (API server and engine core)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()
