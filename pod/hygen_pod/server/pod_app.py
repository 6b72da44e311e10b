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
import os
import secrets
from collections.abc import Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    File,
    Form,
    Query,
    Request,
    Response,
    UploadFile,
)
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from hygen_pod.contract.api import (
    REQUEST_ID_PATTERN,
    REQUEST_ID_PREFIX_PATTERN,
    BatchCreate,
    BatchList,
    BatchObject,
    ControlView,
    ErrorResponse,
    FileDeleted,
    FileList,
    FileObject,
    LiveMetrics,
    Metric,
    OfflineDeleted,
    OfflineForgotten,
    OfflineIds,
    OfflineList,
    OfflineOutcome,
    OfflineResult,
    OfflineSubmit,
    OfflineSubmitMany,
    OfflineSubmitted,
    Readiness,
    SLOTargets,
)
from hygen_pod.contract.control import OfflineControl, write_control
from hygen_pod.contract.jsonio import read_json
from hygen_pod.contract.scheduler_status import read_status
from hygen_pod.server.access import OWNER_KEY, AccessMiddleware, ApiKeys
from hygen_pod.server.arrival import ArrivalClock
from hygen_pod.server.offline_runner import Executor, OfflineRunner
from hygen_pod.server.offline_store import BadDigest, Conflict, NotFound, OfflineStore
from hygen_pod.server.pod_metrics import PodMetrics
from hygen_pod.server.slo_window import SLOWindow

logger = logging.getLogger("hygen.pod")
MAX_UPLOAD_BYTES = 200 << 20  # OpenAI's batch input limit


class PodSettings(BaseModel):
    """Settings of the pod server beyond vLLM's own engine arguments."""

    model_config = ConfigDict(extra="forbid")

    state_dir: Path = Field(description="offline state (files, batches, results): a volume")
    control_token: str | None = Field(
        None,
        repr=False,
        description="the operator's bearer token (control and dispatch routes); generated "
        "into state_dir if unset",
    )
    api_keys: list[str] = Field(
        default_factory=list,
        repr=False,
        description="API keys of the OpenAI routes (files and batches belong to a key); "
        "none = those routes are open",
    )
    slo_targets_ms: dict[Metric, float] = Field(default_factory=dict)
    window_s: float = Field(60.0, gt=0, description="sliding window of live SLO metrics")
    max_inflight: int = Field(256, gt=0, description="offline requests inside the engine")
    max_starting: int = Field(
        2, gt=0, description="offline requests on their way into the engine at once"
    )
    max_queued: int = Field(10_000, gt=0, description="queued single offline requests before 429")
    drain_timeout_s: float = Field(30.0, ge=0, description="SIGTERM: wait this long for work")
    admin_port: int | None = Field(
        None,
        gt=0,
        lt=65536,
        description="serve the operator's routes (control, dispatch) on this port only, "
        "and nothing else there; None: every route on the main port",
    )
    batch_gateway: str | None = Field(
        None,
        pattern=r"^https?://",
        description="forward /v1/files and /v1/batches to this cluster-wide Batch API (the "
        "operator) instead of serving them from this pod's store",
    )
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
        settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        settings.state_dir.chmod(0o700)
        self.token = settings.control_token or self._stored_token()
        self.keys = ApiKeys(settings.api_keys)
        if not self.keys.enabled:
            logger.warning(
                "no API keys configured (--api-key-file / --api-key): the OpenAI, files and "
                "batch routes are open to anyone who can reach this pod"
            )
        self.store = OfflineStore(settings.state_dir)
        self.window = SLOWindow(settings.window_s)
        self.slo_targets: dict[Metric, float] = dict(settings.slo_targets_ms)
        self.metrics = PodMetrics(registry, self.live)
        self.window.observers.append(self.metrics.observe)
        self.runner = OfflineRunner(
            self.store,
            execute,
            max_inflight=settings.max_inflight,
            max_starting=settings.max_starting,
            on_result=lambda outcome: self.metrics.offline_results.labels(outcome).inc(),
        )
        self.control = settings.initial_control
        write_control(settings.control_path, self.control)
        self.ready = False
        self.draining = False

    def _stored_token(self) -> str:
        """The token kept in the state dir, made on first start with its final mode (0600,
        never readable by others, not even for an instant)."""
        path = self.settings.state_dir / "control.token"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            logger.warning("no control token given; using the one in %s", path)
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
            logger.warning("no control token given; generated one in %s", path)
        token = path.read_text().strip()
        if not token:
            raise ValueError(f"{path} is empty: delete it to generate a new token")
        return token

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


