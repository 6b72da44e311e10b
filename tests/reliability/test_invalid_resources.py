"""Invalid custom resources of every field type: for each field the CRD schema declares, a
wrong value (wrong type, bad enum, below minimum, bad pattern) is rejected by the CRD schema
(what the API server checks) and by the operator's own models (what it checks before acting),
and the operator's message names that field."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from hygen_operator.conditions import field_errors
from hygen_operator.resources import BatchJobSpec, ServingSLOSpec

ROOT = Path(__file__).resolve().parents[2]


def crd_spec_schema(plural: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / f"{plural}.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def example(kind: str) -> dict[str, Any]:
    docs = [
        d
        for f in sorted((ROOT / "examples").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
    ]
    return next(d for d in docs if d and d["kind"] == kind)["spec"]


def wrong_values(s: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(what, value) pairs that violate schema ``s``."""
    t = s.get("type")
    if "enum" in s:
        yield "enum", "not-one-of-them"
    if t == "string":
        yield "type", 12345
        if "pattern" in s:
            yield (
                "pattern",
                next(
                    v
                    for v in ("/abs/path", "!! no match !!", "UPPER")
                    if not re.search(s["pattern"], v)
                ),
            )
        if "minLength" in s:
            yield "minLength", ""
    elif t in ("integer", "number"):
        yield "type", "abc"
        if s.get("exclusiveMinimum") is True:  # OpenAPI 3.0: the minimum itself is out
            yield "exclusiveMinimum", s["minimum"]
        elif "minimum" in s:
            yield "minimum", s["minimum"] - 1
        if "maximum" in s:
            yield "maximum", s["maximum"] + 1
    elif t == "boolean":
        yield "type", "maybe"
    elif t == "array":
        yield "type", "not-a-list"
    elif t == "object":
        yield "type", "not-an-object"


def fields(s: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple, dict]]:
    """Every declared field below ``s`` (objects' properties and array items), with its schema."""
    for name, sub in (s.get("properties") or {}).items():
        yield (*path, name), sub
        yield from fields(sub, (*path, name))
    if s.get("type") == "array" and isinstance(s.get("items"), dict):
        yield from fields(s["items"], (*path, 0))


def with_value(spec: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    node = out
    for i, key in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(node, list):
            while len(node) <= key:
                node.append({})
            node = node[key]
            continue
        if not isinstance(node.get(key), dict | list):
            node[key] = [] if isinstance(nxt, int) else {}
        node = node[key]
    if isinstance(node, list):
        while len(node) <= path[-1]:
            node.append(None)
    node[path[-1]] = value
    return out


def cases(plural: str, kind: str) -> list[Any]:
    schema, base = crd_spec_schema(plural), example(kind)
    out = []
    for path, sub in fields(schema):
        for what, value in wrong_values(sub):
            name = ".".join(str(p) for p in path)
            out.append(pytest.param(schema, base, path, value, id=f"{name}-{what}"))
    return out


MODELS = {"servingslos": ServingSLOSpec, "batchjobs": BatchJobSpec}


def check(plural: str, schema: dict, base: dict, path: tuple, value: Any) -> None:
    assert MODELS[plural].model_validate(base), "the example itself is valid"
    bad = with_value(base, path, value)
    where = "spec." + ".".join(str(p) for p in path)
    crd_errors = list(
        jsonschema.Draft4Validator(schema).iter_errors(bad)  # OpenAPI 3.0's dialect
    )
    assert crd_errors, f"the CRD schema accepted {where}={value!r}"
    with pytest.raises(Exception) as e:
        MODELS[plural].model_validate(bad)
    msg = field_errors(e.value)
    assert where in msg, f"{where}={value!r}: the operator's message does not name it: {msg}"


@pytest.mark.parametrize(("schema", "base", "path", "value"), cases("servingslos", "ServingSLO"))
def test_bad_servingslo_field(schema, base, path, value) -> None:
    check("servingslos", schema, base, path, value)


@pytest.mark.parametrize(("schema", "base", "path", "value"), cases("batchjobs", "BatchJob"))
def test_bad_batchjob_field(schema, base, path, value) -> None:
    check("batchjobs", schema, base, path, value)


def test_every_field_type_is_covered() -> None:
    n = len(cases("servingslos", "ServingSLO")) + len(cases("batchjobs", "BatchJob"))
    kinds = {
        what
        for plural in MODELS
        for _, sub in fields(crd_spec_schema(plural))
        for what, _ in wrong_values(sub)
    }
    assert n >= 40 and {"type", "enum", "minimum"} <= kinds, (n, kinds)
