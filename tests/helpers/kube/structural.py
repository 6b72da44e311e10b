"""What kube-apiserver does with a custom resource against its CRD's structural schema.

From the Kubernetes documentation ("Extend the Kubernetes API with CustomResourceDefinitions":
validation, defaulting, pruning): on create and update the server

1. prunes fields the schema does not declare (unless ``x-kubernetes-preserve-unknown-fields``;
   ``apiVersion``, ``kind`` and ``metadata`` at the root are kept),
2. applies ``default`` to absent fields of objects that are present (not to null ones
   unless ``nullable``), then
3. validates (OpenAPI v3.0: ``type``, ``nullable``, ``enum``, ``minimum``/``maximum`` with
   boolean ``exclusiveMinimum``/``exclusiveMaximum``, ``minLength``/``maxLength``,
   ``pattern``, ``minItems``/``maxItems``, ``minProperties``/``maxProperties``,
   ``required``, ``items``, ``additionalProperties``) and refuses the whole write with 422,
   listing every violation as ``<path>: <reason>``.

Only the keywords our CRDs use are implemented; an unknown keyword is an error here, so a
schema change cannot silently go unchecked.
"""

from __future__ import annotations

import copy
import re
from typing import Any

KNOWN = {
    "type", "nullable", "description", "default", "properties", "required", "items", "enum",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
    "pattern", "minItems", "maxItems", "minProperties", "maxProperties", "additionalProperties",
    "x-kubernetes-preserve-unknown-fields", "format", "title",
}  # fmt: skip
ROOT_KEEP = ("apiVersion", "kind", "metadata")


def prune(obj: Any, schema: dict[str, Any], root: bool = False) -> Any:
    """``obj`` without the fields ``schema`` does not declare."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return obj
    if isinstance(obj, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        out = {}
        for k, v in obj.items():
            if root and k in ROOT_KEEP:
                out[k] = v
            elif props is not None and k in props:
                out[k] = prune(v, props[k])
            elif isinstance(extra, dict):
                out[k] = prune(v, extra)
            elif extra is True or (props is None and extra is None):
                out[k] = v
        return out
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [prune(x, schema["items"]) for x in obj]
    return obj


def apply_defaults(obj: Any, schema: dict[str, Any]) -> Any:
    """``obj`` with the schema's defaults filled in where a field is absent."""
    if isinstance(obj, dict) and schema.get("type") == "object":
        out = dict(obj)
        for k, sub in (schema.get("properties") or {}).items():
            if k not in out and "default" in sub:
                out[k] = copy.deepcopy(sub["default"])
            if k in out and out[k] is not None:
                out[k] = apply_defaults(out[k], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for k in out:
                if k not in (schema.get("properties") or {}) and out[k] is not None:
                    out[k] = apply_defaults(out[k], extra)
        return out
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(x, schema["items"]) for x in obj]
    return obj


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


def _type_ok(value: Any, t: str) -> bool:
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[t])


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def validate(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Every violation of ``schema`` by ``value``, as "<path>: <reason>"."""
    unknown = set(schema) - KNOWN
    if unknown:
        raise ValueError(f"{path or '<root>'}: schema keywords not implemented: {sorted(unknown)}")
    w = path or "<root>"

    def bad(shown: Any, should: str) -> str:
        return f"{w}: Invalid value: {shown}: {w} in body {should}"

    t = schema.get("type")
    if value is None:
        return [] if schema.get("nullable") else [bad('"null"', f"must be of type {t}")]
    if t is not None and not _type_ok(value, t):
        kind = _JSON_TYPE.get(type(value).__name__, type(value).__name__)
        return [bad(f'"{kind}"', f'must be of type {t}: "{kind}"')]
    errs: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(_show(x) for x in schema["enum"])
        errs.append(f"{w}: Unsupported value: {_show(value)}: supported values: {allowed}")
    if t in ("integer", "number"):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is not None and schema.get("exclusiveMinimum") and value <= lo:
            errs.append(bad(value, f"should be greater than {lo}"))
        elif lo is not None and value < lo:
            errs.append(bad(value, f"should be greater than or equal to {lo}"))
        if hi is not None and schema.get("exclusiveMaximum") and value >= hi:
            errs.append(bad(value, f"should be less than {hi}"))
        elif hi is not None and value > hi:
            errs.append(bad(value, f"should be less than or equal to {hi}"))
    if t == "string":
        if "minLength" in schema and len(value) < schema["minLength"]:
            errs.append(bad(_show(value), f"should be at least {schema['minLength']} chars long"))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errs.append(f"{w}: Too long: may not be more than {schema['maxLength']} bytes")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errs.append(bad(_show(value), f"should match '{schema['pattern']}'"))
    if t == "array":
        if "minItems" in schema and len(value) < schema["minItems"]:
            errs.append(bad(len(value), f"should have at least {schema['minItems']} items"))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errs.append(
                f"{w}: Too many: {len(value)}: must have at most {schema['maxItems']} items"
            )
        if isinstance(schema.get("items"), dict):
            for i, x in enumerate(value):
                errs += validate(x, schema["items"], f"{path}[{i}]")
    if t == "object":
        n = len(value)
        if "minProperties" in schema and n < schema["minProperties"]:
            errs.append(bad(n, f"should have at least {schema['minProperties']} properties"))
        if "maxProperties" in schema and n > schema["maxProperties"]:
            errs.append(bad(n, f"should have at most {schema['maxProperties']} properties"))
        errs += [f"{_join(path, k)}: Required value" for k in schema.get("required") or []
                 if k not in value]  # fmt: skip
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            if k in props:
                errs += validate(v, props[k], _join(path, k))
            elif isinstance(extra, dict):
                errs += validate(v, extra, _join(path, k))
    return errs


_JSON_TYPE = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
              "dict": "object", "list": "array"}  # fmt: skip


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def admit(
    obj: dict[str, Any],
    schema: dict[str, Any],
    old: dict[str, Any] | None = None,
    status_only: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """What the server stores for ``obj`` (pruned, defaulted), and its violations.

    ``status_only``: a write to the status subresource, where only the status stanza is
    validated. ``old``: an update, where a field still holding its old value passes even
    if invalid (validation ratcheting, on by default since Kubernetes 1.30): an object
    stored under a looser schema can still get finalizers and status.
    """
    out = apply_defaults(prune(obj, schema, root=True), schema)
    props = schema.get("properties") or {}
    if status_only:
        st = props.get("status")
        errs = validate(out["status"], st, "status") if st and "status" in out else []
    else:
        body = {k: v for k, v in out.items() if k not in ROOT_KEEP}
        root = {**schema, "properties": {k: v for k, v in props.items() if k not in ROOT_KEEP}}
        errs = validate(body, root)
    if old is not None:
        errs = [e for e in errs if _at(out, _path(e)) != _at(old, _path(e))]
    return out, errs


_MISSING = object()


def _path(error: str) -> list[str | int]:
    """["spec", "items", 0, "name"] of "spec.items[0].name: ..." """
    where = error.split(":", 1)[0]
    return [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", where)]


def _at(obj: Any, path: list[str | int]) -> Any:
    for p in path:
        if (isinstance(p, int) and isinstance(obj, list) and p < len(obj)) or (
            isinstance(p, str) and isinstance(obj, dict) and p in obj
        ):
            obj = obj[p]
        else:
            return _MISSING
    return obj
