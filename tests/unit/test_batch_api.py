"""The cluster Batch API's pieces without a cluster: a BatchJob read back as an OpenAI batch
in every phase, the gateway refusing anyone but the pods, and a pod forwarding (or saying
503 when the gateway is away) only for callers with an API key."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from hygen_operator.batch_api_objects import (
    ID_LABEL,
    batch_job,
    batch_object,
    job_name,
    new_batch_id,
    output_of,
)
from hygen_operator.batch_gateway import gateway_app
from hygen_operator.resources import BatchApi, BatchJobSpec
from hygen_pod.contract.api import BatchCreate
from tests.helpers.fake_pod import FakeEngine, FakePodServer

API = BatchApi.model_validate(
    {"storage": "s3://bkt/api", "objectStore": {"credentialsSecret": "keys"}, "parallelism": 7}
)


def job(status: dict | None = None, cancel: bool = False) -> dict:
    bid = "batch_0123456789abcdef01234567"
    req = BatchCreate(input_file_id="file-1", endpoint="/v1/completions", metadata={"a": "b"})
    j = batch_job(bid, "ns", "chat", "key_x", req, API,
                  {"s3": {"url": "s3://bkt/api/files/file-1.jsonl"}},
                  {"s3": {"url": "s3://bkt/api/outputs/x.jsonl"}})  # fmt: skip
    j["spec"]["cancel"] = cancel
    j["status"] = status or {}
    return j


def test_a_created_batch_is_a_valid_batchjob_named_after_its_id():
    bid = new_batch_id()
    assert job_name(bid) == bid.replace("_", "-") and "_" not in job_name(bid)
    j = job()
    spec = BatchJobSpec.model_validate(j["spec"])  # what the operator will accept
    assert spec.in_dispatcher_job and spec.parallelism == 7 and spec.object_store is not None
    assert j["metadata"]["labels"][ID_LABEL].startswith("batch_")


@pytest.mark.parametrize(
    ("status", "cancel", "want"),
    [
        ({}, False, "validating"),
        ({"phase": "Pending", "reason": "SecretNotFound"}, False, "validating"),
        ({"phase": "Running", "total": 4, "completed": 1}, False, "in_progress"),
        ({"phase": "Running", "total": 4, "completed": 1}, True, "cancelling"),
        ({"phase": "Succeeded", "total": 4, "completed": 3, "failed": 1}, False, "completed"),
        ({"phase": "Failed", "reason": "AllRequestsFailed", "total": 2, "failed": 2}, False,
         "completed"),
        ({"phase": "Failed", "reason": "Expired", "total": 4, "completed": 2, "failed": 2},
         False, "expired"),
        ({"phase": "Failed", "reason": "InputError", "message": "spec.input.s3.url: x"}, False,
         "failed"),
        ({"phase": "Cancelled", "total": 4, "completed": 1, "failed": 3}, True, "cancelled"),
    ],
)  # fmt: skip
def test_each_batchjob_phase_reads_as_the_openai_status(status: dict, cancel: bool, want: str):
    b = batch_object(job(status, cancel))
    assert b.status == want and b.metadata == {"a": "b"} and b.input_file_id == "file-1"
    ended = want in ("completed", "expired", "cancelled")
    assert (b.output_file_id is not None) == (ended and status.get("completed", 0) > 0)
    assert (b.error_file_id is not None) == (ended and status.get("failed", 0) > 0)
    if want == "failed":
        assert b.errors is not None and b.errors.data[0].message == "spec.input.s3.url: x"
    if b.output_file_id:
        assert output_of(b.output_file_id) == (b.id, False)
    if b.error_file_id:
        assert output_of(b.error_file_id) == (b.id, True)
    assert output_of("file-abc") is None


def test_the_gateway_answers_the_pods_only():
    app = gateway_app(kube=None, token="pod-token")  # type: ignore[arg-type]
    with TestClient(app) as h:
        path = "/ns/default/slo/chat/v1/batches/batch_x"
        for hdr in ({}, {"Authorization": "Bearer wrong", "X-Hygen-Owner": "k"},
                    {"Authorization": "Bearer pod-token"}):  # fmt: skip
            r = h.get(path, headers=hdr)
            assert r.status_code == 401 and r.json()["error"]["message"], hdr
        r = h.post("/ns/default/slo/chat/v1/batches", json={"endpoint": "/v1/nope"},
                   headers={"Authorization": "Bearer pod-token", "X-Hygen-Owner": "k"})  # fmt: skip
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_a_pod_forwards_for_key_holders_and_answers_503_while_the_gateway_is_away(tmp_path):
    from hygen_pod.dev.pod_process import free_port

    gone = f"http://127.0.0.1:{free_port()}/ns/default/slo/chat"
    with FakePodServer(tmp_path, FakeEngine(), api_keys=["key-a"], batch_gateway=gone) as srv:
        h = srv.http
        assert h.get("/v1/batches").status_code == 401  # no key: never forwarded
        r = h.get("/v1/batches", headers={"Authorization": "Bearer key-a"})
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        assert "unreachable" in json.loads(r.text)["error"]["message"]
        r = h.post("/v1/files", headers={"Authorization": "Bearer key-a"},
                   files={"file": ("a.jsonl", b"{}\n")}, data={"purpose": "batch"})  # fmt: skip
        assert r.status_code == 503
