"""The Files and Batch routes of a pod behind a cluster-wide Batch API: forwarded.

With ``--batch-gateway URL`` (set by the operator when the ServingSLO has ``batchApi``),
``/v1/files*`` and ``/v1/batches*`` are not served from this pod's own store but passed,
streamed both ways, to the gateway: the operator, which keeps files on object storage and
runs each batch as a BatchJob over every ready pod. So a batch created through the Service
is found from any pod, runs on all of them, and survives any pod. The caller's API key was
checked here (`AccessMiddleware`); the gateway gets the caller's key id as the owner, under
the operator's token, and trusts no owner sent without it.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

OWNER_HEADER = "X-Hygen-Owner"
PASS_REQUEST = ("content-type", "content-length")
PASS_RESPONSE = ("content-type", "retry-after", "content-disposition")


def forwarding_router(gateway: str, token: str, owner_of: Any) -> APIRouter:
    """Routes that forward every Files/Batch call to ``gateway`` (URL ending in the
    ServingSLO's path); ``owner_of(request)`` is the caller's key id."""
    router = APIRouter()
    client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0))
    base = gateway.rstrip("/")

    async def forward(request: Request) -> Response:
        owner = owner_of(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() in PASS_REQUEST}
        headers |= {"Authorization": f"Bearer {token}", OWNER_HEADER: owner}
        req = client.build_request(
            request.method,
            base + request.url.path,
            params=request.query_params,
            headers=headers,
            content=request.stream(),
        )
        try:
            resp = await client.send(req, stream=True)
        except httpx.HTTPError as e:
            err = {
                "message": f"the batch API (the operator) is unreachable: {type(e).__name__}; "
                "retry shortly",
                "type": "service_unavailable",
                "param": None,
                "code": None,
            }
            return JSONResponse({"error": err}, status_code=503, headers={"Retry-After": "2"})
        out = {k: v for k, v in resp.headers.items() if k.lower() in PASS_RESPONSE}
        return StreamingResponse(
            resp.aiter_raw(), resp.status_code, out, background=BackgroundTask(resp.aclose)
        )

    methods = ["GET", "POST", "DELETE"]
    for path in ("/v1/files", "/v1/files/{rest:path}", "/v1/batches", "/v1/batches/{rest:path}"):
        router.add_api_route(path, forward, methods=methods, include_in_schema=False)
    return router
