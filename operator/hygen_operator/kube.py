"""A small async Kubernetes client over plain JSON: get, list, create, merge/JSON patch, delete.

Built on ``kubernetes.aio`` (config loading, auth, TLS); every call returns dicts, so the
operator reads and writes the same JSON it would see with kubectl. Transient errors (429,
5xx, dropped connections) are retried with backoff; ``ensure`` turns "already exists"
into a read, so a create retried after a lost response never makes a second object.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from kubernetes.aio import client as k8s
from kubernetes.aio import config as k8s_config

logger = logging.getLogger(__name__)

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


CONFIGMAP = Kind("", "v1", "configmaps", "ConfigMap")
SERVICE = Kind("", "v1", "services", "Service")
POD = Kind("", "v1", "pods", "Pod")
SECRET = Kind("", "v1", "secrets", "Secret")
EVENT = Kind("", "v1", "events", "Event")
PVC = Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
DEPLOYMENT = Kind("apps", "v1", "deployments", "Deployment")
JOB = Kind("batch", "v1", "jobs", "Job")


class ApiError(Exception):
    """A Kubernetes API error with its HTTP status and the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Kube:
    """JSON verbs against one API server; ``retries`` covers transient failures only."""

    def __init__(self, api: k8s.ApiClient, retries: int = 5, backoff_s: float = 0.2) -> None:
        self.api = api
        self.retries = retries
        self.backoff_s = backoff_s

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, agent: str = "hygen-operator") -> Kube:
        """In-cluster config, else the kubeconfig; ``agent`` names us in the API server's logs."""
        cfg = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=cfg)
        except k8s_config.ConfigException:
            await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        api = k8s.ApiClient(cfg)
        api.user_agent = f"{agent}/{version('hygen-k8s')}"
        return cls(api)

    async def close(self) -> None:
        await self.api.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
    ) -> Any:
        """One call, retried on 429/5xx/connection errors; raises ApiError otherwise."""
        for attempt in range(self.retries + 1):
            try:
                return await self._once(method, path, body, content_type, query)
            except ApiError as e:
                if e.status not in (429, 500, 502, 503, 504) or attempt == self.retries:
                    raise
                err: Exception = e
            except (TimeoutError, OSError) as e:
                if attempt == self.retries:
                    raise ApiError(0, f"cannot reach the API server: {e}") from e
                err = e
            logger.info("retrying %s %s after %s", method, path, err)
            await asyncio.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    async def _once(self, method: str, path: str, body: Any, ctype: str, query: Any) -> Any:
        m, url, headers, data, _ = await self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params={"Content-Type": ctype, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = await self.api.call_api(m, url, header_params=headers, body=data)
        raw = await resp.read()
        if resp.status >= 400:
            try:
                message = json.loads(raw).get("message", raw.decode())
            except ValueError:
                message = raw.decode(errors="replace")
            raise ApiError(resp.status, message)
        return json.loads(raw) if raw else None

    # ------------------------------------------------------------------ verbs
    async def get(self, kind: Kind, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", kind.path(ns, name))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def list(self, kind: Kind, ns: str, selector: str = "") -> list[dict[str, Any]]:
        q = {"labelSelector": selector} if selector else None
        return (await self.request("GET", kind.path(ns), query=q))["items"]

    async def ensure(
        self, kind: Kind, ns: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Create ``body`` unless an object of that name exists; returns (object, created)."""
        body = {"apiVersion": kind.api_version, "kind": kind.kind, **body}
        try:
            return await self.request("POST", kind.path(ns), body), True
        except ApiError as e:
            if e.status != 409:
                raise
        existing = await self.get(kind, ns, body["metadata"]["name"])
        if existing is None:  # deleted in between: try once more
            return await self.request("POST", kind.path(ns), body), True
        return existing, False

    async def patch(
        self,
        kind: Kind,
        ns: str,
        name: str,
        body: Any,
        *,
        status: bool = False,
        json_patch: bool = False,
    ) -> dict[str, Any]:
        path = kind.path(ns, name, "status" if status else None)
        return await self.request("PATCH", path, body, JSON_PATCH if json_patch else MERGE)

    async def delete(self, kind: Kind, ns: str, name: str) -> bool:
        try:
            await self.request("DELETE", kind.path(ns, name))
            return True
        except ApiError as e:
            if e.status == 404:
                return False
            raise
