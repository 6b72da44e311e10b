"""The objects a ServingSLO owns: the pods' Deployment, their Service, the profile ConfigMap.

Pure functions of the spec and the operator settings, so the reconcile loop can compare
what exists with what should and tests can check every field without a cluster.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hygen_operator.resources import ServingSLOSpec
from hygen_operator.settings import OperatorSettings

STATE_DIR = "/var/lib/hygen"
PROFILE_MOUNT = "/etc/hygen/profile"
TOKEN_MOUNT = "/etc/hygen/token"
API_KEYS_MOUNT = "/etc/hygen/api-keys"
SCRATCH = "/tmp"

# Pods run as a non-root user on a read-only root filesystem. vLLM, torch, Triton and
# Hugging Face write caches under HOME/XDG paths, so those point into the scratch emptyDir.
POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
CACHE_ENV = [
    {"name": k, "value": v}
    for k, v in (
        ("HOME", f"{SCRATCH}/home"),
        ("XDG_CACHE_HOME", f"{SCRATCH}/cache"),
        ("HF_HOME", f"{SCRATCH}/cache/huggingface"),
        ("VLLM_CACHE_ROOT", f"{SCRATCH}/cache/vllm"),
        ("TRITON_CACHE_DIR", f"{SCRATCH}/cache/triton"),
        ("TORCHINDUCTOR_CACHE_DIR", f"{SCRATCH}/cache/inductor"),
    )
]
PROFILE_KEY = "profile.json"
SLO_LABEL = "hygen.io/serving-slo"
HASH_ANNOTATION = "hygen.io/spec-hash"
APPLIED_ANNOTATION = "hygen.io/applied-hash"  # of the Deployment spec we last wrote


def spec_hash(spec: ServingSLOSpec) -> str:
    """Hash of what a profile depends on: model, engine, hardware, SLO, tolerance, profiling."""
    keyed = spec.model_dump(
        include={"model", "engine_args", "resources", "slo", "interference_tolerance", "profiling"},
        mode="json",
    )
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]


def labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "hygen-pod",
        "app.kubernetes.io/managed-by": "hygen-operator",
        SLO_LABEL: name,
    }


def selector(name: str) -> str:
    return f"{SLO_LABEL}={name}"


def profile_configmap_name(name: str) -> str:
    return f"{name}-profile"


def _slo_args(spec: ServingSLOSpec) -> list[str]:
    return [f"{m}={v:g}" for m, v in spec.slo.as_metrics().items()]


def profile_command(spec: ServingSLOSpec, h: str, settings: OperatorSettings) -> list[str]:
    p = spec.profiling
    cmd = [
        "hygen-pod",
        "profile",
        "--model",
        spec.model,
        "--data",
        settings.data_dir,
        "--targets",
        *spec.slo.as_metrics(),
        "--tolerance",
        f"{spec.interference_tolerance:g}",
        "--online",
        str(p.online_requests),
        "--online-qps",
        f"{p.online_qps:g}",
        "--offline",
        str(p.offline_requests),
        "--iters",
        str(p.iterations),
        "--confidence",
        f"{p.confidence:g}",
        "--slices",
        str(p.slices),
        "--seed",
        str(p.seed),
        *(
            ["--online-prefill-caps", *map(str, p.online_prefill_caps)]
            if p.online_prefill_caps
            else []
        ),
        "--reference",
        "chosen-chunking" if p.tolerance_reference == "chosenChunking" else "vllm-chunking",
        "--spec-hash",
        h,
        "--reuse",
        f"{PROFILE_MOUNT}/{PROFILE_KEY}",
        "--out",
        f"{STATE_DIR}/{PROFILE_KEY}",
    ]
    if p.oracle:
        cmd += ["--oracle", p.oracle]
    return cmd


def serve_command(
    spec: ServingSLOSpec, settings: OperatorSettings, gateway: str | None = None
) -> list[str]:
    cmd = [
        "hygen-pod",
        "serve",
        "--model",
        spec.model,
        "--host",
        "0.0.0.0",
        "--port",
        str(settings.pod_port),
        "--admin-port",
        str(settings.pod_admin_port),
        "--state-dir",
        f"{STATE_DIR}/state",
        "--hygen-profile",
        f"{STATE_DIR}/{PROFILE_KEY}",
        "--control-token-file",
        f"{TOKEN_MOUNT}/token",
        "--slo",
        *_slo_args(spec),
    ]
    if spec.served_model_name:
        cmd += ["--served-model-name", spec.served_model_name]
    if spec.api_keys is not None:
        cmd += ["--api-key-file", f"{API_KEYS_MOUNT}/keys"]
    if gateway is not None:
        cmd += ["--batch-gateway", gateway]
    return cmd + list(spec.engine_args)


def batch_gateway(
    name: str, namespace: str, spec: ServingSLOSpec, settings: OperatorSettings
) -> str | None:
    """Where this ServingSLO's pods forward Files/Batch calls, if it has a cluster Batch API."""
    if spec.batch_api is None or settings.batch_api_url is None:
        return None
    return f"{settings.batch_api_url.rstrip('/')}/ns/{namespace}/slo/{name}"


