"""The pod's own HTTP surface, mounted on vLLM's OpenAI app: batch, offline, control, ready.

Engine-agnostic: offline requests run through an `Executor` (the vLLM adapter
passes vLLM's own completion/chat handlers), so this module is tested with a
fake engine too. Errors use the OpenAI shape ``{"error": {"message", "type",
"param", "code"}}`` with a message that names the problem.
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hygen_pod.api import (
    BatchCreate,
    BatchList,
    BatchObject,
    ControlView,
    FileList,
    FileObject,
    LiveMetrics,
    Metric,
    OfflineResult,
    OfflineSubmit,
    SLOTargets,
)
from hygen_pod.control import OfflineControl, write_control
from hygen_pod.jsonio import read_json
from hygen_pod.offline_runner import Executor, OfflineRunner
from hygen_pod.offline_store import Conflict, NotFound, OfflineStore
from hygen_pod.pod_metrics import PodMetrics
from hygen_pod.scheduler_status import read_status
from hygen_pod.slo_window import SLOWindow

logger = logging.getLogger("hygen.pod")
MAX_UPLOAD_BYTES = 200 << 20  # OpenAI's batch input limit


class PodSettings(BaseModel):
    """Settings of the pod server beyond vLLM's own engine arguments."""

    model_config = ConfigDict(extra="forbid")

    state_dir: Path = Field(description="offline state (files, batches, results): a volume")
    control_token: str | None = Field(
        None, description="bearer token of the control API; generated into state_dir if unset"
    )
    slo_targets_ms: dict[Metric, float] = Field(default_factory=dict)
    window_s: float = Field(60.0, gt=0, description="sliding window of live SLO metrics")
    max_inflight: int = Field(256, gt=0, description="offline requests inside the engine")
    max_queued: int = Field(10_000, gt=0, description="queued single offline requests before 429")
    drain_timeout_s: float = Field(30.0, ge=0, description="SIGTERM: wait this long for work")
    profile_path: Path | None = None
    has_predictor: bool = Field(False, description="a budget > 0 needs a predictor")
    initial_control: OfflineControl = Field(default_factory=OfflineControl)

    @property
    def control_path(self) -> Path:
        return self.state_dir / "control.json"

    @property
    def status_path(self) -> Path:
        return self.state_dir / "scheduler-status.json"


class ApiError(Exception):
    """An HTTP error with an OpenAI-shaped body (and optional headers, e.g. Retry-After)."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param
        self.headers = headers


def _error_json(
    status: int,
    message: str,
    type_: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def validation_message(e: ValidationError) -> tuple[str, str | None]:
    """("field.path: problem", "field.path") of the first error, for a 400 body."""
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or None
    return f"{loc}: {err['msg']}" if loc else err["msg"], loc


class Pod:
    """Live state of one pod server: store, runner, metrics, control, readiness."""

    def __init__(
        self, settings: PodSettings, execute: Executor, registry: CollectorRegistry = REGISTRY
    ) -> None:
        self.settings = settings
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.token = settings.control_token or self._stored_token()
        self.store = OfflineStore(settings.state_dir)
        self.window = SLOWindow(settings.window_s)
        self.slo_targets: dict[Metric, float] = dict(settings.slo_targets_ms)
        self.metrics = PodMetrics(registry, self.live)
        self.window.observers.append(self.metrics.observe)
        self.runner = OfflineRunner(
            self.store,
            execute,
            max_inflight=settings.max_inflight,
            on_result=lambda outcome: self.metrics.offline_results.labels(outcome).inc(),
        )
        self.control = settings.initial_control
        write_control(settings.control_path, self.control)
        self.ready = False
        self.draining = False

    def _stored_token(self) -> str:
        path = self.settings.state_dir / "control.token"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
            logger.warning("no control token given; generated one in %s", path)
        return path.read_text().strip()

    def live(self) -> LiveMetrics:
        depth = self.runner.depth
        status = read_status(self.settings.status_path)
        return LiveMetrics(
            window_s=self.window.window_s,
            online=self.window.window("online"),
            offline=self.window.window("offline"),
            slo=self.window.slo(self.slo_targets),
            offline_queued=max(0, depth.get("queued", 0) - len(self.runner.inflight)),
            offline_inflight=len(self.runner.inflight),
            control=self.control,
            scheduler=status.model_dump() if status else {},
        )

    def retry_after_s(self) -> int:
        """Retry-After for a full queue: about one offline completion's time (1-30 s)."""
        done = self.window.window("offline").requests
        rate = done / self.window.window_s
        return 5 if rate <= 0 else max(1, min(30, math.ceil(1 / rate)))

    def set_control(self, control: OfflineControl) -> None:
        if control.mode == "budget" and control.budget_ms > 0 and not self.settings.has_predictor:
            raise ApiError(
                409,
                "a non-zero budget_ms needs a predictor: start the pod with a profile "
                "(--hygen-profile) or a predictor (--hygen-predictor)",
                "invalid_request_error",
                "budget_ms",
            )
        write_control(self.settings.control_path, control)
        self.control = control

    def check_token(self, request: Request) -> None:
        auth = request.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), self.token):
            raise ApiError(401, "missing or wrong bearer token", "authentication_error")

    def check_accepting(self) -> None:
        if self.draining:
            raise ApiError(503, "the pod is draining (shutting down)", "service_unavailable")


