"""The rendered chart applied to the API emulator, and the operator started from the rendered
Deployment's command, reconciles the example ServingSLO (model swapped for the fake engine's
`tiny` and profiled on the H100 simulator: there are no Llama weights or GPUs here)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import helm_python as helm
import yaml

from hygen_pod.pod_process import free_port
from tests.e2e.conftest import ROOT, Cluster, apply_crds
from tests.helpers.kube.kubelet import Kubelet
from tests.helpers.kube.operator_process import DATA, OperatorProcess
from tests.helpers.kube.server import EmulatorServer

KINDS = (
    "ServiceAccount",
    "Secret",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Deployment",
    "ConfigMap",
)
PLURALS = {k: k.lower() + "s" for k in KINDS}


def test_rendered_chart_and_its_operator_reconcile_the_example(tmp_path: Path):
    out = helm.Chart.load(ROOT / "helm" / "hygen").render(
        {"watchNamespaces": ["default"]}, name="hygen", namespace="default", is_install=True
    )
    docs = [
        d for p, t in out.items() if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d
    ]
    with EmulatorServer(tmp_path) as api:
        apply_crds(api)  # helm installs crds/ first
        for d in docs:
            api.create(d, PLURALS[d["kind"]])
        secret = next(d for d in docs if d["kind"] == "Secret")
        token = base64.b64decode(secret["data"]["token"]).decode()
        dep = next(d for d in docs if d["kind"] == "Deployment")
        cmd = dep["spec"]["template"]["spec"]["containers"][0]["command"]
        (tmp_path / "token").write_text(token)
        mapped = [a.replace("/etc/hygen/token/token", str(tmp_path / "token"))
                   .replace("--data-dir=/opt/hygen/data", f"--data-dir={DATA}")
                   .replace("0.0.0.0:8080", f"127.0.0.1:{free_port()}") for a in cmd]  # fmt: skip
        mapped += ["--kubeconfig", str(api.kubeconfig), "--status-interval", "0.5"]
        example = yaml.safe_load((ROOT / "examples" / "servingslo-llama2-7b.yaml").read_text())
        example["metadata"]["namespace"] = "default"
        example["spec"]["model"] = "tiny"
        example["spec"]["profiling"]["oracle"] = "h100"
        with Kubelet(api, tmp_path, "unused") as kubelet:
            op = OperatorProcess.from_command(mapped, tmp_path / "operator.log", token).start()
            c = Cluster(api, kubelet, op, tmp_path)
            try:
                api.create(example, "servingslos")
                name = example["metadata"]["name"]
                st = c.wait(lambda: (s := c.status("servingslos", name)).get("phase") == "Ready"
                            and s, 90, "example Ready")  # fmt: skip
            finally:
                op.stop()
    pod_secret = api.get("secrets", "default", "hygen-control-token")
    assert pod_secret["data"]["token"] == secret["data"]["token"]  # pods use the chart's token
    assert st["profile"]["budgetMs"] == st["budgetMs"] > 0
    assert json.loads(json.dumps(st["conditions"]))  # serializable status