def _owner(request: Request) -> str:
    """The caller's key id, set by `AccessMiddleware` ("" when the pod has no API keys)."""
    owner = getattr(request.state, OWNER_KEY, None)
    if owner is None:  # never reached behind the middleware; refuse rather than share
        raise ApiError(401, "missing or wrong API key (Bearer)", "authentication_error")
    return owner


Owner = Annotated[str, Depends(_owner)]


def request_validation_message(e: RequestValidationError) -> tuple[str, str | None]:
    """Like `validation_message`, for FastAPI's errors (whose loc starts with body/query/path)."""
    err = e.errors()[0]
    loc = list(err.get("loc") or ())
    if loc == ["body"] and err["type"] in ("model_attributes_type", "dict_type"):
        return "body: expected a JSON object (Content-Type: application/json)", None
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    where = ".".join(str(x) for x in loc) or None
    return (f"{where}: {err['msg']}" if where else err["msg"]), where


class OpenAIErrorRoute(APIRoute):
    """Our routes answer a request that fails validation with an OpenAI-shaped 400 (not
    FastAPI's 422); scoped to these routes so vLLM's own handlers stay as they are."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as e:
                msg, loc = request_validation_message(e)
                return _error_json(400, msg, "invalid_request_error", loc)
            except HTTPException as e:  # e.g. a body that is not UTF-8 JSON at all
                return _error_json(
                    e.status_code, str(e.detail), "invalid_request_error", headers=e.headers
                )

        return route


_ERRORS = {
    400: "invalid request: the message names the field",
    401: "missing or wrong bearer token (API key, or the operator's token)",
    404: "no such object",
    409: "conflicts with the stored state",
    413: "upload too large",
    429: "offline queue full; honour Retry-After",
    503: "the pod is draining",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error codes, all in OpenAI's error shape."""
    return {c: {"model": ErrorResponse, "description": _ERRORS[c]} for c in (400, *codes)}


def _router(tag: str, prefix: str = "") -> APIRouter:
    """A router of the pod's own routes: OpenAI-shaped 400s, and JSON bodies parsed even
    without a Content-Type (curl -d, httpx content=)."""
    return APIRouter(
        tags=[tag], prefix=prefix, route_class=OpenAIErrorRoute, strict_content_type=False
    )


files = _router("files")


@files.post("/v1/files", response_model=FileObject, responses=errors(413, 503))
async def upload_file(
    pod: PodDep,
    owner: Owner,
    file: Annotated[UploadFile, File()],
    purpose: Annotated[Literal["batch"], Form(description="only 'batch' is supported")],
) -> FileObject:
    pod.check_accepting()
    data = await file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(
            413, f"file is larger than {MAX_UPLOAD_BYTES} bytes", "invalid_request_error", "file"
        )
    return await pod.runner.db(
        pod.store.add_file, data, file.filename or "upload.jsonl", purpose, owner
    )


@files.get("/v1/files", response_model=FileList, responses=errors(401))
async def list_files(pod: PodDep, owner: Owner, purpose: str | None = None) -> FileList:
    return FileList(data=await pod.runner.db(pod.store.list_files, purpose, owner))


@files.get("/v1/files/{file_id}", response_model=FileObject, responses=errors(401, 404))
async def get_file(pod: PodDep, owner: Owner, file_id: str) -> FileObject:
    return await pod.runner.db(pod.store.get_file, file_id, owner)


@files.get(
    "/v1/files/{file_id}/content",
    response_class=Response,
    responses={200: {"content": {"application/jsonl": {}}}, **errors(401, 404)},
)
async def file_content(pod: PodDep, owner: Owner, file_id: str) -> Response:
    data = await pod.runner.db(pod.store.file_content, file_id, owner)
    return Response(data, media_type="application/jsonl")


@files.delete("/v1/files/{file_id}", response_model=FileDeleted, responses=errors(401, 404))
async def delete_file(pod: PodDep, owner: Owner, file_id: str) -> FileDeleted:
    await pod.runner.db(pod.store.delete_file, file_id, owner)
    return FileDeleted(id=file_id)


batches = _router("batches")


@batches.post("/v1/batches", response_model=BatchObject, responses=errors(401, 404, 409, 503))
async def create_batch(pod: PodDep, owner: Owner, body: BatchCreate) -> BatchObject:
    pod.check_accepting()
    b = await pod.runner.db(
        pod.store.create_batch,
        body.input_file_id,
        body.endpoint,
        body.completion_window,
        body.metadata,
        owner,
    )
    pod.runner.wake()
    return b