def _pod(request: Request) -> Pod:
    return request.app.state.hygen_pod


PodDep = Annotated[Pod, Depends(_pod)]


def _control_auth(request: Request, pod: PodDep) -> Pod:
    pod.check_token(request)
    return pod


ControlPod = Annotated[Pod, Depends(_control_auth)]


async def _json_body(request: Request, model: type[BaseModel]) -> Any:
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as e:
        msg, loc = validation_message(e)
        raise ApiError(400, msg, "invalid_request_error", loc) from e


files = APIRouter(tags=["files"])


@files.post("/v1/files", response_model=FileObject)
async def upload_file(
    pod: PodDep, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]
) -> FileObject:
    pod.check_accepting()
    if purpose != "batch":
        raise ApiError(
            400,
            f"purpose {purpose!r} is not supported (use 'batch')",
            "invalid_request_error",
            "purpose",
        )
    data = await file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(
            413, f"file is larger than {MAX_UPLOAD_BYTES} bytes", "invalid_request_error", "file"
        )
    return await pod.runner.db(pod.store.add_file, data, file.filename or "upload.jsonl", purpose)


@files.get("/v1/files", response_model=FileList)
async def list_files(pod: PodDep, purpose: str | None = None) -> FileList:
    return FileList(data=await pod.runner.db(pod.store.list_files, purpose))


@files.get("/v1/files/{file_id}", response_model=FileObject)
async def get_file(pod: PodDep, file_id: str) -> FileObject:
    return await pod.runner.db(pod.store.get_file, file_id)


@files.get("/v1/files/{file_id}/content")
async def file_content(pod: PodDep, file_id: str) -> Response:
    data = await pod.runner.db(pod.store.file_content, file_id)
    return Response(data, media_type="application/jsonl")


@files.delete("/v1/files/{file_id}")
async def delete_file(pod: PodDep, file_id: str) -> dict[str, Any]:
    await pod.runner.db(pod.store.delete_file, file_id)
    return {"id": file_id, "object": "file", "deleted": True}


batches = APIRouter(tags=["batches"])


@batches.post("/v1/batches", response_model=BatchObject)
async def create_batch(pod: PodDep, request: Request) -> BatchObject:
    pod.check_accepting()
    body: BatchCreate = await _json_body(request, BatchCreate)
    b = await pod.runner.db(
        pod.store.create_batch,
        body.input_file_id,
        body.endpoint,
        body.completion_window,
        body.metadata,
    )
    pod.runner.wake()
    return b


@batches.get("/v1/batches/{batch_id}", response_model=BatchObject)
async def get_batch(pod: PodDep, batch_id: str) -> BatchObject:
    return await pod.runner.db(pod.store.get_batch, batch_id)


@batches.get("/v1/batches", response_model=BatchList)
async def list_batches(pod: PodDep, limit: int = 20, after: str | None = None) -> BatchList:
    if not 1 <= limit <= 100:
        raise ApiError(400, "limit must be between 1 and 100", "invalid_request_error", "limit")
    data = await pod.runner.db(pod.store.list_batches, limit + 1, after)
    page = data[:limit]
    return BatchList(
        data=page,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
        has_more=len(data) > limit,
    )


@batches.post("/v1/batches/{batch_id}/cancel", response_model=BatchObject)
async def cancel_batch(pod: PodDep, batch_id: str) -> BatchObject:
    b = await pod.runner.db(pod.store.cancel_batch, batch_id)
    pod.runner.wake()
    return b


offline = APIRouter(tags=["offline"])


