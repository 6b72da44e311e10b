"""The operator as a real process (``hygen-operator run``) against the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DATA = Path(os.environ.get("HYGEN_DATA", ROOT.parent / "shared" / "data"))


class OperatorProcess:
    def __init__(self, kubeconfig: Path, log: Path, token: str, *extra: str) -> None:
        self.cmd = [
            sys.executable, "-m", "hygen_operator.cli", "run", "--kubeconfig", str(kubeconfig),
            "--namespace", "default", "--status-interval", "0.5", "--retune-interval", "3600",
            "--dispatch-poll", "0.2", "--data-dir", str(DATA), *extra,
        ]  # fmt: skip
        self.env = {**os.environ, "HYGEN_CONTROL_TOKEN": token, "PYTHONPATH": str(ROOT)}
        self.log = log
        self.proc: subprocess.Popen | None = None

    @classmethod
    def from_command(cls, cmd: list[str], log: Path, token: str) -> OperatorProcess:
        """Run a given ``hygen-operator ...`` command line (e.g. from a rendered chart)."""
        op = cls(Path("/dev/null"), log, token)
        op.cmd = [sys.executable, "-m", "hygen_operator.cli", *cmd[1:]]
        return op

    def start(self) -> OperatorProcess:
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, 9)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()

    def tail(self, chars: int = 6000) -> str:
        if not self.log.exists():
            return ""
        lines = [x for x in self.log.read_text().splitlines() if "' succeeded." not in x]
        return "\n".join(lines)[-chars:]