@batches.get("/v1/batches/{batch_id}", response_model=BatchObject, responses=errors(401, 404))
async def get_batch(pod: PodDep, owner: Owner, batch_id: str) -> BatchObject:
    return await pod.runner.db(pod.store.get_batch, batch_id, owner)


@batches.get("/v1/batches", response_model=BatchList, responses=errors(401))
async def list_batches(
    pod: PodDep,
    owner: Owner,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
) -> BatchList:
    data = await pod.runner.db(pod.store.list_batches, limit + 1, after, owner)
    return BatchList.page(data, limit)


@batches.post(
    "/v1/batches/{batch_id}/cancel", response_model=BatchObject, responses=errors(401, 404, 409)
)
async def cancel_batch(pod: PodDep, owner: Owner, batch_id: str) -> BatchObject:
    b = await pod.runner.db(pod.store.cancel_batch, batch_id, owner)
    pod.runner.wake()
    return b


RequestId = Annotated[str, PathParam(min_length=1, max_length=200, pattern=REQUEST_ID_PATTERN)]
offline = _router("offline")


@offline.post(
    "/v1/offline/requests",
    response_model=OfflineResult,
    status_code=202,
    responses={
        200: {"model": OfflineResult, "description": "already stored (same id)"},
        **errors(401, 409, 429, 503),
    },
)
async def submit_offline(pod: ControlPod, sub: OfflineSubmit, response: Response) -> OfflineResult:
    """Queue one offline request (idempotent on id). 429 + Retry-After when the queue is full."""
    pod.check_accepting()
    if await pod.runner.db(pod.store.single_queued) >= pod.settings.max_queued:
        existing = await pod.runner.db(_maybe_get, pod.store, sub.id)
        if existing is None:
            raise ApiError(
                429,
                f"offline queue is full ({pod.settings.max_queued} queued); retry later",
                "rate_limit_error",
                headers={"Retry-After": str(pod.retry_after_s())},
            )
    try:
        res, created = await pod.runner.db(pod.store.submit, sub.id, sub.url, sub.body, sub.digest)
    except BadDigest as e:
        raise ApiError(400, str(e), "invalid_request_error", "digest") from e
    if created:
        pod.runner.wake()
    else:
        response.status_code = 200
    return res


@offline.post(
    "/v1/offline/requests/bulk-submit",
    response_model=OfflineSubmitted,
    responses=errors(401, 503),
)
async def submit_offline_many(pod: ControlPod, subs: OfflineSubmitMany) -> OfflineSubmitted:
    """Queue many offline requests in one transaction; each outcome carries the status its
    own POST would have had (202, 200, 400, 409, or 429 past the queue's room)."""
    pod.check_accepting()
    room = pod.settings.max_queued - await pod.runner.db(pod.store.single_queued)
    items = [(x.id, x.url, x.body, x.digest) for x in subs.requests]
    done = await pod.runner.db(pod.store.submit_many, items, room)
    if any(code == 202 for code, _, _ in done):
        pod.runner.wake()
    outcomes = [
        OfflineOutcome(id=x.id, status=code, result=res, error=err)
        for x, (code, res, err) in zip(subs.requests, done, strict=True)
    ]
    full = any(o.status == 429 for o in outcomes)
    return OfflineSubmitted(outcomes=outcomes, retry_after_s=pod.retry_after_s() if full else None)


@offline.post(
    "/v1/offline/requests/bulk-delete", response_model=OfflineForgotten, responses=errors(401)
)
async def delete_offline_many(pod: ControlPod, req: OfflineIds) -> OfflineForgotten:
    """Forget many requests at once: acknowledges results, cancels queued or running ones."""
    parts: list[tuple[list[str], list[str], list[str]]] = []

    def delete() -> list[str]:
        parts.append(pod.store.delete_many(req.ids))
        return parts[0][0]

    await pod.runner.forget(delete)
    deleted, missing, refused = parts[0]
    return OfflineForgotten(deleted=deleted, missing=missing, refused=refused)


def _maybe_get(store: OfflineStore, rid: str) -> OfflineResult | None:
    try:
        return store.get_request(rid)
    except NotFound:
        return None


IdPrefix = Annotated[
    str, Query(max_length=200, pattern=REQUEST_ID_PREFIX_PATTERN, description="id prefix")
]
JobPrefix = Annotated[
    str,
    Query(min_length=1, max_length=200, pattern=REQUEST_ID_PREFIX_PATTERN, description="id prefix"),
]


