"""What a real API server and kubelet do that the happy path hides, each finding of the
review tried on the stricter emulator: object size limits (a 5,000-line job with ConfigMap
output), a job applied before its input, phases that mean what they say, pod trouble in the
ServingSLO's status, an idle ServingSLO, readable columns, invalid objects."""

from __future__ import annotations

import json
import math

import pytest

from hygen_operator.batch_io import PART_BYTES
from tests.helpers.kube.cluster import (
    NS,
    Cluster,
    batch_job,
    batch_lines,
    claim,
    finished,
    reach,
    ready,
    serving_slo,
)
from tests.helpers.kube.emulator import ApiError
from tests.helpers.kube.kubelet import BROKEN_MODEL


def output(c: Cluster, parts: list[str]) -> list[dict]:
    out = []
    for name in parts:
        data = (c.api.get("configmaps", NS, name) or {}).get("data") or {}
        out += [json.loads(v) for k, v in data.items() if k.startswith("line-")]
    return out


def test_a_5000_line_job_with_configmap_output_is_split_under_the_1_mib_limit(cluster: Cluster):
    """~1.5 KB results: 7.5 MB of output, which one ConfigMap (1 MiB) cannot hold."""
    c = cluster
    c.kubelet.env.update(FAKE_ENGINE_PAD_BYTES="1400", FAKE_ENGINE_DELAY_S="0.002")
    c.api.create(serving_slo(), "servingslos")
    ready(c)
    n = 5000
    c.api.create(batch_job("big", "chat", batch_lines(n), parallelism=400), "batchjobs")
    st = finished(c, "big", timeout_s=900, stall_s=120)
    assert (st["phase"], st["completed"], st["failed"]) == ("Succeeded", n, 0), st
    parts = st["outputConfigMaps"]
    assert parts[0] == "big-out" and parts[1] == "big-out-2"
    size = sum(len(json.dumps(r)) for r in output(c, parts))
    assert len(parts) >= math.ceil(size / PART_BYTES), (len(parts), size)
    got = output(c, parts)
    ids = sorted(r["custom_id"] for r in got)
    assert ids == sorted(f"req-{i}" for i in range(n)), "one result per line, none twice"
    assert all(len(r["response"]["body"]["text"]) == 1400 for r in got)
    for name in parts:
        data = c.api.get("configmaps", NS, name)["data"]
        assert sum(len(k) + len(v.encode()) for k, v in data.items()) <= 1024 * 1024


def test_a_job_applied_before_its_input_waits_then_runs(cluster: Cluster):
    """`kubectl apply -f dir/` applies batchjob.yaml before configmap.yaml."""
    c = cluster
    c.api.create(serving_slo(), "servingslos")
    ready(c)
    job = batch_job("early", "chat", [])
    job["spec"]["input"] = {"configMap": {"name": "early-in"}}
    c.api.create(job, "batchjobs")
    st = reach(c, "batchjobs", "early", ("Pending",), 30)
    c.wait(lambda: "early-in" in (c.status("batchjobs", "early").get("message") or ""), 30, "why")
    st = c.status("batchjobs", "early")
    assert st["reason"] == "InputNotFound" and "spec.input.configMap.name" in st["message"], st
    lines = "\n".join(json.dumps(x) for x in batch_lines(4))
    c.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "early-in", "namespace": NS},
                  "data": {"input.jsonl": lines}}, "configmaps")  # fmt: skip
    done = finished(c, "early", 60)
    assert (done["phase"], done["completed"]) == ("Succeeded", 4), done


def test_all_lines_failed_is_failed_and_some_failed_is_succeeded_with_a_condition(
    cluster: Cluster,
):
    c = cluster
    c.api.create(serving_slo(), "servingslos")
    ready(c)
    c.api.create(batch_job("allbad", "chat", batch_lines(3, model="nope")), "batchjobs")
    some = [*batch_lines(2), *batch_lines(1, model="nope")]
    some[2]["custom_id"] = "bad-0"
    c.api.create(batch_job("somebad", "chat", some), "batchjobs")
    allbad = finished(c, "allbad", 60)
    assert (allbad["phase"], allbad["reason"]) == ("Failed", "AllRequestsFailed"), allbad
    assert "every line failed (3 of 3)" in allbad["message"]
    somebad = finished(c, "somebad", 60)
    assert (somebad["phase"], somebad["completed"], somebad["failed"]) == ("Succeeded", 2, 1)
    cond = next(x for x in somebad["conditions"] if x["type"] == "LinesFailed")
    assert cond["status"] == "True" and cond["message"].startswith("1 of 3 lines failed")


