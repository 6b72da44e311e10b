"""One OpenAI Batch API per ServingSLO: the official `openai` client through a Service
(round robin over 2 pods) creates, retrieves, lists, cancels and downloads batches that run
as BatchJobs over both pods, with files and outputs on a real S3 API (moto) or on the
operator's own volume, through a kill -9 of a pod and of the operator."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import pytest
from openai import NotFoundError, OpenAI

from tests.helpers.kube.cluster import (
    NS,
    TOKEN,
    Cluster,
    batch_lines,
    ready,
    secret,
    serving_slo,
)
from tests.helpers.s3_server import S3Server
from tests.helpers.service_proxy import ServiceProxy

KEY, OTHER = "key-of-alice", "key-of-bob"


def with_batch_api(c: Cluster, s3: S3Server | None, volume: Path | None = None) -> str:
    """Restart the operator serving the Batch API; a ServingSLO of 2 pods using it, with
    files on ``s3`` (returns the bucket) or, without it, on the operator's ``volume``."""
    from tests.helpers.kube.kubelet import free_port

    port = free_port()
    c.operator.stop()
    c.operator.cmd += ["--batch-api-port", str(port), "--batch-api-url", f"http://127.0.0.1:{port}"]
    if volume is not None:
        c.operator.cmd += ["--batch-api-dir", str(volume)]
    c.operator.start()
    secret(c.api, "api-keys", {"api-keys": f"{KEY}\n{OTHER}\n"})
    api: dict = {"parallelism": 4}
    bucket = ""
    if s3 is not None:
        bucket = s3.bucket()
        secret(c.api, "s3-keys", {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key})
        store = {"endpoint": s3.endpoint, "credentialsSecret": "s3-keys"}
        api |= {"storage": f"s3://{bucket}/batch-api", "objectStore": store}
    c.api.create(serving_slo(batchApi=api, apiKeys={"name": "api-keys"}), "servingslos")
    ready(c)
    return bucket


def client(proxy: ServiceProxy, key: str = KEY) -> OpenAI:
    # no keep-alive: every call is a new connection, which the Service sends to the next pod
    http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=30)
    return OpenAI(base_url=f"{proxy.url}/v1", api_key=key, http_client=http, max_retries=8)


def upload(cl: OpenAI, n: int) -> str:
    data = "".join(json.dumps(x) + "\n" for x in batch_lines(n)).encode()
    return cl.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id


def wait_batch(cl: OpenAI, bid: str, statuses: tuple[str, ...], timeout_s: float = 120):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        b = cl.batches.retrieve(bid)
        if b.status in statuses:
            return b
        time.sleep(0.3)
    raise AssertionError(f"batch {bid} still {b.status}")


def pod_offline_held(c: Cluster, port: int) -> int:
    """Offline requests queued or running on a pod now."""
    hdr = {"Authorization": f"Bearer {TOKEN}"}
    m = httpx.get(f"http://127.0.0.1:{port}/control/metrics", headers=hdr, timeout=5).json()
    return m["offline_queued"] + m["offline_inflight"]


