"""CRDs are generated from the pydantic models, structural, and reject bad objects by field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft4Validator
from pydantic import ValidationError

from hygen_operator.crd import crds, render
from hygen_operator.resources import BatchJobSpec, ServingSLOSpec

ROOT = Path(__file__).resolve().parents[2]

SLO: dict[str, Any] = {
    "apiVersion": "hygen.io/v1alpha1",
    "kind": "ServingSLO",
    "metadata": {"name": "llama", "namespace": "default"},
    "spec": {
        "model": "meta-llama/Llama-2-7b-hf",
        "resources": {"gpus": 1},
        "slo": {"p99TbtMs": 100},
        "interferenceTolerance": 0.1,
        "offlineMode": "budget",
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "engineArgs": ["--max-model-len=4096"],
    },
}
BJ: dict[str, Any] = {
    "apiVersion": "hygen.io/v1alpha1",
    "kind": "BatchJob",
    "metadata": {"name": "summaries", "namespace": "default"},
    "spec": {
        "servingSlo": "llama",
        "endpoint": "/v1/chat/completions",
        "input": {"configMap": {"name": "batch-input"}},
        "output": {"configMap": {"name": "batch-output"}},
        "completionWindow": "24h",
    },
}


def _schema(name: str) -> dict[str, Any]:
    return crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _errors(name: str, obj: dict[str, Any]) -> list[str]:
    v = Draft4Validator(_schema(name))
    return [".".join(str(p) for p in e.absolute_path) for e in v.iter_errors(obj)]


def test_crd_files_match_the_models() -> None:
    for name, obj in crds().items():
        path = ROOT / "crds" / name
        assert path.read_text() == render(obj), f"{path} drifted: run `hygen-operator crds`"


def _walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


@pytest.mark.parametrize("name", ["servingslos.yaml", "batchjobs.yaml"])
def test_schemas_are_structural(name: str) -> None:
    for path, node in _walk(_schema(name)):
        assert not {"$ref", "anyOf", "oneOf", "allOf", "const", "title"} & node.keys(), path
        if node.get("type") == "object" and path != ".properties.metadata":
            # (the API server owns metadata's schema; `type: object` is the convention)
            assert (
                "properties" in node
                or "additionalProperties" in node
                or node.get("x-kubernetes-preserve-unknown-fields")
            ), path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True, path


def test_crd_names_columns_and_status() -> None:
    slo = crds()["servingslos.yaml"]["spec"]
    assert slo["names"]["shortNames"] == ["slo"] and slo["scope"] == "Namespaced"
    version = slo["versions"][0]
    assert version["subresources"] == {"status": {}}
    cols = [c["name"] for c in version["additionalPrinterColumns"]]
    assert cols == ["Phase", "Targets", "Mode", "Budget-ms", "QPS", "Chunk", "Observed",
                    "Offline-tok/s", "Reason", "Message", "Age"]  # fmt: skip
    assert version["additionalPrinterColumns"][9]["priority"] == 1  # Message: -o wide
    bj = crds()["batchjobs.yaml"]["spec"]
    assert bj["names"]["shortNames"] == ["bj"]
    assert [c["name"] for c in bj["versions"][0]["additionalPrinterColumns"]][:2] == [
        "Phase",
        "Progress",
    ]


def test_examples_validate_against_crds_and_models() -> None:
    assert _errors("servingslos.yaml", SLO) == []
    assert _errors("batchjobs.yaml", BJ) == []
    spec = ServingSLOSpec.model_validate(SLO["spec"])
    assert spec.slo.as_metrics() == {"p99_tbt": 100}
    assert spec.profiling.iterations == 5  # defaults filled in
    BatchJobSpec.model_validate(BJ["spec"])


def _bad(obj: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    node = out
    for k in path[:-1]:
        node = node[k]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["spec", "offlineMode"], "fast", "spec.offlineMode"),
        (["spec", "interferenceTolerance"], -0.1, "spec.interferenceTolerance"),
        (["spec", "replicas"], "two", "spec.replicas"),
        (["spec", "slo"], {}, "spec.slo"),
        (["spec", "slo", "p99TbtMs"], 0, "spec.slo.p99TbtMs"),
        (["spec", "model"], KeyError, "spec"),
        (["spec", "tolerations"], [{"operator": "Maybe"}], "spec.tolerations.0.operator"),
    ],
)
def test_bad_serving_slo_is_rejected_naming_the_field(path, value, field) -> None:
    obj = _bad(SLO, path, value)
    assert field in _errors("servingslos.yaml", obj)
    with pytest.raises(ValidationError) as e:
        ServingSLOSpec.model_validate(obj["spec"])
    name = field.removeprefix("spec").lstrip(".").split(".")[0] or "model"
    assert name in str(e.value)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["spec", "input"], {"configMap": {"name": "a"}, "inline": [{}]}, "spec.input"),
        (["spec", "input"], {}, "spec.input"),
        (["spec", "endpoint"], "/v1/embeddings", "spec.endpoint"),
        (["spec", "completionWindow"], "tomorrow", "spec.completionWindow"),
        (["spec", "parallelism"], 0, "spec.parallelism"),
        (["spec", "servingSlo"], KeyError, "spec"),
    ],
)
def test_bad_batch_job_is_rejected_naming_the_field(path, value, field) -> None:
    obj = _bad(BJ, path, value)
    assert field in _errors("batchjobs.yaml", obj)
    with pytest.raises(ValidationError) as e:
        BatchJobSpec.model_validate(obj["spec"])
    name = field.removeprefix("spec").lstrip(".") or "servingSlo"
    assert name.split(".")[0] in str(e.value)


def test_crd_yaml_parses_back() -> None:
    for name in crds():
        doc = yaml.safe_load((ROOT / "crds" / name).read_text())
        assert doc["kind"] == "CustomResourceDefinition"
