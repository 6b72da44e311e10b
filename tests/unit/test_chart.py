"""The Helm chart: lints strict, renders valid Kubernetes objects for a matrix of values,
rejects bad values by name, ships the same CRDs as crds/, and the examples match the CRDs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft4Validator

from hygen_operator.resources import BatchJobSpec, ServingSLOSpec

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "hygen"
KUBE = "1.30.0"
MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "rbac-off": {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "mine"}},
    "monitoring-on": {"monitoring": {"serviceMonitor": {"enabled": True},
                                     "podMonitor": {"enabled": True},
                                     "grafanaDashboard": {"enabled": True}}},
    "two-replicas": {"replicaCount": 2},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"], "replicaCount": 2,
                   "controlToken": {"existingSecret": "my-token"}},
}  # fmt: skip


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    out = helm.Chart.load(CHART).render(
        values, name="hygen", namespace="hygen-system", is_install=True
    )
    return [d for path, text in sorted(out.items()) if not path.endswith("NOTES.txt")
            for d in yaml.safe_load_all(text) if d]  # fmt: skip


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for f in sorted((ROOT / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(f.read_text()):
            spec = crd["spec"]
            for v in spec["versions"]:
                out[(f"{spec['group']}/{v['name']}", spec["names"]["kind"])] = v["schema"][
                    "openAPIV3Schema"
                ]
    return out


def test_chart_crds_are_the_repository_crds():
    mine = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    theirs = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    assert mine == theirs


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_lints_clean_in_strict_mode(case: str):
    report = helm.lint(CHART, MATRIX[case], strict=True, kube_version=f"v{KUBE}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_renders_objects_that_validate_against_kubernetes_schemas(case: str):
    docs = render(MATRIX[case])
    kinds = [d["kind"] for d in docs]
    assert "Deployment" in kinds
    schemas = crd_schemas()
    for d in docs:
        if (d["apiVersion"], d["kind"]) in schemas:  # kopf peering objects: our CRD files
            Draft4Validator(schemas[(d["apiVersion"], d["kind"])]).validate(d)
        elif d["apiVersion"].startswith("monitoring.coreos.com/"):
            assert d["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "hygen-pod"}
        else:
            kubernetes_validate.validate(d, KUBE, strict=True)


def _deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Deployment")


def test_values_shape_the_objects():
    cmd = lambda docs: _deployment(docs)["spec"]["template"]["spec"]["containers"][0]["command"]  # noqa: E731
    assert not [
        d
        for d in render(MATRIX["rbac-off"])
        if d["kind"] in ("Role", "ClusterRole", "ServiceAccount")
    ]
    two = render(MATRIX["two-replicas"])
    assert "--peering=hygen" in cmd(two) and _deployment(two)["spec"]["replicas"] == 2
    assert [d["metadata"]["name"] for d in two if d["kind"] == "ClusterKopfPeering"] == ["hygen"]
    assert "--peering=hygen" not in cmd(render({}))
    ns = render(MATRIX["namespaced"])
    assert {"--namespace=team-a", "--namespace=team-b", "--token-secret=my-token"} <= set(cmd(ns))
    assert {d["metadata"]["namespace"] for d in ns if d["kind"] == "Role"} == {"team-a", "team-b"}
    assert not [d for d in ns if d["kind"] == "Secret"]  # existingSecret: none generated
    mon = render(MATRIX["monitoring-on"])
    board = next(d for d in mon if d["kind"] == "ConfigMap")
    panels = json.loads(board["data"]["hygen.json"])["panels"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for series in ("hygen_slo_met", "hygen_tokens_per_second", "hygen_offline_budget_seconds"):
        assert series in exprs


def test_the_batch_api_volume_is_a_kept_claim_mounted_where_the_operator_writes():
    def parts(values: dict[str, Any]) -> tuple[list[str], list[dict], list[dict]]:
        docs = render(values)
        pod = _deployment(docs)["spec"]["template"]["spec"]
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v]  # fmt: skip
        mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "batch-api"]
        pvcs = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
        return pod["containers"][0]["command"] + claims, mounts, pvcs

    cmd, mounts, pvcs = parts({})
    assert "--batch-api-dir=/var/lib/hygen/batch-api" in cmd and "hygen-batch-api" in cmd
    assert mounts == [{"name": "batch-api", "mountPath": "/var/lib/hygen/batch-api"}]
    assert pvcs[0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvcs[0]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert parts({"replicaCount": 2})[2][0]["spec"]["accessModes"] == ["ReadWriteMany"]
    cmd, mounts, pvcs = parts({"operator": {"batchApiVolume": {"existingClaim": "mine"}}})
    assert "mine" in cmd and mounts and not pvcs
    for off in ({"operator": {"batchApiVolume": {"enabled": False}}},
                {"operator": {"batchApiPort": 0}}):  # fmt: skip
        cmd, mounts, pvcs = parts(off)
        assert not [a for a in cmd if a.startswith("--batch-api-dir")] and not mounts and not pvcs


def test_operator_runs_unprivileged_with_a_read_only_root():
    pod = _deployment(render({}))["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_rbac_grants_no_wildcards_and_no_delete():
    for d in render({}) + render(MATRIX["namespaced"]):
        for rule in d.get("rules", []) if d["kind"] in ("Role", "ClusterRole") else []:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
            assert not {"delete", "deletecollection", "escalate", "bind"} & set(rule["verbs"]), rule


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"replicaCount": 0}, "/replicaCount"),
        ({"operator": {"logLevel": "loud"}}, "/operator/logLevel"),
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
        ({"monitoring": {"podMonitor": {"interval": "often"}}}, "/monitoring/podMonitor/interval"),
        ({"operator": {"statusIntervalSeconds": 0}}, "/operator/statusIntervalSeconds"),
        ({"imageTag": "v1"}, "imageTag"),
        ({"operator": {"batchApiVolume": {"size": "lots"}}}, "/operator/batchApiVolume/size"),
    ],
)
def test_bad_values_are_rejected_naming_the_value(values: dict[str, Any], named: str):
    with pytest.raises(helm.errors.HelmValuesError) as e:
        helm.Chart.load(CHART).validate_schema(values)
    assert named in str(e.value)
    with pytest.raises(helm.errors.HelmError):
        render(values)


@pytest.mark.parametrize(
    "name", ["servingslo-llama2-7b.yaml", "batchjob-configmap.yaml", "batchjob-s3.yaml"]
)
def test_examples_validate_against_the_crds(name: str):
    schemas = crd_schemas()
    docs = [d for d in yaml.safe_load_all((ROOT / "examples" / name).read_text()) if d]
    custom = [d for d in docs if d["apiVersion"].startswith("hygen.io/")]
    assert custom
    for d in docs:
        if d in custom:
            Draft4Validator(schemas[(d["apiVersion"], d["kind"])]).validate(d)
            model = ServingSLOSpec if d["kind"] == "ServingSLO" else BatchJobSpec
            model.model_validate(d["spec"])
        else:
            kubernetes_validate.validate(d, KUBE, strict=True)


def test_network_policy_opens_the_admin_port_to_the_operator_and_dispatchers_only():
    """The policy the chart ships must select the pods the operator makes, name the ports
    they declare, and admit exactly the operator's and the dispatcher Jobs' pods."""
    from hygen_operator import dispatcher_job, manifests
    from hygen_operator.settings import OperatorSettings

    settings = OperatorSettings(control_token="t")
    slo = ServingSLOSpec.model_validate({"model": "m", "slo": {"p99TbtMs": 50}})
    pod = manifests.deployment("chat", slo, settings)["spec"]["template"]
    ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    docs = render({})
    (np,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    sel = np["spec"]["podSelector"]["matchLabels"]
    assert sel.items() <= pod["metadata"]["labels"].items()
    open_rule, admin_rule = np["spec"]["ingress"]
    assert [p["port"] for p in open_rule["ports"]] == ["http"] and "from" not in open_rule
    assert [p["port"] for p in admin_rule["ports"]] == ["admin"]
    assert {"http", "admin"} <= ports
    operator_peer, dispatcher_peer = admin_rule["from"]
    op_labels = _deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert operator_peer["podSelector"]["matchLabels"].items() <= op_labels.items()
    ns = operator_peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    assert ns == _deployment(docs)["metadata"]["namespace"]
    job = dispatcher_job.dispatcher_job("j", "uid", BatchJobSpec.model_validate({
        "servingSlo": "chat", "input": {"volume": {"claimName": "c", "path": "in.jsonl"}},
        "output": {"volume": {"claimName": "c", "path": "out.jsonl"}}}), settings)  # fmt: skip
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    (expr,) = dispatcher_peer["podSelector"]["matchExpressions"]
    assert expr["operator"] == "Exists" and expr["key"] in job_labels
    namespaced = render(MATRIX["namespaced"])
    assert sorted(d["metadata"]["namespace"] for d in namespaced
                  if d["kind"] == "NetworkPolicy") == ["team-a", "team-b"]  # fmt: skip
    assert not [d for d in render({"networkPolicy": {"enabled": False}})
                if d["kind"] == "NetworkPolicy"]  # fmt: skip
