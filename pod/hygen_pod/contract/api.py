"""The pod's HTTP documents (pydantic): control, live SLO metrics, offline requests, batches.

The operator imports these models to talk to pods; they import nothing from the engine.
OpenAI-shaped objects (files, batches) follow the OpenAI Batch API field names.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hygen_pod.contract.control import OfflineControl
from hygen_pod.contract.metrics import Metric

OFFLINE_ENDPOINTS = ("/v1/completions", "/v1/chat/completions")
Endpoint = Literal["/v1/completions", "/v1/chat/completions"]
_ID_CHARS = r"[A-Za-z0-9_.:\-/]"
REQUEST_ID_PATTERN = rf"^{_ID_CHARS}+$"  # the operator's ids are <job uid>-<line>
REQUEST_ID_PREFIX_PATTERN = rf"^{_ID_CHARS}*$"  # a job's ids: <job uid>-
WINDOW_PATTERN = r"^([1-9][0-9]*)([hm])$"
_WINDOW = re.compile(WINDOW_PATTERN)


def window_seconds(window: str) -> int:
    """Seconds in a completion window such as "24h" or "90m"."""
    m = _WINDOW.match(window)
    if not m:
        raise ValueError(f"completion_window {window!r} must look like '24h' or '90m'")
    return int(m.group(1)) * (3600 if m.group(2) == "h" else 60)


# ------------------------------------------------------------------- errors
class ErrorDetail(BaseModel):
    message: str = Field(description="what is wrong, naming the field where there is one")
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    """OpenAI's error shape: the body of every 4xx/5xx of the pod's own routes."""

    error: ErrorDetail


class Readiness(BaseModel):
    """GET /ready: 200 when serving, 503 with the reason while starting or draining."""

    ready: bool
    reason: str | None = None


# ------------------------------------------------------------------ control
class ControlView(BaseModel):
    """What GET /control returns: the offline setting in force and the SLO targets."""

    control: OfflineControl
    slo_targets_ms: dict[Metric, float]
    profile_loaded: bool
    scheduler_error: str | None = None


class SLOTargets(BaseModel):
    """PUT /control/slo: the targets (milliseconds) the pod reports attainment against."""

    model_config = ConfigDict(extra="forbid")

    targets_ms: dict[Metric, Annotated[float, Field(gt=0)]] = Field(
        description="metric -> target in ms (> 0)"
    )


class ClassWindow(BaseModel):
    """One request class over the sliding window (milliseconds; None when no samples)."""

    requests: int
    tokens: int
    tokens_per_s: float
    mean_ttft_ms: float | None
    p99_ttft_ms: float | None
    mean_tbt_ms: float | None
    p99_tbt_ms: float | None


class SLOStatus(BaseModel):
    metric: Metric
    target_ms: float
    observed_ms: float | None
    met: bool | None = Field(description="None when the window holds no samples")


class LiveMetrics(BaseModel):
    """GET /control/metrics: per-class latency over the last `window_s` seconds."""

    window_s: float
    online: ClassWindow
    offline: ClassWindow
    slo: list[SLOStatus]
    offline_queued: int
    offline_inflight: int
    control: OfflineControl
    scheduler: dict[str, Any] = Field(default_factory=dict, description="engine-side status")


# ------------------------------------------------------------ offline requests
DIGEST_PATTERN = r"^[0-9a-f]{64}$"


def request_digest(url: str, body: dict[str, Any]) -> str:
    """SHA-256 of a request's url and body in canonical JSON: what a dispatcher checks a
    stored request against before it takes that request's result as its line's."""
    canon = json.dumps([url, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()


class OfflineSubmit(BaseModel):
    """POST /v1/offline/requests: one offline request, idempotent on `id`."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200, pattern=REQUEST_ID_PATTERN)
    url: Endpoint
    body: dict[str, Any]
    digest: str | None = Field(
        None,
        pattern=DIGEST_PATTERN,
        description="request_digest(url, body); when given, the pod refuses a body that "
        "does not match it (400)",
    )


