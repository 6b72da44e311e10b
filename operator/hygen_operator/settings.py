"""Operator settings: from the command line, falling back to HYGEN_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field


class OperatorSettings(BaseModel):
    """Everything the operator needs besides the custom resources themselves."""

    namespaces: list[str] = Field(default_factory=list, description="empty = all namespaces")
    pod_image: str = "ghcr.io/hygen/hygen-pod:latest"
    operator_image: str = Field(
        "ghcr.io/hygen/hygen-operator:latest", description="image of dispatcher Jobs"
    )
    dispatcher_service_account: str = Field(
        "hygen-dispatcher", description="ServiceAccount of dispatcher Jobs (read pods, patch jobs)"
    )
    token_secret: str = Field("hygen-control-token", description="Secret with key 'token'")
    control_token: str = Field(repr=False, description="bearer token for the pods' control API")
    status_interval_s: float = Field(10.0, gt=0, description="pod metrics, status, budget push")
    retune_interval_s: float = Field(30.0, gt=0, description="minimum time between retunes")
    dispatch_poll_s: float = Field(1.0, gt=0, description="BatchJob result polling")
    pod_port: int = Field(8000, gt=0, lt=65536)
    pod_admin_port: int = Field(
        8001,
        gt=0,
        lt=65536,
        description="pods serve the operator's routes (control, dispatch) on this port only, "
        "which the chart's NetworkPolicy opens to the operator and dispatcher Jobs alone",
    )
    data_dir: str = Field("/opt/hygen/data", description="profiling traces inside the pod image")
    batch_api_port: int | None = Field(
        None,
        gt=0,
        lt=65536,
        description="serve the cluster Batch API of ServingSLOs with batchApi on this port",
    )
    batch_api_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="how pods reach that port (the operator's Service), e.g. "
        "http://hygen-operator.hygen-system:8090",
    )
    batch_api_dir: str | None = Field(
        None,
        description="the Batch API volume: files and outputs of ServingSLOs whose batchApi "
        "has no storage, under <namespace>/<ServingSLO>/ (the chart mounts a PVC here)",
    )
    kubeconfig: str | None = None
    peering: str | None = Field(
        None, description="kopf peering name: replicas elect one active operator; None = alone"
    )

    def batch_api_volume(self, ns: str) -> Path | None:
        """A namespace's folder of the Batch API volume (None: the operator has none)."""
        return Path(self.batch_api_dir) / ns if self.batch_api_dir else None


def read_token(token_file: str | None) -> str:
    """The control token: --control-token-file, else $HYGEN_CONTROL_TOKEN."""
    if token_file:
        token = Path(token_file).read_text().strip()
    else:
        token = os.environ.get("HYGEN_CONTROL_TOKEN", "").strip()
    if not token:
        raise ValueError(
            "no control token: pass --control-token-file or set HYGEN_CONTROL_TOKEN "
            "(the same token the pods read from the Secret named by --token-secret)"
        )
    return token
