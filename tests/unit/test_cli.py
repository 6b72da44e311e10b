"""hygen-pod CLI: predictor fitting from a trace file, control writing, clear errors."""

from __future__ import annotations

import json
import random

from hygen_pod.batch import BatchShape
from hygen_pod.cli import main
from hygen_pod.control import ControlFile
from hygen_pod.predictor import LatencyPredictor
from hygen_pod.step_trace import StepRecord


def _trace(path, n=200, seed=0):
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            s = BatchShape()
            for _ in range(rng.randint(0, 2)):
                s.add_prefill(rng.randint(1, 256))
            for _ in range(rng.randint(0, 16)):
                s.add_decode(rng.randint(10, 600))
            if s.empty:
                s.add_decode(5)
            secs = 2e-3 + 1e-5 * s.prefill_tokens + 1e-4 * s.num_decodes
            rec = StepRecord(step=i, shape=s.as_dict(), measured_s=secs * rng.uniform(0.97, 1.03))
            f.write(rec.model_dump_json() + "\n")


def test_fit_predictor_from_trace(tmp_path, capsys) -> None:
    trace = tmp_path / "steps.jsonl"
    _trace(trace)
    out = tmp_path / "p.json"
    assert main(["fit-predictor", "--trace", str(trace), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "held-out MAPE" in text
    model = LatencyPredictor.load(out)
    assert model.meta["heldout_mape"] < 0.05


def test_fit_predictor_errors(tmp_path, capsys) -> None:
    assert main(["fit-predictor", "--out", str(tmp_path / "p.json")]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1}\n{"step": "x"}\n')
    assert main(["fit-predictor", "--trace", str(bad), "--out", str(tmp_path / "p.json")]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    missing = tmp_path / "nope.jsonl"
    assert main(["fit-predictor", "--trace", str(missing), "--out", str(tmp_path / "p.json")]) == 2


def test_set_control_writes_what_the_scheduler_reads(tmp_path, capsys) -> None:
    path = tmp_path / "control.json"
    reader = ControlFile(path)
    assert reader.poll() is None  # no file yet
    assert main(["set-control", "--file", str(path), "--budget-ms", "25"]) == 0
    got = reader.poll()
    assert got is not None and got.budget_ms == 25 and got.mode == "budget"
    assert reader.poll() is None  # unchanged file is not re-read
    assert main(["set-control", "--file", str(path), "--budget-ms", "-1"]) == 2
    assert "budget_ms" in capsys.readouterr().err
    # A corrupt file keeps the last good control and reports the error.
    path.write_text("{")
    assert reader.poll() is None and reader.last_error
    assert json.loads('{"mode": "qps"}')["mode"] == "qps"


def test_profile_on_the_gpu_oracle(tmp_path, capsys) -> None:
    import pytest

    from hygen_pod.profile import ProfileDocument
    from hygen_pod.traces import default_data_dir

    pytest.importorskip("aiconfigurator_core")
    if not (default_data_dir() / "azure-llm-trace-2023").is_dir():
        pytest.skip("shared data folder not present")
    out = tmp_path / "profile.json"
    args = [
        "profile",
        "--oracle",
        "h100",
        "--window",
        "10",
        "--iters",
        "2",
        "--offline",
        "200",
        "--online-qps",
        "3",
        "--targets",
        "mean_tbt",
        "--tolerance",
        "0.5",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    doc = ProfileDocument.load(out)
    assert doc.hardware == "oracle:h100" and doc.targets == ["mean_tbt"]
    assert doc.budget_ms > 0 and doc.with_budget.mean_tbt_ms <= 1.5 * doc.online_only.mean_tbt_ms
    assert "budget" in capsys.readouterr().out
    assert main([*args[:-2], "--tolerance", "-1", "--out", str(out)]) == 2
