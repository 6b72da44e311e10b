"""The architecture and the types hold: import-linter's contracts (pyproject.toml) and
mypy --strict on the contract and policy packages. Both run in `make lint` as well."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `make install` (dev extra) provides it")
    return path


def test_import_contracts_are_kept() -> None:
    res = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr


def test_a_broken_layer_rule_is_caught(tmp_path) -> None:
    """The contracts can fail: a policy module importing the server breaks the layers."""
    rogue = ROOT / "pod/hygen_pod/policy/_rogue_import_probe.py"
    rogue.write_text("from hygen_pod.server import pod_app  # noqa: F401\n")
    try:
        res = subprocess.run(
            [_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True
        )
    finally:
        rogue.unlink()
    assert res.returncode != 0
    assert "hygen_pod.policy._rogue_import_probe -> hygen_pod.server" in res.stdout


def test_contract_and_policy_type_check() -> None:
    res = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, textwrap.shorten(res.stdout + res.stderr, 4000)