@offline.post("/v1/offline/requests", response_model=OfflineResult, status_code=202)
async def submit_offline(pod: PodDep, request: Request, response: Response) -> OfflineResult:
    """Queue one offline request (idempotent on id). 429 + Retry-After when the queue is full."""
    pod.check_accepting()
    sub: OfflineSubmit = await _json_body(request, OfflineSubmit)
    if await pod.runner.db(pod.store.single_queued) >= pod.settings.max_queued:
        existing = await pod.runner.db(_maybe_get, pod.store, sub.id)
        if existing is None:
            raise ApiError(
                429,
                f"offline queue is full ({pod.settings.max_queued} queued); retry later",
                "rate_limit_error",
                headers={"Retry-After": str(pod.retry_after_s())},
            )
    res, created = await pod.runner.db(pod.store.submit, sub.id, sub.url, sub.body)
    if created:
        pod.runner.wake()
    else:
        response.status_code = 200
    return res


def _maybe_get(store: OfflineStore, rid: str) -> OfflineResult | None:
    try:
        return store.get_request(rid)
    except NotFound:
        return None


@offline.get("/v1/offline/requests/{rid:path}", response_model=OfflineResult)
async def get_offline(pod: PodDep, rid: str) -> OfflineResult:
    return await pod.runner.db(pod.store.get_request, rid)


@offline.delete("/v1/offline/requests/{rid:path}", response_model=OfflineResult)
async def delete_offline(pod: PodDep, rid: str) -> OfflineResult:
    """Forget a request: acknowledges a result, or cancels one still queued or running."""
    await pod.runner.cancel_request(rid)
    return await pod.runner.db(pod.store.delete_request, rid)


control = APIRouter(tags=["control"], prefix="/control")


@control.get("", response_model=ControlView)
async def get_control(pod: ControlPod) -> ControlView:
    status = read_status(pod.settings.status_path)
    return ControlView(
        control=pod.control,
        slo_targets_ms=pod.slo_targets,
        profile_loaded=pod.settings.profile_path is not None,
        scheduler_error=status.control_error if status else None,
    )


@control.put("/offline", response_model=ControlView)
async def put_control(pod: ControlPod, request: Request) -> ControlView:
    """Set the offline budget (HyGen) or QPS (HyGen*); the scheduler applies it next step."""
    pod.set_control(await _json_body(request, OfflineControl))
    return await get_control(pod)


@control.put("/slo", response_model=ControlView)
async def put_slo(pod: ControlPod, request: Request) -> ControlView:
    body: SLOTargets = await _json_body(request, SLOTargets)
    pod.slo_targets = dict(body.targets_ms)
    return await get_control(pod)


@control.get("/metrics", response_model=LiveMetrics)
async def live_metrics(pod: ControlPod) -> LiveMetrics:
    await pod.runner.refresh_depth()
    return pod.live()


@control.get("/profile")
async def get_profile(pod: ControlPod) -> dict[str, Any]:
    if pod.settings.profile_path is None:
        raise ApiError(404, "this pod was started without a profile", "not_found_error")
    return read_json(pod.settings.profile_path)


probes = APIRouter(tags=["probes"])


@probes.get("/ready")
async def ready(pod: PodDep) -> JSONResponse:
    if pod.draining:
        return JSONResponse({"ready": False, "reason": "draining"}, status_code=503)
    if not pod.ready:
        return JSONResponse({"ready": False, "reason": "starting"}, status_code=503)
    return JSONResponse({"ready": True})


def attach(app: FastAPI, pod: Pod) -> None:
    """Mount the pod's routes and error handlers on ``app`` (vLLM's or a bare one)."""
    app.state.hygen_pod = pod
    for r in (files, batches, offline, control, probes):
        app.include_router(r)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return _error_json(e.status, e.message, e.type, e.param, e.headers)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, e: NotFound) -> JSONResponse:
        return _error_json(404, str(e.args[0]), "not_found_error")

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, e: Conflict) -> JSONResponse:
        return _error_json(409, str(e), "invalid_request_error")

    # vLLM's app may have built its middleware stack already; rebuild it with these handlers.
    app.middleware_stack = None


@asynccontextmanager
async def running(pod: Pod):
    """Start the offline runner and mark the pod ready; stop both on exit."""
    await pod.runner.refresh_depth()
    pod.runner.start()
    pod.ready = True
    try:
        yield pod
    finally:
        pod.ready = False
        await pod.runner.stop()
        pod.store.close()