def _resources(spec: ServingSLOSpec) -> dict[str, Any]:
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if spec.resources.gpus:
        limits["nvidia.com/gpu"] = str(spec.resources.gpus)
    for k in ("cpu", "memory"):
        v = getattr(spec.resources, k)
        if v:
            requests[k] = limits[k] = v
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def deployment(
    name: str, spec: ServingSLOSpec, settings: OperatorSettings, namespace: str = ""
) -> dict[str, Any]:
    h = spec_hash(spec)
    image = spec.image or settings.pod_image
    mounts = [
        {"name": "state", "mountPath": STATE_DIR},
        {"name": "profile", "mountPath": PROFILE_MOUNT, "readOnly": True},
        {"name": "scratch", "mountPath": SCRATCH},
        {"name": "token", "mountPath": TOKEN_MOUNT, "readOnly": True},
        {"name": "shm", "mountPath": "/dev/shm"},  # vLLM's worker processes share memory
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "state", "emptyDir": {}},
        {
            "name": "profile",
            "configMap": {"name": profile_configmap_name(name), "optional": True},
        },
        {"name": "token", "secret": {"secretName": settings.token_secret}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory"}},
    ]
    if spec.api_keys is not None:
        mounts.append({"name": "api-keys", "mountPath": API_KEYS_MOUNT, "readOnly": True})
        ref = spec.api_keys
        volumes.append(
            {
                "name": "api-keys",
                "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": "keys"}]},
            }
        )
    http = {"httpGet": {"path": "/ready", "port": "http"}}
    template = {
        "metadata": {"labels": labels(name), "annotations": {HASH_ANNOTATION: h}},
        "spec": {
            "initContainers": [
                {
                    "name": "profile",
                    "image": image,
                    "command": profile_command(spec, h, settings),
                    "resources": _resources(spec),
                    "env": CACHE_ENV,
                    "volumeMounts": mounts[:3],
                    "securityContext": CONTAINER_SECURITY,
                }
            ],
            "containers": [
                {
                    "name": "serve",
                    "image": image,
                    "command": serve_command(
                        spec, settings, batch_gateway(name, namespace, spec, settings)
                    ),
                    "ports": [
                        {"name": "http", "containerPort": settings.pod_port},
                        {"name": "admin", "containerPort": settings.pod_admin_port},
                    ],
                    "resources": _resources(spec),
                    "env": CACHE_ENV,
                    "volumeMounts": mounts,
                    "securityContext": CONTAINER_SECURITY,
                    "readinessProbe": {**http, "periodSeconds": 5, "failureThreshold": 2},
                    "startupProbe": {**http, "periodSeconds": 10, "failureThreshold": 180},
                    "livenessProbe": {
                        "httpGet": {"path": "/health", "port": "http"},
                        "periodSeconds": 20,
                        "failureThreshold": 3,
                    },
                }
            ],
            # SIGTERM drains: running offline requests finish or go back to the queue.
            "terminationGracePeriodSeconds": 60,
            "securityContext": POD_SECURITY,
            "nodeSelector": dict(spec.node_selector),
            "tolerations": [
                t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations
            ],
            "volumes": volumes,
        },
    }
    dep_spec = {
        "replicas": spec.replicas,
        "selector": {"matchLabels": {SLO_LABEL: name}},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "template": template,
    }
    # The API server fills in defaults, so "is it up to date" compares what we wrote last.
    applied = hashlib.sha256(json.dumps(dep_spec, sort_keys=True).encode()).hexdigest()[:16]
    annotations = {HASH_ANNOTATION: h, APPLIED_ANNOTATION: applied}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels(name), "annotations": annotations},
        "spec": dep_spec,
    }


def service(name: str) -> dict[str, Any]:
    """The client-facing Service (the serving port only; the admin port is not exposed)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels(name)},
        "spec": {
            "selector": {SLO_LABEL: name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def profile_configmap(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": profile_configmap_name(name), "labels": labels(name)},
        "data": {},
    }
