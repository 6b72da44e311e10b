"""`hygen-operator run` without a usable cluster: one line naming the problem, exit 2, at
once (kopf alone would print a traceback and retry for ever)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    base = {
        k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")
    }
    base |= {"HOME": str(tmp_path), "HYGEN_CONTROL_TOKEN": "t", **(env or {})}
    cmd = [sys.executable, "-m", "hygen_operator.cli", "run", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=base, timeout=60)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once closed


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: '{server}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    return path


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("missing-file", "--kubeconfig /nonexistent.yaml: no such file"),
        ("no-config", "no usable cluster configuration"),
        ("unreachable", "is unreachable"),
    ],
)
def test_run_without_a_cluster_fails_in_one_line(tmp_path: Path, case: str, says: str) -> None:
    if case == "missing-file":
        res = run(tmp_path, "--kubeconfig", "/nonexistent.yaml")
    elif case == "no-config":
        res = run(tmp_path)  # HOME has no .kube/config, no KUBECONFIG, not in a pod
    else:
        cfg = kubeconfig(tmp_path / "kc.yaml", f"http://127.0.0.1:{closed_port()}")
        res = run(tmp_path, "--kubeconfig", str(cfg))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], res.stderr
    assert lines[0].startswith("hygen-operator run: ") and "Traceback" not in res.stderr
