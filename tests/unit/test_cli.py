"""hygen-pod CLI: predictor fitting from a trace file, control writing, clear errors."""

from __future__ import annotations

import random

import pytest

from hygen_pod.cli import main
from hygen_pod.contract.control import ControlFile
from hygen_pod.policy.batch_shape import BatchShape
from hygen_pod.policy.predictor import LatencyPredictor
from hygen_pod.policy.step_trace import STEP_RECORD, StepRecord


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
            f.write(STEP_RECORD.dump_json(rec).decode() + "\n")


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
    assert main(["set-control", "--file", str(path), "--mode", "qps", "--qps", "uncapped"]) == 0
    got = reader.poll()
    assert got is not None and (got.mode, got.qps) == ("qps", None)
    # A corrupt file keeps the last good control and reports the error.
    path.write_text("{")
    assert reader.poll() is None and reader.last_error


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--budget-ms", "-5"], "--budget-ms"),
        (["--budget-ms", "inf"], "--budget-ms"),
        ([], "--budget-ms is required"),
        (["--mode", "qps"], "--qps is required"),
        (["--mode", "qps", "--qps", "-1"], "--qps"),
        (["--mode", "qps", "--qps", "fast"], "--qps"),
        (["--budget-ms", "3", "--qps", "2"], "--qps applies to --mode qps"),
        (["--mode", "qps", "--qps", "2", "--budget-ms", "3"], "--budget-ms applies"),
    ],
)
def test_set_control_refuses_bad_values_in_one_line_naming_the_option(
    tmp_path, capsys, args: list[str], named: str
) -> None:
    path = tmp_path / "control.json"
    assert main(["set-control", "--file", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert named in err and err.count("\n") == 1, err
    assert not path.exists()


def test_set_control_does_not_create_folders(tmp_path, capsys) -> None:
    target = tmp_path / "no" / "such" / "c.json"
    assert main(["set-control", "--file", str(target), "--budget-ms", "2"]) == 2
    assert "--file" in capsys.readouterr().err and not (tmp_path / "no").exists()


def test_profile_on_the_gpu_oracle(tmp_path, capsys) -> None:
    import pytest

    from hygen_pod.contract.profile import ProfileDocument
    from hygen_pod.profiling.traces import default_data_dir

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
        "4",
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
    assert doc.offline_tps_budget > 0  # a budget below one online step admits nothing
    run = capsys.readouterr()
    assert "budget" in run.out and doc.online_behind == [] and "fell behind" not in run.err
    assert main([*args[:-2], "--tolerance", "-1", "--out", str(out)]) == 2
    # two consecutive trace slices: both replayed for every setting, recorded
    assert main([*args, "--slices", "2"]) == 0
    two = ProfileDocument.load(out)
    assert two.slices == 2 and two.budget_ms <= doc.budget_ms
    with pytest.raises(SystemExit):
        main([*args, "--slices", "0"])
    assert "--slices: must be >= 1 slice, not 0" in capsys.readouterr().err
    # online load beyond the engine (60 req/s on the H100 oracle): the profile names the
    # slice and the command warns
    over = [*args, "--online-qps", "60", "--iters", "1"]
    assert main(over) == 0
    assert [b.slice for b in ProfileDocument.load(out).online_behind] == [0]
    assert "warning: online work alone fell behind the engine on 1 of 1" in capsys.readouterr().err


def test_serve_needs_a_model_and_names_a_missing_one(tmp_path, capsys) -> None:
    """No silent hub default, no traceback: one line naming --model, exit 2 (vLLM's parser
    is built, no engine starts)."""
    pytest.importorskip("vllm")
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, says in (
        ([], "--model is required"),
        (["--model", str(tmp_path / "nonexistent")], "no such folder"),
        (["--model", str(empty)], "no config.json"),
    ):
        assert main(["serve", *args]) == 2, args
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--offline-max-starting", "0"], "--offline-max-starting: Input should be greater than 0"),
        (["--offline-max-inflight", "0"], "--offline-max-inflight: Input should be greater than 0"),
        (["--offline-qps", "-1"], "--offline-qps: Input should be greater than or equal to 0"),
        (["--admin-port", "70000"], "--admin-port: Input should be less than 65536"),
    ],
)
def test_serve_refuses_a_bad_pod_option_in_one_line_naming_it(tmp_path, capsys, args, says) -> None:
    """Pod settings are checked before any engine starts; the error names the option the
    user typed, not the settings field, and nothing is written to the state dir."""
    pytest.importorskip("vllm")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    state = tmp_path / "state"
    base = ["serve", "--model", str(model), "--state-dir", str(state), "--budget-ms", "5"]
    assert main([*base, *args]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {says}\n", err
    assert not state.exists()


def test_serve_help_shows_the_pod_options_with_descriptions_first() -> None:
    pytest.importorskip("vllm")
    from hygen_pod.vllm_adapter.server import build_parser

    text = build_parser().format_help()
    usage = text.splitlines()[0]
    assert usage.startswith("usage: hygen-pod serve --model MODEL") and len(usage) < 100
    ours, _, theirs = text.partition("vLLM's options")
    for opt in ("--api-key-file", "--admin-port", "--hygen-profile", "--budget-ms", "--slo"):
        assert opt in ours, opt
    assert "file of API keys" in ours  # with its description
    assert "ModelConfig" in theirs and "ModelConfig" not in ours


def test_set_control_online_prefill_cap(tmp_path, capsys) -> None:
    path = tmp_path / "control.json"
    args = ["set-control", "--file", str(path), "--budget-ms", "9", "--online-prefill-cap", "256"]
    assert main(args) == 0
    got = ControlFile(path).poll()
    assert got is not None and (got.budget_ms, got.online_prefill_cap) == (9, 256)
    capsys.readouterr()
    assert main([*args[:-1], "0"]) == 2
    err = capsys.readouterr().err
    assert "--online-prefill-cap" in err and err.count("\n") == 1, err


def test_set_control_yield_to_prompts(tmp_path, capsys) -> None:
    path = tmp_path / "control.json"
    args = ["set-control", "--file", str(path), "--budget-ms", "9", "--yield-to-prompts"]
    assert main(args) == 0
    got = ControlFile(path).poll()
    assert got is not None and got.yield_to_prompts and got.budget_ms == 9
    capsys.readouterr()
    assert main(["set-control", "--file", str(path), "--mode", "qps", "--qps", "1",
                 "--yield-to-prompts"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "--yield-to-prompts applies to --mode budget only" in err and err.count("\n") == 1


def test_profile_refuses_a_bad_online_prefill_cap(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["profile", "--out", str(tmp_path / "p.json"), "--online-prefill-caps", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--online-prefill-caps" in err and ">= 1" in err
    assert not (tmp_path / "p.json").exists()


def test_serve_with_a_profile_starts_in_its_better_mode_with_that_modes_chunking(tmp_path) -> None:
    pytest.importorskip("vllm")
    from hygen_pod.contract.control import OfflineControl
    from hygen_pod.contract.profile import MetricValues, ProfileDocument
    from hygen_pod.vllm_adapter.server import build_parser, pod_settings

    ms = MetricValues(mean_ttft_ms=30, p99_ttft_ms=90, mean_tbt_ms=7, p99_tbt_ms=11)
    doc = ProfileDocument(
        model="m", hardware="oracle:h100", seed=0, targets=["p99_tbt"], tolerance=0.1,
        predictor=LatencyPredictor(["intercept"], [0.005]).to_document(),
        budget_ms=12.5, qps=0.5, online_prefill_cap=256, qps_online_prefill_cap=512,
        online_only=ms, with_budget=ms, with_qps=ms, offline_tps_budget=0,
        offline_tps_qps=0, profiler_seconds=1,
    )  # fmt: skip
    path = tmp_path / "profile.json"

    def started(budget_tps: float, qps_tps: float) -> OfflineControl:
        doc.model_copy(update={"offline_tps_budget": budget_tps, "offline_tps_qps": qps_tps}).save(
            path
        )
        args = build_parser().parse_args(
            ["--model", "m", "--state-dir", str(tmp_path), "--hygen-profile", str(path)]
        )
        return pod_settings(args).initial_control

    budget = OfflineControl(mode="budget", budget_ms=12.5, online_prefill_cap=256)
    assert started(100.0, 50.0) == budget
    assert started(50.0, 100.0) == OfflineControl(mode="qps", qps=0.5, online_prefill_cap=512)
