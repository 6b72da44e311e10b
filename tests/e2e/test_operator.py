"""The real operator process against the API emulator, with real pod processes (fake engine)."""

from __future__ import annotations

import json

import httpx
import pytest

from hygen_operator import manifests
from hygen_operator.resources import ServingSLOSpec
from tests.helpers.kube.cluster import (
    NS,
    TOKEN,
    Cluster,
    batch_job,
    batch_lines,
    claim,
    ends_through_dispatcher_kill9,
    finished,
    reach,
    ready,
    serving_slo,
)
from tests.helpers.kube.operator_process import OperatorProcess


def pod_control(port: int) -> dict:
    r = httpx.get(f"http://127.0.0.1:{port}/control", headers={"Authorization": f"Bearer {TOKEN}"})
    r.raise_for_status()
    return r.json()


def results(c: Cluster, cm: str) -> list[dict]:
    data = (c.api.get("configmaps", NS, cm) or {}).get("data") or {}
    return [json.loads(v) for k, v in sorted(data.items()) if k.startswith("line-")]


def test_servingslo_owns_deployment_service_profile_and_kubectl_shows_columns(cluster: Cluster):
    c = cluster
    slo = serving_slo(
        resources={"gpus": 1, "memory": "32Gi"},
        nodeSelector={"gpu": "h100"},
        engineArgs=["--max-model-len=2048"],
    )
    c.api.create(slo, "servingslos")
    st = ready(c)
    h = manifests.spec_hash(ServingSLOSpec.model_validate(slo["spec"]))
    uid = c.obj("servingslos", "chat")["metadata"]["uid"]

    dep = c.api.get("deployments", NS, "chat", "apps")
    assert dep["metadata"]["ownerReferences"][0]["uid"] == uid
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    serve, init = pod["containers"][0], pod["initContainers"][0]
    assert serve["resources"]["limits"] == {"nvidia.com/gpu": "1", "memory": "32Gi"}
    assert serve["command"][:4] == ["hygen-pod", "serve", "--model", "tiny"]
    assert serve["command"][-1] == "--max-model-len=2048"
    assert "p99_tbt=50" in serve["command"]
    assert serve["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert init["command"][:2] == ["hygen-pod", "profile"] and h in init["command"]
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert {v["name"] for v in pod["volumes"]} == {"state", "profile", "token", "scratch", "shm"}
    svc = c.api.get("services", NS, "chat")
    assert svc["spec"]["selector"] == {manifests.SLO_LABEL: "chat"}
    cm = c.api.get("configmaps", NS, "chat-profile")
    assert json.loads(cm["data"]["profile.json"])["spec_hash"] == h

    assert st["profile"]["specHash"] == h and st["readyReplicas"] == 2
    assert st["profile"]["onlineBehindSlices"] == 0  # 3 req/s: the engine keeps up
    types = {x["type"]: x["status"] for x in st["conditions"]}
    assert types["Ready"] == types["Profiled"] == types["BudgetApplied"] == "True"
    for run in c.kubelet.running("chat"):
        assert pod_control(run.admin_port)["control"]["budget_ms"] == st["budgetMs"]

    out = c.kubectl("get", "slo")
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()[:2]
    for col in ("PHASE", "TARGETS", "BUDGET-MS", "OBSERVED", "OFFLINE-TOK/S"):
        assert col in header
    assert "Ready" in row and "p99_tbt<50ms" in row and f"{st['budgetMs']:g}" in row

    c.api.delete("servingslos", NS, "chat", "hygen.io")  # owner gone: children collected
    c.wait(lambda: c.api.get("deployments", NS, "chat", "apps") is None, 30, "Deployment collected")
    assert c.api.get("services", NS, "chat") is None


def test_batchjob_exactly_n_results_through_operator_restart_and_pod_kill(cluster: Cluster):
    c = cluster
    c.kubelet.env["FAKE_ENGINE_DELAY_S"] = "0.3"  # 120 lines at 16 a time: several seconds
    c.api.create(serving_slo(), "servingslos")
    ready(c)
    n = 120
    c.api.create(batch_job("big", "chat", batch_lines(n), parallelism=8), "batchjobs")
    c.wait(lambda: c.status("batchjobs", "big").get("completed", 0) >= 10, 60, "10 results")
    c.operator.kill9()
    c.operator.start()
    victim = c.kubelet.running("chat")[0]
    c.kubelet.kill9(victim.name)
    assert c.status("batchjobs", "big")["phase"] == "Running", "both kills land mid-job"
    c.wait(lambda: victim.restarts >= 1, 30, "the killed pod restarted")
    st = finished(c, "big", 120)
    assert st["phase"] == "Succeeded", st
    assert (st["total"], st["completed"], st["failed"]) == (n, n, 0)
    out = results(c, "big-out")
    assert len(out) == n
    assert sorted(r["custom_id"] for r in out) == sorted(f"req-{i}" for i in range(n))
    assert all(r["response"]["status_code"] == 200 for r in out)
    head, row = c.kubectl("get", "bj", "big").stdout.splitlines()
    cols = dict(zip(head.split(), row.split(), strict=True))
    assert (cols["PHASE"], cols["PROGRESS"], cols["REASON"]) == (
        "Succeeded",
        f"{n}/{n}",
        "Succeeded",
    )


def test_slo_change_reprofiles_and_pushes_new_budget_to_every_pod(cluster: Cluster):
    c = cluster
    c.api.create(serving_slo(), "servingslos")
    first = ready(c)
    old_pods = {r.name for r in c.kubelet.running("chat")}
    c.api.patch(
        "servingslos",
        NS,
        "chat",
        {"spec": {"slo": {"p99TbtMs": 40}, "interferenceTolerance": 0.5}},
        group="hygen.io",
    )
    new_hash = manifests.spec_hash(
        ServingSLOSpec.model_validate(c.obj("servingslos", "chat")["spec"])
    )
    assert new_hash != first["profile"]["specHash"]
    st = c.wait(
        lambda: (
            (s := c.status("servingslos", "chat")).get("phase") == "Ready"
            and s["profile"]["specHash"] == new_hash
            and s
        ),
        90,
        "re-profiled",
    )
    runs = c.wait(
        lambda: (
            (r := c.kubelet.running("chat"))
            and len(r) == 2
            and not {x.name for x in r} & old_pods
            and r
        ),
        60,
        "pods rolled",
    )
    c.wait(
        lambda: all(
            pod_control(r.admin_port)["control"]["budget_ms"] == st["budgetMs"] for r in runs
        ),
        30,
        "new budget on every pod",
    )
    for r in runs:
        assert pod_control(r.admin_port)["slo_targets_ms"] == {"p99_tbt": 40.0}
    profile = json.loads(c.api.get("configmaps", NS, "chat-profile")["data"]["profile.json"])
    assert profile["tolerance"] == 0.5 and profile["budget_ms"] == st["budgetMs"]
    events = [e for e in c.api.list("events", NS) if e.get("reason") == "Profiled"]
    assert any(new_hash in e["message"] for e in events)


def test_invalid_resources_get_conditions_naming_the_field(cluster: Cluster):
    c = cluster
    # The API server refuses these now (tests/e2e/test_cluster_semantics.py); stored under
    # an older, looser CRD schema they stay, and the operator must say what is wrong.
    c.api.create(serving_slo("bad", offlineMode="fast", interferenceTolerance=-1), "servingslos",
                 admit=False)  # fmt: skip
    c.api.create(batch_job("orphan", "nope", batch_lines(2)), "batchjobs")
    c.api.create(
        batch_job("badenum", "chat", batch_lines(1), endpoint="/v1/embeddings"), "batchjobs",
        admit=False,
    )  # fmt: skip
    c.api.create(batch_job("badline", "chat", [*batch_lines(3), {"method": "POST"}]), "batchjobs")
    c.api.create(serving_slo(), "servingslos")  # a good one beside them still works
    ready(c)
    bad = reach(c, "servingslos", "bad", ("Failed",), 30)
    msg = next(x["message"] for x in bad["conditions"] if x["type"] == "Ready")
    assert "spec.offlineMode" in msg and "spec.interferenceTolerance" in msg
    assert c.api.get("deployments", NS, "bad", "apps") is None
    orphan = c.wait(lambda: c.status("batchjobs", "orphan").get("message"), 30, "orphan reported")
    assert "spec.servingSlo" in orphan and "nope" in orphan
    assert c.status("batchjobs", "orphan")["phase"] == "Pending"
    badenum = finished(c, "badenum", 30)
    assert badenum["phase"] == "Failed" and "spec.endpoint" in badenum["message"]
    st = finished(c, "badline", 60)
    assert st["phase"] == "Succeeded", st
    assert (st["completed"], st["failed"]) == (3, 1)  # the bad line fails alone
    errs = [r for r in results(c, "badline-out") if r["error"]]
    assert len(errs) == 1 and errs[0]["error"]["code"] == "missing_custom_id"


def test_injected_api_errors_are_retried_without_duplicates(cluster: Cluster):
    c = cluster
    c.api.inject("POST", "deployments", 500, after_apply=True)  # created, but the reply is lost
    c.api.inject("POST", "services", 409)
    c.api.inject("PATCH", "configmaps", 500, times=2)
    c.api.inject("PATCH", "servingslos", 500, subresource="status", times=2)
    c.api.create(serving_slo(), "servingslos")
    ready(c)
    assert [d["metadata"]["name"] for d in c.api.list("deployments", NS, "apps")] == ["chat"]
    assert c.api.get("services", NS, "chat") is not None
    c.api.inject("PATCH", "configmaps", 500, times=3, after_apply=True)
    c.api.inject("PATCH", "batchjobs", 409, subresource="status", times=2)
    c.api.drop_watches()
    c.api.create(batch_job("j", "chat", batch_lines(30)), "batchjobs")
    st = finished(c, "j", 60)
    assert st["phase"] == "Succeeded", st
    assert (st["completed"], st["failed"]) == (30, 0)
    assert sorted(r["custom_id"] for r in results(c, "j-out")) == sorted(
        f"req-{i}" for i in range(30)
    )
    assert all(f.times == 0 for f in c.api.emulator.faults), "every injected fault was hit"


def test_volume_batchjob_runs_in_a_dispatcher_job_that_survives_kill9(cluster: Cluster):
    c = cluster
    c.kubelet.env["FAKE_ENGINE_DELAY_S"] = "0.3"  # the batch outlasts the kill's wait
    c.api.create(serving_slo(), "servingslos")
    ready(c)
    n = 100
    src = c.kubelet.pvc_root / "inputs" / "batches" / "in.jsonl"
    src.parent.mkdir(parents=True)
    src.write_text("".join(json.dumps(x) + "\n" for x in batch_lines(n)))
    job = batch_job("vol", "chat", [], parallelism=4)
    claim(c.api, "inputs")
    claim(c.api, "results")
    job["spec"]["input"] = {"volume": {"claimName": "inputs", "path": "batches/in.jsonl"}}
    job["spec"]["output"] = {"volume": {"claimName": "results", "path": "out/vol.jsonl"}}
    c.api.create(job, "batchjobs")
    k8s_job = c.wait(lambda: c.api.get("jobs", NS, "vol-dispatch", "batch"), 30, "dispatcher Job")
    vols = {v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"]["readOnly"]
            for v in k8s_job["spec"]["template"]["spec"]["volumes"]}  # fmt: skip
    assert vols == {"inputs": True, "results": False}
    assert k8s_job["metadata"]["ownerReferences"][0]["name"] == "vol"
    ends_through_dispatcher_kill9(c, "vol", n, 120)
    out = [
        json.loads(x)
        for x in (c.kubelet.pvc_root / "results" / "out" / "vol.jsonl").read_text().splitlines()
    ]
    assert sorted(r["custom_id"] for r in out) == sorted(f"req-{i}" for i in range(n))


def pod_metrics(port: int) -> dict:
    hdr = {"Authorization": f"Bearer {TOKEN}"}
    return httpx.get(f"http://127.0.0.1:{port}/control/metrics", headers=hdr).json()


def pod_idle(port: int) -> dict | None:
    m = pod_metrics(port)
    return m if m["offline_queued"] == m["offline_inflight"] == 0 else None


def busy_job(c: Cluster, name: str, engine_s: float) -> int:
    """A one-pod ServingSLO whose engine takes ``engine_s`` a request, and a job with 50 of
    its 400 lines running there; the pod's admin port (where the operator's routes are)."""
    c.kubelet.env["FAKE_ENGINE_DELAY_S"] = str(engine_s)  # nothing finishes before we act
    c.api.create(serving_slo(replicas=1), "servingslos")
    ready(c)
    (run,) = c.kubelet.running("chat")
    c.api.create(batch_job(name, "chat", batch_lines(400), parallelism=50), "batchjobs")
    c.wait(
        lambda: pod_metrics(run.admin_port)["offline_inflight"] >= 50, 30, "50 running on the pod"
    )
    return run.admin_port


def test_deleting_a_batchjob_cancels_its_queued_work(cluster: Cluster):
    c = cluster
    port = busy_job(c, "gone", 5.0)
    c.api.delete("batchjobs", NS, "gone", "hygen.io")
    c.wait(lambda: not c.obj("batchjobs", "gone"), 10, "BatchJob deleted (finalizer released)")
    after = c.wait(lambda: pod_idle(port), 4, "queued work cancelled (the engine takes 5 s)")
    assert after["offline"]["requests"] == 0


@pytest.mark.parametrize("how", ["cancel", "delete"])
def test_stopping_a_job_while_the_operator_is_down_still_stops_the_pods_work(
    cluster: Cluster, how: str
):
    c = cluster
    port = busy_job(c, "halt", 60.0)
    uid = c.obj("batchjobs", "halt")["metadata"]["uid"]
    c.operator.kill9()  # the restarted operator never saw what was sent to the pod
    if how == "cancel":
        c.api.patch("batchjobs", NS, "halt", {"spec": {"cancel": True}}, group="hygen.io")
    else:
        c.api.delete("batchjobs", NS, "halt", "hygen.io")
    c.operator.start()
    if how == "cancel":
        st = reach(c, "batchjobs", "halt", ("Cancelled",), 30)
        assert (st["completed"], st["failed"]) == (0, 0) and st["total"] == 400
    else:
        c.wait(lambda: not c.obj("batchjobs", "halt"), 30, "BatchJob deleted after restart")
    c.wait(lambda: pod_idle(port), 15, "the pod's share of the job cancelled (engine: 60 s)")
    held = httpx.get(f"http://127.0.0.1:{port}/v1/offline/requests", params={"prefix": uid},
                     headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    assert held.status_code == 200 and held.json()["data"] == []


def test_retuning_tightens_the_budget_when_online_latency_nears_the_target(cluster: Cluster):
    c = cluster
    c.operator.stop()  # this test wants retuning every second
    c.operator = OperatorProcess(c.api.kubeconfig, c.workdir / "operator2.log", TOKEN,
                                 "--retune-interval", "1").start()  # fmt: skip
    c.kubelet.env["FAKE_ONLINE_TBT_MS"] = "48"  # 96% of the 50 ms target
    c.api.create(serving_slo(), "servingslos")
    profiled = ready(c)["profile"]["budgetMs"]

    def tightened() -> list[dict]:
        return [e for e in c.api.list("events", NS) if e.get("reason") == "Tightened"]

    ev = c.wait(lambda: len(tightened()) >= 2 and tightened(), 30, "two Tightened events")
    assert "p99_tbt 48.0 ms = 96% of target 50 ms" in ev[0]["message"]
    st = c.status("servingslos", "chat")
    assert st["budgetMs"] < profiled * 0.7 + 1e-9
    assert st["observed"]["p99TbtMs"] == 48.0 and st["observedSummary"] == "p99_tbt 48.0ms"
    runs = c.kubelet.running("chat")
    c.wait(lambda: all(pod_control(r.admin_port)["control"]["budget_ms"] < profiled for r in runs),
           10, "tightened budget on every pod")  # fmt: skip


def test_the_profiled_online_prefill_cap_reaches_every_pod_with_the_budget(cluster: Cluster):
    """The profile's joint search over onlinePrefillCaps picks a cap (or vLLM's chunking);
    the operator reports it and pushes it to every pod with the budget."""
    c = cluster
    prof = {"oracle": "h100", "iterations": 3, "onlinePrefillCaps": [512, 256]}
    c.api.create(serving_slo(profiling=prof), "servingslos")
    st = ready(c, timeout_s=150)
    profile = json.loads(c.api.get("configmaps", NS, "chat-profile")["data"]["profile.json"])
    assert (
        st["profile"].get("onlinePrefillCap") == profile["online_prefill_cap"] in (None, 512, 256)
    )
    runs = c.kubelet.running("chat")

    def on_pods(cap: int | None) -> bool:
        return all(
            (ctl := pod_control(r.admin_port)["control"])["budget_ms"] == st["budgetMs"]
            and ctl.get("online_prefill_cap") == cap
            for r in runs
        )

    observe = lambda: [pod_control(r.admin_port)["control"] for r in runs]  # noqa: E731
    c.wait(lambda: on_pods(profile["online_prefill_cap"]), 30, "profiled", observe=observe)
    # Whatever this small profile chose, a profile that chose 256 (as the status records
    # it) reaches every pod at the next sync, with the budget unchanged.
    summary = {**st["profile"], "onlinePrefillCap": 256}
    c.api.patch("servingslos", NS, "chat", {"status": {"profile": summary}}, status=True,
                group="hygen.io")  # fmt: skip
    c.wait(lambda: on_pods(256), 30, "cap 256 on every pod", observe=observe)
    assert c.status("servingslos", "chat")["onlinePrefillCap"] == 256
    head, row = c.kubectl("get", "slo", "chat").stdout.splitlines()
    at = head.index("CHUNK")  # kubectl aligns each column under its header
    assert row[at:].split()[0] == "256"


def test_auto_mode_runs_the_profiles_better_mode_and_a_pinned_mode_needs_no_new_profile(
    cluster: Cluster,
):
    """offlineMode auto (the default) pushes the mode whose setting did more offline work
    while profiling; pinning a mode in the spec switches every pod without re-profiling."""
    c = cluster
    c.api.create(serving_slo(), "servingslos")
    st = ready(c)
    profile = json.loads(c.api.get("configmaps", NS, "chat-profile")["data"]["profile.json"])
    best = "qps" if profile["offline_tps_qps"] > profile["offline_tps_budget"] else "budget"
    assert st["profile"]["bestMode"] == best and st["offlineMode"] == best
    assert st["profile"]["budgetOfflineTps"] == round(profile["offline_tps_budget"], 1)
    runs = c.kubelet.running("chat")

    def on_pods(mode: str) -> bool:
        s = c.status("servingslos", "chat")
        value = {"budget": ("budget_ms", s.get("budgetMs")), "qps": ("qps", s.get("qps"))}[mode]
        return s.get("offlineMode") == mode and all(
            (ctl := pod_control(r.admin_port)["control"])["mode"] == mode
            and ctl[value[0]] == value[1]
            for r in runs
        )

    observe = lambda: [pod_control(r.admin_port)["control"] for r in runs]  # noqa: E731
    c.wait(lambda: on_pods(best), 30, f"{best} on every pod", observe=observe)
    # a profile that found the other mode better (as the status records it) moves every pod
    other = "budget" if best == "qps" else "qps"
    c.api.patch("servingslos", NS, "chat", {"status": {"profile": {**st["profile"],
                "bestMode": other}}}, status=True, group="hygen.io")  # fmt: skip
    c.wait(lambda: on_pods(other), 30, f"auto's {other} on every pod", observe=observe)
    head, row = c.kubectl("get", "slo", "chat").stdout.splitlines()
    assert row[head.index("MODE") :].split()[0] == other
    # pinning the first mode in the spec: no new spec hash, so no new profile
    c.api.patch("servingslos", NS, "chat", {"spec": {"offlineMode": best}}, group="hygen.io")
    c.wait(lambda: on_pods(best), 30, f"pinned {best} on every pod", observe=observe)
    assert c.status("servingslos", "chat")["profile"]["specHash"] == st["profile"]["specHash"]


def test_a_profile_where_online_work_alone_falls_behind_warns_and_says_so(cluster: Cluster):
    """Online load beyond the engine (30 req/s on the H100 oracle): the profile names the
    slice, the operator posts an OnlineOverload Warning, and the Profiled condition and
    the status summary say it; at 3 req/s (the other tests) none of it appears."""
    c = cluster
    c.api.create(serving_slo(profiling={"oracle": "h100", "iterations": 1, "onlineQps": 30}),
                 "servingslos")  # fmt: skip
    st = ready(c, timeout_s=150)
    profile = json.loads(c.api.get("configmaps", NS, "chat-profile")["data"]["profile.json"])
    assert [b["slice"] for b in profile["online_behind"]] == [0]
    assert st["profile"]["onlineBehindSlices"] == 1
    cond = next(x for x in st["conditions"] if x["type"] == "Profiled")
    assert cond["reason"] == "OnlineOverload" and "fell behind" in cond["message"]
    warned = c.wait(
        lambda: [e for e in c.api.list("events", NS) if e.get("reason") == "OnlineOverload"],
        30, "an OnlineOverload event",
    )  # fmt: skip
    assert warned[0]["type"] == "Warning" and "1 of 1 profiling slice" in warned[0]["message"]
