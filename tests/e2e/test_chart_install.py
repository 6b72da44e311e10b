"""The rendered chart applied to the API emulator, and the operator started from the rendered
Deployment's command, reconciles the example ServingSLO (model swapped for the fake engine's
`tiny` and profiled on the H100 simulator: there are no Llama weights or GPUs here) and runs
BatchJobs and an OpenAI batch on the chart's Batch API volume; every API call the operator
and its dispatcher Job made is allowed by the chart's RBAC, and every permission the chart
grants was used (or is listed with the path needing it)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import helm_python as helm
import httpx
import yaml
from openai import OpenAI

from hygen_pod.dev.pod_process import free_port
from tests.helpers.kube.cluster import (
    ROOT,
    Cluster,
    apply_crds,
    batch_job,
    batch_lines,
    claim,
    finished,
    ready,
)
from tests.helpers.kube.kubelet import Kubelet
from tests.helpers.kube.operator_process import DATA, OperatorProcess
from tests.helpers.kube.server import EmulatorServer
from tests.reliability.scenarios import endpoints

KINDS = (
    "ServiceAccount",
    "Secret",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Deployment",
    "ConfigMap",
    "NetworkPolicy",
    "Service",
)
PLURALS = {k: k.lower() + "s" for k in KINDS} | {
    "NetworkPolicy": "networkpolicies",
    "PersistentVolumeClaim": "persistentvolumeclaims",
}
API_KEY = "sk-example-key-for-the-chart-e2e"


# Granted for paths this run does not take, each with its reason.
RARE = {
    "operator": {
        ("", "secrets", "patch"),  # the token Secret in a namespace held another token
        ("", "configmaps", "patch"),  # profile ConfigMap existed before a profile was stored
        ("", "services", "get"),  # a Service that already exists (operator restart)
        ("apps", "deployments", "patch"),  # a ServingSLO spec change
        ("apps", "deployments", "get"),  # a Deployment that already exists (operator restart)
        ("batch", "jobs", "get"),  # a dispatcher Job that already exists (operator restart)
        ("hygen.io", "batchjobs", "get"),  # the cluster Batch API: retrieve a batch
        ("hygen.io", "batchjobs", "create"),  # the cluster Batch API: create a batch
        # kopf watches CRDs being added/removed when it serves all namespaces
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    },
    "dispatcher": {
        ("", "configmaps", "get"),  # ConfigMap input with volume output
        ("", "configmaps", "create"),  # volume input with ConfigMap output
        ("", "configmaps", "patch"),
        ("", "events", "create"),  # warnings: bad spec, unreadable input
    },
}


def rbac_rules(docs: list[dict]) -> dict[str, list[dict]]:
    """The rules each ServiceAccount gets in namespace default (Roles + ClusterRoles)."""
    roles = {(d["kind"], d["metadata"]["name"]): d.get("rules", []) for d in docs
             if d["kind"] in ("Role", "ClusterRole")}  # fmt: skip
    out: dict[str, list[dict]] = {"operator": [], "dispatcher": []}
    for b in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        who = "dispatcher" if b["subjects"][0]["name"].endswith("dispatcher") else "operator"
        out[who] += roles[(b["roleRef"]["kind"], b["roleRef"]["name"])]
    return out


def allows(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
               for r in rules)  # fmt: skip


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
        gw = free_port()  # the Batch API's Service, its port and its volume, mapped here
        mapped = [a.replace("/etc/hygen/token/token", str(tmp_path / "token"))
                   .replace("--data-dir=/opt/hygen/data", f"--data-dir={DATA}")
                   .replace("0.0.0.0:8080", f"127.0.0.1:{free_port()}")
                   .replace("--batch-api-port=8090", f"--batch-api-port={gw}")
                   .replace("http://hygen-batch-api.default.svc:8090", f"http://127.0.0.1:{gw}")
                   .replace("=/var/lib/hygen/batch-api", f"={tmp_path / 'batch-api'}")
                  for a in cmd]  # fmt: skip
        assert f"--batch-api-url=http://127.0.0.1:{gw}" in mapped, cmd
        mapped += ["--kubeconfig", str(api.kubeconfig), "--status-interval", "0.5"]
        example = yaml.safe_load((ROOT / "examples" / "servingslo-llama2-7b.yaml").read_text())
        example["metadata"]["namespace"] = "default"
        example["spec"]["model"] = "tiny"
        example["spec"]["profiling"]["oracle"] = "h100"
        example["spec"]["batchApi"] = {"parallelism": 4}  # files on the chart's volume
        with Kubelet(api, tmp_path, "unused") as kubelet:
            op = OperatorProcess.from_command(mapped, tmp_path / "operator.log", token).start()
            c = Cluster(api, kubelet, op, tmp_path)
            try:
                # the README's step before the example: the Secret of API keys it names
                keys = example["spec"]["apiKeys"]
                api.create({"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": keys["name"], "namespace": "default"},
                            "data": {"api-keys": base64.b64encode(API_KEY.encode()).decode()}},
                           "secrets")  # fmt: skip
                api.create(example, "servingslos")
                name = example["metadata"]["name"]
                st = ready(c, name)
                (port,) = endpoints(c, name)
                body = {"model": "tiny", "prompt": "hi", "max_tokens": 2}
                url = f"http://127.0.0.1:{port}/v1/completions"
                assert httpx.post(url, json=body).status_code == 401  # the example needs a key
                ok = httpx.post(url, json=body, headers={"Authorization": f"Bearer {API_KEY}"})
                assert ok.status_code == 200, ok.text
                # exercise every path: an inline job, a volume job (dispatcher Job), a deletion
                c.api.create(batch_job("inline", name, batch_lines(6)), "batchjobs")
                src = kubelet.pvc_root / "in" / "b.jsonl"
                src.parent.mkdir(parents=True)
                src.write_text("".join(json.dumps(x) + "\n" for x in batch_lines(6)))
                vol = batch_job("vol", name, [])
                claim(c.api, "in", "default")
                claim(c.api, "out", "default")
                vol["spec"]["input"] = {"volume": {"claimName": "in", "path": "b.jsonl"}}
                vol["spec"]["output"] = {"volume": {"claimName": "out", "path": "r.jsonl"}}
                c.api.create(vol, "batchjobs")
                # the OpenAI Batch API through a pod, on the chart's Batch API volume
                oai = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY)
                data = "".join(json.dumps(x) + "\n" for x in batch_lines(5)).encode()
                fid = oai.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id
                b = oai.batches.create(input_file_id=fid, endpoint="/v1/completions",
                                       completion_window="24h")  # fmt: skip
                for job in ("inline", "vol", b.id.replace("_", "-")):
                    assert finished(c, job, 60)["phase"] == "Succeeded"
                done = oai.batches.retrieve(b.id)
                assert done.status == "completed" and done.output_file_id, done
                assert len(oai.files.content(done.output_file_id).text.splitlines()) == 5
                assert (
                    tmp_path / "batch-api" / "default" / name / "files" / f"{fid}.jsonl"
                ).exists()
                c.api.delete("batchjobs", "default", "inline", "hygen.io")
                c.wait(lambda: not c.obj("batchjobs", "inline"), 20, "inline job deleted")
            finally:
                op.stop()
        rules = rbac_rules(docs)
        for who, prefixes in (("operator", ("kopf/", "hygen-operator/")),
                              ("dispatcher", ("hygen-dispatcher/",))):  # fmt: skip
            used = {(a.group, a.resource, a.verb) for a in api.emulator.access
                    if a.agent.startswith(prefixes)}  # fmt: skip
            assert used, who
            missing = {u for u in used if not allows(rules[who], *u)}
            assert not missing, f"{who} RBAC lacks {sorted(missing)}"
            granted = {(g, r, v) for rule in rules[who] for g in rule["apiGroups"]
                       for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip
            unused = granted - used - RARE[who]
            assert not unused, f"{who} RBAC grants unused {sorted(unused)}"
    # the token and the API key are only in Secrets: not in any other object, Event, or log
    for secret_value in (token, API_KEY):
        leaks = [
            f"{rt.plural}/{k[2]}"
            for k, obj in api.emulator.store.items()
            if (rt := api.emulator.types[k[0]]).plural != "secrets"
            and secret_value in json.dumps(obj)
        ]
        logs = [p.name for p in tmp_path.rglob("*.log")
                if secret_value in p.read_text(errors="replace")]  # fmt: skip
        assert not leaks and not logs, (leaks, logs)
    pod_secret = api.get("secrets", "default", "hygen-control-token")
    assert pod_secret["data"]["token"] == secret["data"]["token"]  # pods use the chart's token
    assert st["profile"]["budgetMs"] == st["budgetMs"] > 0
    assert json.loads(json.dumps(st["conditions"]))  # serializable status