@pytest.mark.parametrize("storage", ["s3", "operator-volume"])
def test_one_batch_api_over_two_pods_survives_pod_and_operator_kill9(
    cluster: Cluster, storage: str, request: pytest.FixtureRequest, tmp_path: Path
):
    c = cluster
    # 300 lines, 8 at a time: over 11 s, so the kills land mid-batch even when a loaded
    # machine keeps one pod backed off for its first seconds
    c.kubelet.env["FAKE_ENGINE_DELAY_S"] = "0.3"
    on_s3 = storage == "s3"
    with_batch_api(c, request.getfixturevalue("s3") if on_s3 else None, tmp_path / "vol")
    proxy = ServiceProxy(lambda: [r.port for r in c.kubelet.running("chat") if r.ready])
    try:
        cl, n = client(proxy), 300
        fid = upload(cl, n)
        b = cl.batches.create(input_file_id=fid, endpoint="/v1/completions",
                              completion_window="24h", metadata={"run": "e2e"})  # fmt: skip
        assert b.status == "validating" and b.metadata == {"run": "e2e"}
        for _ in range(10):  # from any pod, through the Service: always found
            assert cl.batches.retrieve(b.id).id == b.id
        assert set(proxy.hits) == {r.port for r in c.kubelet.running("chat")}
        assert [x.id for x in cl.batches.list()] == [b.id]
        with pytest.raises(NotFoundError):  # another key sees neither the batch nor the file
            client(proxy, OTHER).batches.retrieve(b.id)
        with pytest.raises(NotFoundError):
            client(proxy, OTHER).files.retrieve(fid)
        assert c.kubectl("get", "bj", "-l", f"hygen.io/batch-id={b.id}", "-o", "name").stdout
        # both pods work on it: then kill -9 one of them and the operator mid-batch
        pods = c.kubelet.running("chat")
        c.wait(
            lambda: all(pod_offline_held(c, r.admin_port) > 0 for r in pods), 60, "both pods",
            observe=lambda: [j.get("status") for j in c.api.list("batchjobs", NS, "hygen.io")],
        )  # fmt: skip
        assert cl.batches.retrieve(b.id).status == "in_progress"
        c.kubelet.kill9(pods[0].name)
        c.operator.kill9()
        c.operator.start()  # the client retries the 503s the pods answer meanwhile
        done = wait_batch(cl, b.id, ("completed", "failed", "expired", "cancelled"))
        assert done.status == "completed", done
        assert (done.request_counts.total, done.request_counts.completed) == (n, n)
        assert done.output_file_id and done.error_file_id is None
        out = [json.loads(x) for x in cl.files.content(done.output_file_id).text.splitlines()]
        assert sorted(r["custom_id"] for r in out) == sorted(f"req-{i}" for i in range(n))
        assert all(r["response"]["status_code"] == 200 for r in out)
        assert pods[0].restarts >= 1
        if not on_s3:  # the batch's file and output are on the volume, the parts are gone
            job = c.api.list("batchjobs", NS, "hygen.io")[0]
            assert job["spec"]["input"] == {"operatorVolume": {"path": f"chat/files/{fid}.jsonl"}}

            def files() -> list[str]:
                root = tmp_path / "vol"
                return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

            want = [f"{NS}/chat/files/{fid}.json", f"{NS}/chat/files/{fid}.jsonl",
                    f"{NS}/chat/outputs/{b.id}.jsonl"]  # fmt: skip
            # the composed-output marker goes once the final status is written: soon after
            c.wait(lambda: files() == want, 20, "only the file and the output left", observe=files)
    finally:
        proxy.close()


def test_a_batch_cancelled_through_the_service_stops_on_every_pod(cluster: Cluster, s3):
    c = cluster
    c.kubelet.env["FAKE_ENGINE_DELAY_S"] = "0.5"
    bucket = with_batch_api(c, s3)
    proxy = ServiceProxy(lambda: [r.port for r in c.kubelet.running("chat") if r.ready])
    try:
        cl = client(proxy)
        b = cl.batches.create(input_file_id=upload(cl, 200), endpoint="/v1/completions",
                              completion_window="24h")  # fmt: skip
        wait_batch(cl, b.id, ("in_progress",), 60)
        assert cl.batches.cancel(b.id).status == "cancelling"
        done = wait_batch(cl, b.id, ("cancelled",), 60)
        counts = done.request_counts
        assert counts.total == 200 and counts.completed < 200
        if counts.completed:  # what finished before the cancel is in the output file
            lines = cl.files.content(done.output_file_id).text.splitlines()
            assert len(lines) == counts.completed
        keys = s3.keys(bucket)
        assert not [k for k in keys if ".hygen/" in k], "no parts left behind"
    finally:
        proxy.close()