def test_a_crash_looping_pod_is_in_the_servingslos_status_not_profiling(cluster: Cluster):
    c = cluster
    c.api.create(serving_slo("broken", model=BROKEN_MODEL, replicas=1), "servingslos")

    def crash_reported() -> dict | None:
        st = c.status("servingslos", "broken")
        return st if st.get("reason") == "CrashLoopBackOff" else None

    st = c.wait(crash_reported, 90, "CrashLoopBackOff in status",
                observe=lambda: c.status("servingslos", "broken"))  # fmt: skip
    assert st["phase"] == "Degraded", st
    assert "no such folder" in st["message"] and "container serve" in st["message"], st
    healthy = next(x for x in st["conditions"] if x["type"] == "PodsHealthy")
    assert healthy["status"] == "False" and healthy["reason"] == "CrashLoopBackOff"
    out = c.kubectl("get", "slo", "broken").stdout
    assert "CrashLoopBackOff" in out and "Degraded" in out, out


def test_idle_servingslo_rounded_columns_and_invalid_objects_in_kubectl_get(cluster: Cluster):
    c = cluster
    c.api.create(serving_slo("idle", replicas=0), "servingslos")
    c.api.create(serving_slo(), "servingslos")
    st = ready(c)
    budget = st["budgetMs"]
    assert budget == float(f"{budget:.4g}"), budget  # people read 21.96, not 21.962773513...
    idle = reach(c, "servingslos", "idle", ("Idle",), 30)
    assert idle["reason"] == "ScaledToZero" and "replicas is 0" in idle["message"]
    # The server refuses an invalid object, naming every field (what a user sees at apply)
    with pytest.raises(ApiError) as e:
        c.api.create(serving_slo("bad", offlineMode="fast", interferenceTolerance=-1),
                     "servingslos")  # fmt: skip
    assert e.value.code == 422
    assert "spec.offlineMode" in e.value.message and "spec.interferenceTolerance" in e.value.message
    # ...and one stored under an older, looser schema is reported by the operator
    c.api.create(serving_slo("old", offlineMode="fast"), "servingslos", admit=False)
    old = reach(c, "servingslos", "old", ("Failed",), 30)
    assert old["reason"] == "InvalidSpec" and "spec.offlineMode" in old["message"]
    table = c.kubectl("get", "slo").stdout
    rows = {ln.split()[0]: ln for ln in table.splitlines()[1:]}
    assert "InvalidSpec" in rows["old"] and "ScaledToZero" in rows["idle"], table
    assert f"{budget:g}" in rows["chat"] or str(budget) in rows["chat"], table
    assert len(str(budget)) <= 8, table
    wide = c.kubectl("get", "slo", "idle", "-o", "wide").stdout
    assert "replicas is 0" in wide, wide


def test_a_volume_job_waits_for_its_claim_then_runs(cluster: Cluster):
    c = cluster
    c.api.create(serving_slo(), "servingslos")
    ready(c)
    src = c.kubelet.pvc_root / "later-in" / "in.jsonl"
    src.parent.mkdir(parents=True)
    src.write_text("".join(json.dumps(x) + "\n" for x in batch_lines(3)))
    job = batch_job("vol", "chat", [])
    job["spec"]["input"] = {"volume": {"claimName": "later-in", "path": "in.jsonl"}}
    job["spec"]["output"] = {"volume": {"claimName": "later-out", "path": "out.jsonl"}}
    c.api.create(job, "batchjobs")
    c.wait(lambda: "later-in" in (c.status("batchjobs", "vol").get("message") or ""), 30,
           "claim named", observe=lambda: c.status("batchjobs", "vol"))  # fmt: skip
    st = c.status("batchjobs", "vol")
    assert (st["phase"], st["reason"]) == ("Pending", "ClaimNotFound"), st
    assert "spec.input.volume.claimName" in st["message"]
    assert c.api.get("jobs", NS, "vol-dispatch", "batch") is None  # nothing that would hang
    claim(c.api, "later-in")
    c.wait(lambda: "later-out" in (c.status("batchjobs", "vol").get("message") or ""), 60,
           "the output claim named next", observe=lambda: c.status("batchjobs", "vol"))  # fmt: skip
    claim(c.api, "later-out")
    done = finished(c, "vol", 90)
    assert (done["phase"], done["completed"]) == ("Succeeded", 3), done
