"""Two operator replicas with kopf peering (the chart's replicaCount > 1): one handles the
objects; when it dies, the other takes over and finishes the work."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.kube.cluster import (
    NS,
    TOKEN,
    Cluster,
    batch_job,
    batch_lines,
    finished,
    ready,
    serving_slo,
)
from tests.helpers.kube.operator_process import OperatorProcess


def test_two_peered_operators_one_acts_and_the_other_takes_over(cluster: Cluster, tmp_path: Path):
    c = cluster
    c.operator.stop()
    c.api.create({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                  "metadata": {"name": "hygen", "namespace": NS}}, "kopfpeerings")  # fmt: skip
    ops = [OperatorProcess(c.api.kubeconfig, tmp_path / f"op{i}.log", TOKEN, "--peering", "hygen")
           .start() for i in range(2)]  # fmt: skip
    c.operator = ops[0]
    try:

        def peers() -> int:
            return len(
                (c.api.get("kopfpeerings", NS, "hygen", "kopf.dev") or {}).get("status") or {}
            )

        c.wait(lambda: peers() == 2, 30, "both replicas in the peering")
        c.api.create(serving_slo(), "servingslos")
        st = ready(c, "chat", 60)
        assert st["readyReplicas"] == 2
        creates = [
            e for e in c.api.emulator.log if e[0] == "POST" and e[1].endswith("/deployments")
        ]
        assert len(creates) == 1, creates  # only the active replica reconciled
        c.api.create(batch_job("j", "chat", batch_lines(40), parallelism=2), "batchjobs")
        c.wait(lambda: c.status("batchjobs", "j").get("completed", 0) >= 4, 30, "job started")
        for op in ops:  # kill the active one (the one that handled the creation)
            if "Creation is processed" in op.log.read_text():
                op.kill9()
                c.operator = next(o for o in ops if o is not op)
                break
        st = finished(c, "j", 150)  # the standby acts once the dead peer's presence expires
        assert (st["phase"], st["completed"]) == ("Succeeded", 40), st
    finally:
        for op in ops:
            op.stop()
