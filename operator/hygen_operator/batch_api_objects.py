"""An OpenAI batch is a BatchJob: building one from a create call, reading one back.

The BatchJob is the batch's only record: the id, owner, input file and metadata are its
labels and annotations, its progress is its status. Nothing about a batch lives in the
gateway's memory, so any operator replica, before or after a restart, answers for it.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from typing import Any

from hygen_operator.resources import GROUP, VERSION, BatchApi
from hygen_pod.contract.api import (
    BatchCreate,
    BatchErrorItem,
    BatchErrors,
    BatchObject,
    BatchStatus,
    RequestCounts,
    window_seconds,
)

API_LABEL = "hygen.io/batch-api"  # value: the ServingSLO
ID_LABEL = "hygen.io/batch-id"
OWNER = "hygen.io/batch-owner"
INPUT = "hygen.io/batch-input-file"
CREATED = "hygen.io/batch-created-at"
METADATA = "hygen.io/batch-metadata"


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


def job_name(batch_id: str) -> str:
    """The BatchJob of a batch id (a DNS name: no underscore)."""
    return batch_id.replace("_", "-")


def batch_job(
    batch_id: str,
    ns: str,
    slo: str,
    owner: str,
    req: BatchCreate,
    api: BatchApi,
    input_ref: dict[str, Any],
    output_ref: dict[str, Any],
) -> dict[str, Any]:
    """The BatchJob of a new batch; ``input_ref``/``output_ref`` are its input and output
    fields (``s3`` on an object store, ``operatorVolume`` on the operator's volume)."""
    store = {} if api.object_store is None else {
        "objectStore": api.object_store.model_dump(by_alias=True, exclude_none=True)
    }  # fmt: skip
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BatchJob",
        "metadata": {
            "name": job_name(batch_id),
            "namespace": ns,
            "labels": {API_LABEL: slo, ID_LABEL: batch_id},
            "annotations": {
                OWNER: owner,
                INPUT: req.input_file_id,
                CREATED: str(int(time.time())),
                METADATA: json.dumps(req.metadata or {}),
            },
        },
        "spec": {
            "servingSlo": slo,
            "endpoint": req.endpoint,
            "input": input_ref,
            "output": output_ref,
            **store,
            "completionWindow": req.completion_window,
            "parallelism": api.parallelism,
        },
    }


def owner_of(job: dict[str, Any]) -> str | None:
    return ((job.get("metadata") or {}).get("annotations") or {}).get(OWNER)


def _epoch(ts: str | None) -> int | None:
    if not ts:
        return None
    try:
        t = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return int(t.timestamp())


def batch_object(job: dict[str, Any]) -> BatchObject:
    """The OpenAI batch a BatchJob stands for, as its status says now."""
    meta, spec, st = job["metadata"], job.get("spec") or {}, job.get("status") or {}
    ann = meta.get("annotations") or {}
    bid = meta["labels"][ID_LABEL]
    phase, reason = st.get("phase", "Pending"), st.get("reason")
    created = int(ann.get(CREATED) or 0)
    done_at = _epoch(st.get("completionTime"))
    status: BatchStatus
    if phase == "Succeeded" or reason == "AllRequestsFailed":  # OpenAI: completed, all errors
        status = "completed"
    elif phase == "Cancelled":
        status = "cancelled"
    elif phase == "Failed":
        status = "expired" if reason == "Expired" else "failed"
    elif spec.get("cancel"):
        status = "cancelling"
    elif phase == "Running":
        status = "in_progress"
    else:
        status = "validating"
    total, ok, bad = st.get("total", 0), st.get("completed", 0), st.get("failed", 0)
    has_output = status in ("completed", "cancelled", "expired") and total > 0
    errors = None
    if status == "failed":
        item = BatchErrorItem(code=reason or "failed", message=st.get("message") or "")
        errors = BatchErrors(data=[item])
    window = spec.get("completionWindow") or "24h"
    return BatchObject(
        id=bid,
        endpoint=spec.get("endpoint", ""),
        errors=errors,
        input_file_id=ann.get(INPUT, ""),
        completion_window=window,
        status=status,
        output_file_id=f"{bid}-output" if has_output and ok else None,
        error_file_id=f"{bid}-errors" if has_output and bad else None,
        created_at=created,
        in_progress_at=_epoch(st.get("startTime")) if phase != "Pending" else None,
        expires_at=created + window_seconds(window),
        completed_at=done_at if status == "completed" else None,
        failed_at=done_at if status == "failed" else None,
        expired_at=done_at if status == "expired" else None,
        cancelled_at=done_at if status == "cancelled" else None,
        request_counts=RequestCounts(total=total, completed=ok, failed=bad),
        metadata=json.loads(ann.get(METADATA) or "{}") or None,
    )


def output_of(file_id: str) -> tuple[str, bool] | None:
    """(batch id, errors?) of a batch output file id, or None for an uploaded file."""
    for suffix, errors in (("-output", False), ("-errors", True)):
        if file_id.startswith("batch_") and file_id.endswith(suffix):
            return file_id[: -len(suffix)], errors
    return None
