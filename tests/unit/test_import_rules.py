"""The layering rule: only hygen_pod.vllm_adapter imports vllm or torch."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE_MODULES = {"vllm", "torch", "transformers"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_policy_modules_do_not_import_the_engine() -> None:
    offenders = []
    for pkg in ("pod/hygen_pod", "operator/hygen_operator"):
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("pod/hygen_pod/vllm_adapter/"):
                continue
            bad = _imports(path) & ENGINE_MODULES
            if bad:
                offenders.append((rel, sorted(bad)))
    assert not offenders, offenders


def test_operator_imports_only_pod_api_models() -> None:
    for path in (ROOT / "operator/hygen_operator").rglob("*.py"):
        assert "hygen_pod.vllm_adapter" not in path.read_text(), path