@offline.get("/v1/offline/requests", response_model=OfflineList, responses=errors(401))
async def list_offline(
    pod: ControlPod,
    prefix: IdPrefix = "",
    after: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> OfflineList:
    """Single requests whose id starts with ``prefix`` (a dispatcher's ``<job uid>-``),
    in id order; page on with ``after`` = the last id."""
    data = await pod.runner.db(pod.store.list_requests, prefix, after, limit + 1)
    page = data[:limit]
    return OfflineList(data=page, last_id=page[-1].id if page else None, has_more=len(data) > limit)


@offline.delete("/v1/offline/requests", response_model=OfflineDeleted, responses=errors(401))
async def delete_offline_prefix(pod: ControlPod, prefix: JobPrefix) -> OfflineDeleted:
    """Forget every single request whose id starts with ``prefix``: cancels a whole job's
    queued and running work, and drops its unacknowledged results."""
    ids = await pod.runner.forget(lambda: pod.store.delete_prefix(prefix))
    return OfflineDeleted(prefix=prefix, deleted=len(ids))


@offline.get(
    "/v1/offline/requests/{rid:path}", response_model=OfflineResult, responses=errors(401, 404)
)
async def get_offline(pod: ControlPod, rid: RequestId) -> OfflineResult:
    return await pod.runner.db(pod.store.get_request, rid)


@offline.delete(
    "/v1/offline/requests/{rid:path}",
    response_model=OfflineResult,
    responses=errors(401, 404, 409),
)
async def delete_offline(pod: ControlPod, rid: RequestId) -> OfflineResult:
    """Forget a request: acknowledges a result, or cancels one still queued or running."""
    gone: list[OfflineResult] = []

    def delete() -> list[str]:
        gone.append(pod.store.delete_request(rid))
        return [rid]

    await pod.runner.forget(delete)
    return gone[0]


control = _router("control", "/control")


@control.get("", response_model=ControlView, responses=errors(401))
async def get_control(pod: ControlPod) -> ControlView:
    status = read_status(pod.settings.status_path)
    return ControlView(
        control=pod.control,
        slo_targets_ms=pod.slo_targets,
        profile_loaded=pod.settings.profile_path is not None,
        scheduler_error=status.control_error if status else None,
    )


@control.put("/offline", response_model=ControlView, responses=errors(401, 409))
async def put_control(pod: ControlPod, body: OfflineControl) -> ControlView:
    """Set the offline budget (HyGen) or QPS (HyGen*); the scheduler applies it next step."""
    pod.set_control(body)
    return await get_control(pod)


@control.put("/slo", response_model=ControlView, responses=errors(401))
async def put_slo(pod: ControlPod, body: SLOTargets) -> ControlView:
    pod.slo_targets = dict(body.targets_ms)
    return await get_control(pod)


@control.get("/metrics", response_model=LiveMetrics, responses=errors(401))
async def live_metrics(pod: ControlPod) -> LiveMetrics:
    await pod.runner.refresh_depth()
    return pod.live()


@control.get("/profile", responses=errors(401, 404))
async def get_profile(pod: ControlPod) -> dict[str, Any]:
    if pod.settings.profile_path is None:
        raise ApiError(404, "this pod was started without a profile", "not_found_error")
    return read_json(pod.settings.profile_path)


probes = _router("probes")


@probes.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "starting or draining"}},
)
async def ready(pod: PodDep) -> JSONResponse:
    if pod.draining:
        return JSONResponse({"ready": False, "reason": "draining"}, status_code=503)
    if not pod.ready:
        return JSONResponse({"ready": False, "reason": "starting"}, status_code=503)
    return JSONResponse({"ready": True})


def attach(app: FastAPI, pod: Pod) -> None:
    """Mount the pod's routes, error handlers and access control on ``app`` (vLLM's or a
    bare one): `AccessMiddleware` guards every route of the app, vLLM's included."""
    app.state.hygen_pod = pod
    if pod.settings.batch_gateway:  # one Batch API for the ServingSLO: forward to it
        from hygen_pod.server.batch_forward import forwarding_router

        gw = forwarding_router(pod.settings.batch_gateway, pod.token, _owner)
        routers: tuple[APIRouter, ...] = (gw, offline, control, probes)
    else:
        routers = (files, batches, offline, control, probes)
    for r in routers:
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
    app.add_middleware(ArrivalClock)  # inside the access check: refused requests untimed
    app.add_middleware(
        AccessMiddleware,
        operator_token=pod.token,
        keys=pod.keys,
        admin_port=pod.settings.admin_port,
    )


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
