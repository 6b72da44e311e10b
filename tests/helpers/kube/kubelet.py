"""A Deployment controller and kubelet stand-in for the emulator: real pod processes on 127.0.0.1.

For every Deployment it keeps ``replicas`` pods of the current template running: it runs the
init container's command (the real ``hygen-pod profile``), then the main container's command
(the real ``hygen-pod serve``, or the fake-engine server for model ``tiny``) with the
container paths mapped to a folder per pod, and publishes a Pod object whose IP/port point at
it and whose Ready condition follows GET /ready. A template change rolls the pods (new ones
first); a container that dies is restarted on the same state folder, as a kubelet would.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hygen_operator import dispatcher_job, manifests
from hygen_pod.dev.pod_process import free_port
from tests.helpers.kube.server import EmulatorServer

ROOT = Path(__file__).resolve().parents[3]


BROKEN_MODEL = "/models/not-there"  # the fake serve exits at once, as `serve` does on it


@dataclass
class PodRun:
    name: str
    deployment: str
    namespace: str
    spec_hash: str
    template: dict[str, Any]
    root: Path
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    init: subprocess.Popen | None = None
    restarts: int = 0
    ready: bool = False
    published: bool = False
    unready: bool = False  # a test forces the readiness probe to fail (process keeps running)
    started_at: float = 0.0
    crashes: int = 0  # quick exits in a row (a kubelet's CrashLoopBackOff count)
    restart_at: float = 0.0  # back-off: the container is not restarted before this
    last_exit: dict[str, Any] | None = None  # lastState.terminated of the serve container


class Kubelet:
    def __init__(
        self, api: EmulatorServer, workdir: Path, token: str, env: dict[str, str] | None = None
    ):
        self.api, self.workdir, self.token = api, workdir, token
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.pods: dict[str, PodRun] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._seq = 0
        self.errors: list[str] = []
        self.jobs: dict[str, subprocess.Popen] = {}
        self.job_restarts: dict[str, int] = {}

    def __enter__(self) -> Kubelet:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(20)
        for run in self.pods.values():
            self._kill(run)
        for p in self.jobs.values():
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()

    # ----------------------------------------------------------- test controls
    def kill9(self, name: str) -> None:
        """kill -9 the pod's server (its state folder stays: the container restarts on it)."""
        run = self.pods[name]
        if run.proc is not None:
            os.killpg(run.proc.pid, 9)

    def set_unready(self, name: str, unready: bool = True) -> None:
        """Fail (or stop failing) the pod's readiness probe; its server keeps running."""
        self.pods[name].unready = unready

    def running(self, deployment: str) -> list[PodRun]:
        return [r for r in self.pods.values() if r.deployment == deployment and r.published]

    # ----------------------------------------------------------- the loop
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as e:  # keep the stand-in alive; tests read .errors
                self.errors.append(repr(e))
            time.sleep(0.3)

    # ----------------------------------------------------------- Jobs (dispatchers)
    @property
    def pvc_root(self) -> Path:
        """PersistentVolumeClaims live here, one folder per claim name."""
        return self.workdir / "pvc"

    def kill9_job(self, name: str) -> bool:
        """SIGKILL a Job's running process; False if it had already exited."""
        p = self.jobs[name]
        if p.poll() is not None:
            return False
        os.killpg(p.pid, 9)
        p.wait()
        return True

    def _jobs(self) -> None:
        for j in self.api.list("jobs", group="batch"):
            name = j["metadata"]["name"]
            if (j.get("status") or {}).get("succeeded"):
                continue
            p = self.jobs.get(name)
            if p is not None and p.poll() is None:
                continue
            if p is not None and p.returncode == 0:
                self.api.patch(
                    "jobs",
                    j["metadata"]["namespace"],
                    name,
                    {"status": {"succeeded": 1}},
                    status=True,
                    group="batch",
                )
                continue
            if p is not None:
                self.job_restarts[name] = self.job_restarts.get(name, 0) + 1
            c = j["spec"]["template"]["spec"]["containers"][0]
            cmd = [
                str(self.pvc_root) if a == dispatcher_job.VOLUME_ROOT else a for a in c["command"]
            ]
            log = (self.workdir / f"job-{name}.log").open("a")
            # the container's env as a kubelet builds it: values, and Secret keys resolved
            # from the API (a wrong or missing Secret shows, as it would on a cluster)
            env = {**self.env, "KUBECONFIG": str(self.api.kubeconfig)}
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref is not None:
                    secret = self.api.get("secrets", j["metadata"]["namespace"], ref["name"])
                    data = (secret or {}).get("data") or {}
                    if ref["key"] in data:
                        env[e["name"]] = base64.b64decode(data[ref["key"]]).decode()
                elif e.get("value") is not None:
                    env[e["name"]] = e["value"]
            self.jobs[name] = subprocess.Popen(
                self._executable(cmd),
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        for name, p in list(self.jobs.items()):
            if not any(j["metadata"]["name"] == name for j in self.api.list("jobs", group="batch")):
                if p.poll() is None:  # the Job was deleted: the pod gets SIGTERM
                    os.killpg(p.pid, 15)
                del self.jobs[name]

    def _tick(self) -> None:
        self._jobs()
        deps = {
            (d["metadata"]["namespace"], d["metadata"]["name"]): d
            for d in self.api.list("deployments", group="apps")
            # serving pods only: the operator's own Deployment runs as the test's process
            if manifests.HASH_ANNOTATION
            in (d["spec"]["template"]["metadata"].get("annotations") or {})
        }
        for (ns, name), d in deps.items():
            h = d["spec"]["template"]["metadata"]["annotations"][manifests.HASH_ANNOTATION]
            mine = [r for r in self.pods.values() if (r.namespace, r.deployment) == (ns, name)]
            current = [r for r in mine if r.spec_hash == h]
            for _ in range(d["spec"]["replicas"] - len(current)):
                self._seq += 1
                run = PodRun(
                    f"{name}-{h[:6]}-{self._seq}",
                    name,
                    ns,
                    h,
                    d["spec"]["template"],
                    self.workdir / f"pod-{self._seq}",
                )
                self.pods[run.name] = run
                current.append(run)
            for r in current[d["spec"]["replicas"] :]:
                self._remove(r)
            if current and all(r.ready for r in current):  # rolled: retire the old template
                for r in mine:
                    if r.spec_hash != h:
                        self._remove(r)
        for r in list(self.pods.values()):
            if (r.namespace, r.deployment) not in deps:
                self._remove(r)
            else:
                self._step(r)

    def _remove(self, r: PodRun) -> None:
        self._kill(r)
        self.pods.pop(r.name, None)
        if r.published and self.api.get("pods", r.namespace, r.name):
            self.api.delete("pods", r.namespace, r.name)

    def _kill(self, r: PodRun) -> None:
        for p in (r.init, r.proc):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()

    def _mapped(self, r: PodRun, cmd: list[str]) -> list[str]:
        """Container paths -> the pod's folder; the server's port -> a free local one."""
        out = []
        for a in cmd:
            for src, dst in (
                (manifests.STATE_DIR, "state"),
                (manifests.PROFILE_MOUNT, "profile"),
                (manifests.TOKEN_MOUNT, "token"),
                (manifests.API_KEYS_MOUNT, "api-keys"),
            ):
                a = a.replace(src, str(r.root / dst))
            out.append(a)
        if "--port" in out:
            out[out.index("--port") + 1] = str(r.port)
        if "--admin-port" in out:
            out[out.index("--admin-port") + 1] = str(r.admin_port)
        if "--host" in out:
            out[out.index("--host") + 1] = "127.0.0.1"
        return out

    def _executable(self, cmd: list[str]) -> list[str]:
        if cmd[:3] == ["hygen-pod", "serve", "--model"] and cmd[3] in ("tiny", BROKEN_MODEL):
            return [sys.executable, "-m", "tests.helpers.fake_pod_serve", *cmd[2:]]
        if cmd[0] == "hygen-pod":
            return [sys.executable, "-m", "hygen_pod.cli", *cmd[1:]]
        if cmd[0] == "hygen-operator":
            return [sys.executable, "-m", "hygen_operator.cli", *cmd[1:]]
        return cmd

    def _files(self, r: PodRun) -> bool:
        """Volumes: the token Secret and profile ConfigMap as files; False while the Secret
        is missing (a kubelet would not start the pod either)."""
        vols = {v["name"]: v for v in r.template["spec"]["volumes"]}
        secret = self.api.get("secrets", r.namespace, vols["token"]["secret"]["secretName"])
        if secret is None:
            return False
        for d in ("state", "profile", "token", "scratch"):
            (r.root / d).mkdir(parents=True, exist_ok=True)
        token = base64.b64decode(secret["data"]["token"]).decode()
        (r.root / "token" / "token").write_text(token)
        if "api-keys" in vols:  # a Secret volume of selected items, as a kubelet projects it
            src = vols["api-keys"]["secret"]
            keys = self.api.get("secrets", r.namespace, src["secretName"])
            if keys is None:
                return False
            (r.root / "api-keys").mkdir(parents=True, exist_ok=True)
            for item in src["items"]:
                data = base64.b64decode(keys["data"][item["key"]]).decode()
                (r.root / "api-keys" / item["path"]).write_text(data)
        cm = self.api.get("configmaps", r.namespace, manifests.profile_configmap_name(r.deployment))
        for k, v in ((cm or {}).get("data") or {}).items():
            (r.root / "profile" / k).write_text(v)
        return True

    def _env(self, r: PodRun, container: dict[str, Any]) -> dict[str, str]:
        """The container's env over ours, its scratch paths mapped into the pod's folder."""
        env = dict(self.env)
        for e in container.get("env") or []:
            v = e.get("value")
            if v is not None:
                if v == manifests.SCRATCH or v.startswith(manifests.SCRATCH + "/"):
                    v = str(r.root / "scratch") + v[len(manifests.SCRATCH) :]
                env[e["name"]] = v
        return env

    def _spawn(self, r: PodRun, container: dict[str, Any], tag: str) -> subprocess.Popen:
        log = (r.root / f"{tag}.log").open("a")
        return subprocess.Popen(
            self._executable(self._mapped(r, container["command"])),
            cwd=r.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._env(r, container),
            start_new_session=True,
        )

    def _step(self, r: PodRun) -> None:
        spec = r.template["spec"]
        if r.proc is None:
            if r.init is None:
                if self._files(r):
                    r.init = self._spawn(r, spec["initContainers"][0], "init")
                return
            rc = r.init.poll()
            if rc is None:
                return
            if rc != 0:
                self.errors.append(
                    f"{r.name}: init exited {rc}: {(r.root / 'init.log').read_text()[-2000:]}"
                )
                r.init = None  # retried, as a kubelet would (CrashLoopBackOff)
                return
            r.proc = self._spawn(r, spec["containers"][0], "serve")
            r.started_at = time.monotonic()
            self._publish(r)
            return
        if r.proc.poll() is not None:  # the container died: restart it on the same volume
            if r.restart_at == 0.0:  # just noticed: record the exit, back off if it was quick
                log = (r.root / "serve.log").read_text(errors="replace").strip().splitlines()
                r.last_exit = {
                    "exitCode": r.proc.returncode,
                    "reason": "Error" if r.proc.returncode else "Completed",
                    "message": log[-1][:500] if log else "",
                }
                quick = time.monotonic() - r.started_at < 10
                r.crashes = r.crashes + 1 if quick else 0
                # a kubelet's back-off: 10 s doubling to 5 min (shortened here: 1 s, 8 s cap)
                r.restart_at = time.monotonic() + (min(2 ** (r.crashes - 1), 8) if quick else 0)
                r.ready = False
                self._publish(r)
            if time.monotonic() < r.restart_at:
                return
            # the new process first, then the count: a test that saw the restart must not
            # find the dead process (kill9 of it raised ProcessLookupError); unready until
            # the new server answers its probe, as a kubelet reports a restarted container
            r.proc = self._spawn(r, spec["containers"][0], "serve")
            r.started_at, r.restart_at = time.monotonic(), 0.0
            r.restarts += 1
            self._publish(r)
        ready = self._probe(r)
        if ready != r.ready:
            r.ready = ready
            self._publish(r)

    def _probe(self, r: PodRun) -> bool:
        if r.unready:
            return False
        try:
            return httpx.get(f"http://127.0.0.1:{r.port}/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _publish(self, r: PodRun) -> None:
        tmpl = r.template
        containers = [dict(c) for c in tmpl["spec"]["containers"]]
        local = {"http": r.port, "admin": r.admin_port}  # each named port, as mapped here
        containers[0]["ports"] = [
            {"name": pt["name"], "containerPort": local[pt["name"]]}
            for pt in containers[0].get("ports") or [{"name": "http"}]
        ]
        serve: dict[str, Any] = {"name": "serve", "ready": r.ready, "restartCount": r.restarts}
        if r.restart_at and r.crashes >= 2:  # as a kubelet words a container that keeps dying
            serve["state"] = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off restarting failed container serve in pod {r.name}",
                }
            }
        elif r.proc is not None and r.proc.poll() is None:
            serve["state"] = {"running": {}}
        if r.last_exit is not None:
            serve["lastState"] = {"terminated": r.last_exit}
        status = {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True" if r.ready else "False"}],
            "containerStatuses": [serve],
        }
        if not r.published:
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": r.name,
                    "namespace": r.namespace,
                    "labels": tmpl["metadata"]["labels"],
                    "annotations": tmpl["metadata"]["annotations"],
                },
                "spec": {**tmpl["spec"], "containers": containers},
            }
            self.api.create(body, "pods")
            r.published = True
        self.api.patch("pods", r.namespace, r.name, {"status": status}, status=True)
