"""The README's main job, shrunk: runs end to end and prints the comparison table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hygen_pod.traces import default_data_dir

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]


def _demo(tmp_path: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0")
    cmd = [sys.executable, "-m", "hygen_pod.cli", "demo", "--workdir", str(tmp_path), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_demo_runs_and_hygen_stays_within_budget(tmp_path) -> None:
    if not (default_data_dir() / "azure-llm-trace-2023").is_dir():
        pytest.skip("shared data folder not present")
    res = _demo(tmp_path, "--online", "12", "--offline", "12", "--online-qps", "4", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    names = {ln.split("  ")[0].strip() for ln in lines if ln.startswith(("online", "offline"))}
    assert names == {"online-only", "offline without budget"}, res.stdout
    hygen = next(ln for ln in lines if ln.startswith("HyGen"))
    over, steps = hygen.split("x  ")[-1].split()[0].split("/")
    assert over == "0" and int(steps) > 0, hygen
    assert (tmp_path / "predictor.json").is_file() and (tmp_path / "steps.jsonl").is_file()
    # The last stage went through the serving pod over HTTP and the batch completed whole.
    pod = next(ln for ln in lines if ln.startswith("pod: online + batch"))
    assert pod.endswith("completed, 12/12 results"), res.stdout
    assert next(ln for ln in lines if ln.startswith("pod: online only"))


def test_demo_without_data_fails_clearly(tmp_path) -> None:
    res = _demo(tmp_path, "--data", str(tmp_path / "nowhere"), timeout=120)
    assert res.returncode == 2
    assert "not found" in res.stderr and "--data" in res.stderr
