"""Generate the CustomResourceDefinitions from the pydantic models in `resources`.

Kubernetes wants a *structural* OpenAPI v3.0 schema: no ``$ref``, no ``anyOf``
for optional fields (``nullable`` instead), ``exclusiveMinimum`` as a flag, and
free-form objects marked ``x-kubernetes-preserve-unknown-fields``. This module
converts pydantic's JSON Schema into that form, so the models stay the single
source of truth. `hygen-operator crds --out crds/` writes the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from hygen_operator.resources import (
    GROUP,
    VERSION,
    BatchJobSpec,
    BatchJobStatus,
    ServingSLOSpec,
    ServingSLOStatus,
)


def structural(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI schema of ``model`` (camelCase field names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _convert(raw, defs)


def _convert(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_convert(x, defs) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs)
    out: dict[str, Any] = {}
    any_of = node.get("anyOf")
    if any_of is not None:
        options = [o for o in any_of if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {any_of} structurally")
        out.update(_convert(options[0], defs))
        if len(options) < len(any_of):
            out["nullable"] = True
    for key, value in node.items():
        if key in ("anyOf", "title") or (key == "default" and value is None):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "properties":
            out[key] = {k: _convert(v, defs) for k, v in value.items()}
        elif key == "additionalProperties" and value is True:
            out["x-kubernetes-preserve-unknown-fields"] = True
        elif key == "additionalProperties" and value is False:
            continue  # structural schemas prune unknown fields already
        else:
            out[key] = _convert(value, defs)
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _crd(
    kind: str,
    plural: str,
    short: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["hygen"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        *columns,
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": structural(spec),
                                "status": structural(status),
                            },
                        }
                    },
                }
            ],
        },
    }


def _col(name: str, type_: str, path: str, desc: str, priority: int = 0) -> dict[str, Any]:
    """A printer column; priority 1 shows only with ``kubectl get -o wide``."""
    col = {"name": name, "type": type_, "jsonPath": path, "description": desc}
    return {**col, "priority": priority} if priority else col


def crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD object, for both kinds."""
    return {
        "servingslos.yaml": _crd(
            "ServingSLO",
            "servingslos",
            "slo",
            ServingSLOSpec,
            ServingSLOStatus,
            [
                _col("Phase", "string", ".status.phase", "lifecycle phase"),
                _col("Targets", "string", ".status.targets", "online SLO targets"),
                _col("Mode", "string", ".status.offlineMode", "budget (HyGen) or qps (HyGen*)"),
                _col("Budget-ms", "number", ".status.budgetMs", "offline latency budget"),
                _col("QPS", "number", ".status.qps", "offline QPS (HyGen* mode)"),
                _col(
                    "Chunk",
                    "integer",
                    ".status.onlinePrefillCap",
                    "online prefill cap in steps with online decodes (empty: vLLM's)",
                ),
                _col("Observed", "string", ".status.observedSummary", "targeted metric now"),
                _col(
                    "Offline-tok/s",
                    "number",
                    ".status.offlineTokensPerSecond",
                    "offline throughput over all pods",
                ),
                _col("Reason", "string", ".status.reason", "why the phase is what it is"),
                _col("Message", "string", ".status.message", "the phase in words", 1),
            ],
        ),
        "batchjobs.yaml": _crd(
            "BatchJob",
            "batchjobs",
            "bj",
            BatchJobSpec,
            BatchJobStatus,
            [
                _col("Phase", "string", ".status.phase", "lifecycle phase"),
                _col("Progress", "string", ".status.progress", "completed/total"),
                _col("Failed", "integer", ".status.failed", "lines that failed"),
                _col("SLO", "string", ".spec.servingSlo", "the ServingSLO serving it"),
                _col("Reason", "string", ".status.reason", "why the phase is what it is"),
                _col("Message", "string", ".status.message", "the phase in words", 1),
            ],
        ),
    }


HEADER = "# Generated by `hygen-operator crds` from hygen_operator.resources; do not edit.\n"


def render(obj: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(obj, sort_keys=False, width=100)


def write(out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, obj in crds().items():
        (out / name).write_text(render(obj))
        paths.append(out / name)
    return paths
