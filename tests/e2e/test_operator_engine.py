"""The operator end to end with the real CPU engine: profiling by the init container on the
tiny model, `hygen-pod serve` pods, and a BatchJob through vLLM."""

from __future__ import annotations

import json

import pytest

from tests.helpers.engine import BYTES_PER_TOKEN
from tests.helpers.kube.cluster import (
    NS,
    Cluster,
    batch_job,
    batch_lines,
    finished,
    reach,
    serving_slo,
)

pytestmark = pytest.mark.engine


def test_real_engine_servingslo_profiles_serves_and_runs_a_batchjob(cluster: Cluster, tmp_path):
    from hygen_pod.dev.tiny_model import build_tiny_llama

    model = build_tiny_llama(tmp_path / "tiny-llama")
    c = cluster
    engine_args = [
        "--dtype", "float32", "--enforce-eager", "--block-size", "32", "--max-model-len", "1024",
        "--max-num-seqs", "16", "--kv-cache-memory-bytes", str(4096 * BYTES_PER_TOKEN),
        "--uvicorn-log-level", "warning",
    ]  # fmt: skip
    slo = serving_slo(
        model=str(model), servedModelName="tiny", replicas=1, engineArgs=engine_args,
        slo={"p99TbtMs": 200}, interferenceTolerance=3.0,  # a noisy shared CPU: keep budget > 0
        profiling={"onlineRequests": 8, "offlineRequests": 8, "iterations": 2},
    )  # fmt: skip
    c.api.create(slo, "servingslos")
    # Profiling on a shared 2-core CPU: status moves (Pending, Profiling, pods) as it goes.
    st = reach(c, "servingslos", "chat", ("Ready",), timeout_s=1200, stall_s=420)
    profile = json.loads(c.api.get("configmaps", NS, "chat-profile")["data"]["profile.json"])
    # offlineMode auto runs the mode that did more offline work in profiling, and the status
    # shows its profiled value as people read it: 4 significant digits
    qps = profile["offline_tps_qps"] > profile["offline_tps_budget"]
    assert st["offlineMode"] == ("qps" if qps else "budget")
    value, key = (profile["qps"], "qps") if qps else (profile["budget_ms"], "budgetMs")
    assert profile["hardware"] == "cpu" and float(f"{value:.4g}") == st[key]
    assert st["profile"]["predictorMape"] is not None

    n = 12
    lines = batch_lines(n)
    for line in lines:  # sampling on random weights may pick EOS early: 8 tokens for sure
        line["body"] |= {"ignore_eos": True}
    c.api.create(batch_job("real", "chat", lines), "batchjobs")
    try:
        done = finished(c, "real", timeout_s=1200, stall_s=180)  # progress, not wall time
    except AssertionError as e:  # why no progress: the setting the operator pushed, retuned
        raise AssertionError(f"{e}\nservingslo status: {c.status('servingslos', 'chat')}") from None
    assert (done["phase"], done["completed"], done["failed"]) == ("Succeeded", n, 0), done
    data = c.api.get("configmaps", NS, "real-out")["data"]
    out = [json.loads(v) for v in data.values()]
    assert sorted(r["custom_id"] for r in out) == sorted(f"req-{i}" for i in range(n))
    for r in out:
        body = r["response"]["body"]
        assert r["response"]["status_code"] == 200 and body["usage"]["completion_tokens"] == 8
