"""The operator's client for one serving pod: control API and offline requests.

Documents are the pod's own pydantic models (`hygen_pod.contract.api`), so both sides agree on
the wire format by construction. Errors come back as `PodError` with the HTTP status
(0 when the pod could not be reached) and, for 429, the pod's Retry-After.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from hygen_pod.contract.api import (
    ControlView,
    LiveMetrics,
    OfflineDeleted,
    OfflineForgotten,
    OfflineIds,
    OfflineList,
    OfflineResult,
    OfflineSubmit,
    OfflineSubmitMany,
    OfflineSubmitted,
    SLOTargets,
)
from hygen_pod.contract.control import OfflineControl
from hygen_pod.contract.profile import ProfileDocument


class PodError(Exception):
    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class PodAddress:
    name: str
    ip: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"


class PodClient:
    """Talks to the pods of one operator; one connection pool for all of them."""

    def __init__(self, token: str, timeout_s: float = 10.0) -> None:
        self._http = httpx.AsyncClient(timeout=timeout_s)
        self._auth = {"Authorization": f"Bearer {token}"}

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        pod: PodAddress,
        method: str,
        path: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        try:
            r = await self._http.request(
                method, pod.url + path, json=json, params=params, headers=self._auth
            )
        except httpx.HTTPError as e:
            raise PodError(0, f"{pod.name} unreachable: {e!r}") from e
        if r.status_code >= 400 and r.status_code != 404:
            retry = r.headers.get("Retry-After")
            raise PodError(
                r.status_code, f"{pod.name}: {r.text[:300]}", float(retry) if retry else None
            )
        return r

    # ----------------------------------------------------------- control
    async def control(self, pod: PodAddress) -> ControlView:
        return ControlView.model_validate_json((await self._call(pod, "GET", "/control")).content)

    async def set_offline(self, pod: PodAddress, control: OfflineControl) -> ControlView:
        r = await self._call(pod, "PUT", "/control/offline", control.model_dump())
        return ControlView.model_validate_json(r.content)

    async def set_slo(self, pod: PodAddress, targets_ms: dict[str, float]) -> ControlView:
        body = SLOTargets(targets_ms=targets_ms).model_dump()  # type: ignore[arg-type]
        return ControlView.model_validate_json(
            (await self._call(pod, "PUT", "/control/slo", body)).content
        )

    async def metrics(self, pod: PodAddress) -> LiveMetrics:
        return LiveMetrics.model_validate_json(
            (await self._call(pod, "GET", "/control/metrics")).content
        )

    async def profile(self, pod: PodAddress) -> ProfileDocument | None:
        r = await self._call(pod, "GET", "/control/profile")
        return None if r.status_code == 404 else ProfileDocument.model_validate_json(r.content)

    # ----------------------------------------------------------- offline requests
    async def submit(self, pod: PodAddress, req: OfflineSubmit) -> OfflineResult:
        r = await self._call(pod, "POST", "/v1/offline/requests", req.model_dump())
        if r.status_code == 404:
            raise PodError(404, f"{pod.name}: no offline API")
        return OfflineResult.model_validate_json(r.content)

    async def submit_many(self, pod: PodAddress, reqs: list[OfflineSubmit]) -> OfflineSubmitted:
        """Many requests in one call (up to BULK_MAX); one outcome each, in order."""
        body = OfflineSubmitMany(requests=reqs).model_dump()
        r = await self._call(pod, "POST", "/v1/offline/requests/bulk-submit", body)
        if r.status_code == 404:
            raise PodError(404, f"{pod.name}: no bulk offline API")
        out = OfflineSubmitted.model_validate_json(r.content)
        if len(out.outcomes) != len(reqs):
            raise PodError(502, f"{pod.name}: {len(out.outcomes)} outcomes for {len(reqs)}")
        return out

    async def ack_many(self, pod: PodAddress, ids: list[str]) -> OfflineForgotten:
        """Forget many requests in one call (up to BULK_MAX)."""
        body = OfflineIds(ids=ids).model_dump()
        r = await self._call(pod, "POST", "/v1/offline/requests/bulk-delete", body)
        if r.status_code == 404:
            raise PodError(404, f"{pod.name}: no bulk offline API")
        return OfflineForgotten.model_validate_json(r.content)

    async def ack(self, pod: PodAddress, rid: str) -> None:
        """DELETE: cancel a queued request or drop a finished one (404 is fine)."""
        await self._call(pod, "DELETE", f"/v1/offline/requests/{rid}")

    async def requests(self, pod: PodAddress, prefix: str, page: int = 1000) -> list[OfflineResult]:
        """Every single request the pod holds whose id starts with ``prefix`` (paged GETs)."""
        out: list[OfflineResult] = []
        params: dict[str, Any] = {"prefix": prefix, "limit": page}
        while True:
            r = await self._call(pod, "GET", "/v1/offline/requests", params=params)
            if r.status_code == 404:
                raise PodError(404, f"{pod.name}: no offline list API")
            lst = OfflineList.model_validate_json(r.content)
            out += lst.data
            if not lst.has_more:
                return out
            params["after"] = lst.last_id

    async def forget_prefix(self, pod: PodAddress, prefix: str) -> int:
        """DELETE every request with this id prefix: cancels queued and running work."""
        r = await self._call(pod, "DELETE", "/v1/offline/requests", params={"prefix": prefix})
        if r.status_code == 404:
            raise PodError(404, f"{pod.name}: no offline API")
        return OfflineDeleted.model_validate_json(r.content).deleted