RequestState = Literal["queued", "done", "failed", "cancelled"]


class OfflineResult(BaseModel):
    """A stored offline request and, once finished, its response or error."""

    id: str
    state: RequestState
    url: str
    custom_id: str | None = None
    batch_id: str | None = None
    status_code: int | None = None
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created_at: float
    finished_at: float | None = None
    digest: str | None = Field(
        None, description="request_digest of the stored url and body (single requests)"
    )


class OfflineList(BaseModel):
    """GET /v1/offline/requests?prefix=: a page of single requests in id order."""

    object: Literal["list"] = "list"
    data: list[OfflineResult]
    last_id: str | None = None
    has_more: bool = False


class OfflineDeleted(BaseModel):
    """DELETE /v1/offline/requests?prefix=: how many requests were forgotten or cancelled."""

    object: Literal["offline.requests.deleted"] = "offline.requests.deleted"
    prefix: str
    deleted: int


BULK_MAX = 1000  # requests or ids in one bulk call


class OfflineSubmitMany(BaseModel):
    """POST /v1/offline/requests/bulk-submit: many offline requests in one call and one
    transaction (a dispatcher's poll sends one per pod instead of one per line)."""

    model_config = ConfigDict(extra="forbid")

    requests: list[OfflineSubmit] = Field(min_length=1, max_length=BULK_MAX)


class OfflineOutcome(BaseModel):
    """What became of one request of a bulk submit: the status its own POST would have
    had (202 queued, 200 already stored, 400 bad digest, 409 another body, 429 full)."""

    id: str
    status: int
    result: OfflineResult | None = None
    error: str | None = None


class OfflineSubmitted(BaseModel):
    object: Literal["offline.requests.submitted"] = "offline.requests.submitted"
    outcomes: list[OfflineOutcome]
    retry_after_s: int | None = Field(None, description="set when some were refused (429)")


class OfflineIds(BaseModel):
    """POST /v1/offline/requests/bulk-delete: forget these requests (acknowledge results,
    cancel queued or running ones), in one call."""

    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[str, Field(min_length=1, max_length=200, pattern=REQUEST_ID_PATTERN)]] = (
        Field(min_length=1, max_length=BULK_MAX)
    )


class OfflineForgotten(BaseModel):
    object: Literal["offline.requests.forgotten"] = "offline.requests.forgotten"
    deleted: list[str] = Field(description="ids forgotten now")
    missing: list[str] = Field(description="ids the pod does not hold (already forgotten)")
    refused: list[str] = Field(description="ids of OpenAI batch requests (cancel the batch)")


def batch_output_line(
    line_id: str,
    custom_id: str | None,
    request_id: str,
    status_code: int | None,
    body: dict[str, Any] | None,
    error: dict[str, Any] | None,
) -> dict[str, Any]:
    """One line of an OpenAI batch output or error file."""
    return {
        "id": line_id,
        "custom_id": custom_id,
        "response": None
        if body is None and status_code is None
        else {"status_code": status_code, "request_id": request_id, "body": body},
        "error": error,
    }


# ----------------------------------------------------------- OpenAI batch API
class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool = False


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str
    endpoint: Endpoint
    completion_window: str = Field("24h", pattern=WINDOW_PATTERN, description="e.g. 24h, 90m")
    metadata: dict[str, str] | None = None


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]


class BatchErrorItem(BaseModel):
    code: str
    message: str
    line: int | None = None
    param: str | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchErrorItem]


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    @classmethod
    def page(cls, batches: list[BatchObject], limit: int) -> BatchList:
        """The first ``limit`` of ``batches`` (fetch one more to learn ``has_more``)."""
        page = batches[:limit]
        return cls(
            data=page,
            first_id=page[0].id if page else None,
            last_id=page[-1].id if page else None,
            has_more=len(batches) > limit,
        )
