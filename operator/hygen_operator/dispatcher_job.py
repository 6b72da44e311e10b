"""The Job a volume BatchJob owns: `hygen-operator dispatch` with the job's claims mounted.

Built next to its kind, as `manifests` builds a ServingSLO's objects; a pure function of
the spec and the operator settings.
"""

from __future__ import annotations

from typing import Any

from hygen_operator.manifests import CONTAINER_SECURITY, POD_SECURITY
from hygen_operator.object_store import SECRET_KEYS
from hygen_operator.resources import BatchJobSpec
from hygen_operator.settings import OperatorSettings

VOLUME_ROOT = "/data"


def dispatcher_job(
    name: str, namespace: str, spec: BatchJobSpec, settings: OperatorSettings
) -> dict[str, Any]:
    """A Job running `hygen-operator dispatch` with the BatchJob's claims mounted under /data
    and, for s3 input/output, the store's keys from ``spec.objectStore.credentialsSecret``.

    OnFailure + a generous backoffLimit: a crashed dispatcher restarts and resumes from the
    output. The control token comes from the same Secret the pods mount. The store's keys
    are optional to the kubelet, so a Secret that lacks them gives the job a condition
    naming the field instead of a pod stuck in CreateContainerConfigError.
    """
    claims: dict[str, bool] = {}  # claim -> read-only
    if spec.input.volume is not None:
        claims[spec.input.volume.claim_name] = True
    if spec.output.volume is not None:
        claims[spec.output.volume.claim_name] = False
    volumes = [
        {"name": f"claim-{i}", "persistentVolumeClaim": {"claimName": c, "readOnly": ro}}
        for i, (c, ro) in enumerate(claims.items())
    ]
    mounts = [
        {"name": f"claim-{i}", "mountPath": f"{VOLUME_ROOT}/{c}", "readOnly": ro}
        for i, (c, ro) in enumerate(claims.items())
    ]
    token = {"secretKeyRef": {"name": settings.token_secret, "key": "token"}}
    env = [{"name": "HYGEN_CONTROL_TOKEN", "valueFrom": token}]
    if spec.object_store is not None:
        secret = spec.object_store.credentials_secret
        env += [
            {
                "name": var,
                "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}},
            }
            for var, key in SECRET_KEYS.items()
        ]
    command = [
        "hygen-operator", "dispatch", "--namespace", namespace, "--batchjob", name,
        "--volume-root", VOLUME_ROOT, "--dispatch-poll", f"{settings.dispatch_poll_s:g}",
    ]  # fmt: skip
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": f"{name}-dispatch", "labels": {"hygen.io/batch-job": name}},
        "spec": {
            "backoffLimit": 50,
            "template": {
                "metadata": {"labels": {"hygen.io/batch-job": name}},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "serviceAccountName": settings.dispatcher_service_account,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": POD_SECURITY,
                    "containers": [{
                        "name": "dispatch", "image": settings.operator_image, "command": command,
                        "env": env,
                        "volumeMounts": mounts,
                        "securityContext": CONTAINER_SECURITY,
                    }],
                    "volumes": volumes,
                },
            },
        },
    }  # fmt: skip
