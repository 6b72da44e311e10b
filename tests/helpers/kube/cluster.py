"""A test cluster: the API emulator, the CRDs applied with kubectl, the kubelet stand-in
running real pod processes, and the real operator process; plus the objects and waits the
e2e tests, the reliability suite and `bench/soak.py` share."""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers.kube.kubelet import Kubelet
from tests.helpers.kube.operator_process import OperatorProcess
from tests.helpers.kube.server import EmulatorServer

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "e2e-control-token"
NS = "default"


@dataclass
class Cluster:
    api: EmulatorServer
    kubelet: Kubelet
    operator: OperatorProcess
    workdir: Path

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(self.api.kubeconfig), *args],
            capture_output=True,
            text=True,
            input=stdin,
            timeout=60,
        )

    def obj(self, plural: str, name: str) -> dict[str, Any]:
        return self.api.get(plural, NS, name, "hygen.io") or {}

    def status(self, plural: str, name: str) -> dict[str, Any]:
        return self.obj(plural, name).get("status") or {}

    def wait(
        self,
        what: Callable[[], Any],
        timeout_s: float = 60,
        msg: str = "",
        *,
        observe: Callable[[], Any] | None = None,
        stall_s: float | None = None,
    ) -> Any:
        """Poll ``what()`` until truthy. ``observe()`` is what the failure shows (and, with
        ``stall_s``, what counts as progress: the wait fails after ``stall_s`` without a
        change, or at ``timeout_s`` in all); without it, the last value of ``what()``."""
        start = time.monotonic()
        last_change, seen = start, None
        while True:
            v = what()
            if v:
                return v
            now = time.monotonic()
            state = observe() if observe is not None else v
            if state != seen:
                last_change, seen = now, state
            stalled = stall_s is not None and now - last_change > stall_s
            if stalled or now - start > timeout_s:
                why = f"no progress for {stall_s:.0f} s" if stalled else f"{timeout_s:.0f} s"
                raise AssertionError(
                    f"timed out ({why}): {msg}\nlast observed: {state!r}\n"
                    f"kubelet errors: {self.kubelet.errors[-3:]}\n"
                    f"operator log:\n{self.operator.tail()}"
                )
            time.sleep(0.2)


def reach(
    c: Cluster,
    plural: str,
    name: str,
    phases: tuple[str, ...],
    timeout_s: float,
    stall_s: float | None = None,
) -> dict:
    """Wait until the object's status.phase is one of ``phases``; returns its status. A
    timeout shows the status last seen; ``stall_s``: fail only when it stops changing."""

    def now() -> dict[str, Any] | None:
        st = c.status(plural, name)
        return st if st.get("phase") in phases else None

    return c.wait(
        now,
        timeout_s,
        f"{plural}/{name} phase in {phases}",
        observe=lambda: c.status(plural, name),
        stall_s=stall_s,
    )


def ready(c: Cluster, name: str = "chat", timeout_s: float = 90) -> dict[str, Any]:
    """Wait for a ServingSLO to be Ready; returns its status."""
    return reach(c, "servingslos", name, ("Ready",), timeout_s)


def finished(
    c: Cluster, job: str, timeout_s: float = 120, stall_s: float | None = None
) -> dict[str, Any]:
    """Wait for a BatchJob's final phase; returns its status."""
    return reach(c, "batchjobs", job, ("Succeeded", "Failed", "Cancelled"), timeout_s, stall_s)


def apply_crds(api: EmulatorServer) -> None:
    for f in sorted((ROOT / "crds").glob("*.yaml")):
        subprocess.run(
            [
                "kubectl",
                "--kubeconfig",
                str(api.kubeconfig),
                "apply",
                "--validate=false",
                "-f",
                str(f),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )


@contextmanager
def running_cluster(workdir: Path, **kubelet_env: str) -> Iterator[Cluster]:
    """The emulator, kubelet and operator, started in ``workdir`` and stopped on exit."""
    with EmulatorServer(workdir) as api, Kubelet(api, workdir, TOKEN, kubelet_env) as kubelet:
        apply_crds(api)
        op = OperatorProcess(api.kubeconfig, workdir / "operator.log", TOKEN).start()
        c = Cluster(api, kubelet, op, workdir)
        try:
            yield c
        finally:
            c.operator.stop()  # the current one: a test may have replaced it


def serving_slo(name: str = "chat", **spec: Any) -> dict[str, Any]:
    base = {
        "model": "tiny",
        "replicas": 2,
        "slo": {"p99TbtMs": 50},
        "interferenceTolerance": 0.1,
        "profiling": {"oracle": "h100", "iterations": 3},
    }
    return {
        "apiVersion": "hygen.io/v1alpha1",
        "kind": "ServingSLO",
        "metadata": {"name": name, "namespace": NS},
        "spec": {**base, **spec},
    }


def secret(api: EmulatorServer, name: str, data: dict[str, str], ns: str = NS) -> None:
    """A Secret object with these keys (values given plain, stored base64 as the API does)."""
    enc = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    api.create({"apiVersion": "v1", "kind": "Secret", "data": enc,
                "metadata": {"name": name, "namespace": ns}}, "secrets")  # fmt: skip


def ends_through_dispatcher_kill9(c: Cluster, job: str, n: int, timeout_s: float) -> dict[str, Any]:
    """Wait for 10 results of a dispatcher-Job BatchJob, kill -9 its dispatcher, and check
    that it still ends Succeeded with ``n`` results and the Job restarted; its status.
    The caller slows the fake engine (``FAKE_ENGINE_DELAY_S``) so the batch outlasts the
    wait: on a fast machine a batch of 20 ms requests ends before the kill."""
    c.wait(lambda: c.status("batchjobs", job).get("completed", 0) >= 10, 90, "10 results")
    killed = c.kubelet.kill9_job(f"{job}-dispatch")
    assert killed, "the dispatcher finished before the kill; nothing was tested"
    st = finished(c, job, timeout_s)
    assert st["phase"] == "Succeeded", st
    assert (st["completed"], st["failed"]) == (n, 0)
    assert c.kubelet.job_restarts[f"{job}-dispatch"] >= 1
    return st


def claim(api: EmulatorServer, name: str, ns: str = NS) -> None:
    """A PersistentVolumeClaim object (the kubelet stand-in maps it to a local folder)."""
    api.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}},
               "persistentvolumeclaims")  # fmt: skip


def batch_lines(n: int, model: str = "tiny") -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": model, "prompt": f"prompt {i}", "max_tokens": 8},
        }
        for i in range(n)
    ]


def batch_job(name: str, slo: str, lines: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "hygen.io/v1alpha1",
        "kind": "BatchJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "servingSlo": slo,
            "endpoint": "/v1/completions",
            "input": {"inline": lines},
            "output": {"configMap": {"name": f"{name}-out"}},
            **spec,
        },
    }
