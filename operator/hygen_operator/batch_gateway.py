"""The cluster-wide OpenAI Files/Batch API of every ServingSLO with ``batchApi``.

Served by the operator (``--batch-api-port``) under ``/ns/<namespace>/slo/<name>``; the
ServingSLO's pods forward ``/v1/files*`` and ``/v1/batches*`` here (`batch_forward` in the
pod), so clients use the Service's URL and API key as for online traffic. Why the operator:
it already holds the API rights to create BatchJobs and read the ServingSLO's Secret, and
with files on object storage (or its own volume) and each batch recorded as a BatchJob, it
keeps no state in memory: a restart, or another replica, answers the same. Only callers
holding the control token (the pods) are served; the owner they send is the caller's API
key id, and every file and batch is visible to its owner only (404 for anyone else).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, Header, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from hygen_operator.batch_api_files import (
    FileNotThere,
    FileStore,
    NoVolume,
    TooLarge,
    file_store,
)
from hygen_operator.batch_api_objects import (
    API_LABEL,
    batch_job,
    batch_object,
    job_name,
    new_batch_id,
    output_of,
    owner_of,
)
from hygen_operator.batchjob import BATCHJOB, SERVINGSLO
from hygen_operator.kube import Kube
from hygen_operator.object_store import StoreConfigError
from hygen_operator.resources import ServingSLOSpec
from hygen_pod.contract.api import (
    BatchCreate,
    BatchList,
    BatchObject,
    FileDeleted,
    FileList,
    FileObject,
)

logger = logging.getLogger(__name__)
MAX_UPLOAD_BYTES = 200 << 20  # OpenAI's batch input limit
CHUNK = 1 << 20


class GatewayError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type_


def _caller(
    request: Request,
    authorization: Annotated[str, Header()] = "",
    x_hygen_owner: Annotated[str | None, Header()] = None,
) -> str:
    """The owner a pod vouches for; only the pods (holding the control token) may ask."""
    scheme, _, given = authorization.partition(" ")
    token = request.app.state.token
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
        raise GatewayError(401, "the batch API answers the ServingSLO's pods only", "auth")
    if x_hygen_owner is None:
        raise GatewayError(401, "no owner", "authentication_error")
    return x_hygen_owner


Owner = Annotated[str, Depends(_caller)]


def gateway_app(
    kube: Kube, token: str, volume: Callable[[str], Path | None] = lambda ns: None
) -> FastAPI:
    """The gateway's routes; ``token`` is the control token the pods present, ``volume(ns)``
    the namespace's folder of the operator's Batch API volume (None: it has none)."""
    app = FastAPI(title="HyGen cluster Batch API", docs_url=None, redoc_url=None)
    app.state.token = token
    r = APIRouter(prefix="/ns/{ns}/slo/{slo}")
    bj, slo_kind = BATCHJOB, SERVINGSLO

    async def store(ns: str, slo: str) -> FileStore:
        obj = await kube.get(slo_kind, ns, slo)
        if obj is None:
            raise GatewayError(404, f"ServingSLO {ns}/{slo} not found", "not_found_error")
        spec = ServingSLOSpec.model_validate(obj.get("spec") or {})
        if spec.batch_api is None:
            raise GatewayError(404, f"ServingSLO {ns}/{slo} has no batchApi", "not_found_error")
        try:
            return await file_store(kube, ns, slo, spec.batch_api, volume)
        except StoreConfigError as e:
            raise GatewayError(
                503, str(e).replace("spec.", "spec.batchApi."), "server_error"
            ) from e
        except NoVolume as e:
            raise GatewayError(503, str(e), "server_error") from e

    async def my_job(ns: str, slo: str, batch_id: str, owner: str) -> dict[str, Any]:
        job = await kube.get(bj, ns, job_name(batch_id)) if batch_id.startswith("batch_") else None
        labels = ((job or {}).get("metadata") or {}).get("labels") or {}
        if job is None or labels.get(API_LABEL) != slo or owner_of(job) != owner:
            raise GatewayError(404, f"no batch {batch_id!r}", "not_found_error")
        return job

    # ----------------------------------------------------------- files
    @r.post("/v1/files", response_model=FileObject)
    async def upload(
        ns: str,
        slo: str,
        owner: Owner,
        file: Annotated[UploadFile, File()],
        purpose: Annotated[Literal["batch"], Form()],
    ) -> FileObject:
        if file.size is not None and file.size > MAX_UPLOAD_BYTES:
            raise GatewayError(413, f"file is larger than {MAX_UPLOAD_BYTES} bytes")
        fs = await store(ns, slo)

        async def chunks() -> AsyncIterator[bytes]:
            while c := await file.read(CHUNK):
                yield c

        name = file.filename or "upload.jsonl"
        try:
            return await fs.add(chunks(), name, purpose, owner, MAX_UPLOAD_BYTES)
        except TooLarge as e:
            raise GatewayError(413, str(e)) from e

    @r.get("/v1/files", response_model=FileList)
    async def list_files(ns: str, slo: str, owner: Owner) -> FileList:
        return FileList(data=await (await store(ns, slo)).list(owner))

    @r.get("/v1/files/{file_id}", response_model=FileObject)
    async def get_file(ns: str, slo: str, file_id: str, owner: Owner) -> FileObject:
        out = output_of(file_id)
        if out is None:
            return await (await store(ns, slo)).get(file_id, owner)
        job = await my_job(ns, slo, out[0], owner)
        lines = (await store(ns, slo)).output_lines(out[0], _errors(job, file_id))
        size = sum([len(x) async for x in lines])
        return FileObject(
            id=file_id,
            bytes=size,
            created_at=batch_object(job).completed_at or 0,
            filename=f"{file_id}.jsonl",
            purpose="batch_output",
        )

    @r.get("/v1/files/{file_id}/content")
    async def content(ns: str, slo: str, file_id: str, owner: Owner) -> Response:
        fs = await store(ns, slo)
        out = output_of(file_id)
        if out is None:
            stream = await fs.content(file_id, owner)
        else:  # checked before the first byte: an error can still be a status code
            job = await my_job(ns, slo, out[0], owner)
            stream = fs.output_lines(out[0], _errors(job, file_id))
        return StreamingResponse(stream, media_type="application/jsonl")

    @r.delete("/v1/files/{file_id}", response_model=FileDeleted)
    async def delete_file(ns: str, slo: str, file_id: str, owner: Owner) -> FileDeleted:
        await (await store(ns, slo)).delete(file_id, owner)
        return FileDeleted(id=file_id)

    # ----------------------------------------------------------- batches
    @r.post("/v1/batches", response_model=BatchObject)
    async def create(ns: str, slo: str, owner: Owner, body: BatchCreate) -> BatchObject:
        fs = await store(ns, slo)
        f = await fs.get(body.input_file_id, owner)
        if f.purpose != "batch":
            raise GatewayError(400, f"file {f.id} has purpose {f.purpose!r}, not 'batch'")
        bid = new_batch_id()
        job = batch_job(
            bid, ns, slo, owner, body, fs.api,
            fs.ref(fs.content_key(f.id)), fs.ref(fs.output_key(bid)),
        )  # fmt: skip
        created, _ = await kube.ensure(bj, ns, job)
        return batch_object(created)

    @r.get("/v1/batches/{batch_id}", response_model=BatchObject)
    async def get_batch(ns: str, slo: str, batch_id: str, owner: Owner) -> BatchObject:
        return batch_object(await my_job(ns, slo, batch_id, owner))

    @r.get("/v1/batches", response_model=BatchList)
    async def list_batches(
        ns: str,
        slo: str,
        owner: Owner,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        after: str | None = None,
    ) -> BatchList:
        jobs = [j for j in await kube.list(bj, ns, f"{API_LABEL}={slo}") if owner_of(j) == owner]
        objs = sorted((batch_object(j) for j in jobs), key=lambda b: (-b.created_at, b.id))
        if after is not None:
            ids = [b.id for b in objs]
            objs = objs[ids.index(after) + 1 :] if after in ids else []
        return BatchList.page(objs, limit)

    @r.post("/v1/batches/{batch_id}/cancel", response_model=BatchObject)
    async def cancel(ns: str, slo: str, batch_id: str, owner: Owner) -> BatchObject:
        job = await my_job(ns, slo, batch_id, owner)
        if batch_object(job).status in ("completed", "failed", "expired", "cancelled"):
            raise GatewayError(409, f"batch {batch_id} has already ended")
        job = await kube.patch(bj, ns, job["metadata"]["name"], {"spec": {"cancel": True}})
        return batch_object(job)

    app.include_router(r)

    @app.exception_handler(GatewayError)
    async def _error(_: Request, e: GatewayError) -> JSONResponse:
        err = {"message": e.message, "type": e.type, "param": None, "code": None}
        return JSONResponse({"error": err}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0]
        where = ".".join(str(x) for x in (err.get("loc") or ())[1:])
        msg = f"{where}: {err['msg']}" if where else err["msg"]
        body = {"message": msg, "type": "invalid_request_error", "param": where or None,
                "code": None}  # fmt: skip
        return JSONResponse({"error": body}, status_code=400)

    @app.exception_handler(FileNotThere)
    async def _no_file(_: Request, e: FileNotThere) -> JSONResponse:
        err = {"message": f"no file {e.args[0]!r}", "type": "not_found_error", "param": None,
               "code": None}  # fmt: skip
        return JSONResponse({"error": err}, status_code=404)

    return app


def _errors(job: dict[str, Any], file_id: str) -> bool:
    """Whether ``file_id`` is the batch's error file (else its output file); 404 if neither
    exists (yet): the batch has not ended, or it had no such lines."""
    b = batch_object(job)
    if file_id not in (b.output_file_id, b.error_file_id):
        raise GatewayError(404, f"no file {file_id!r} (yet)", "not_found_error")
    return file_id == b.error_file_id
