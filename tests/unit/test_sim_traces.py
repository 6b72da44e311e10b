"""bench/sim_traces.py: how the colocation bench (and the scripts rerunning its settings)
cut a trace file into slices and backlogs, and the clear errors when it cannot."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from tests.helpers.bench_script import load_bench
from tests.helpers.trace_files import synthetic_trace_args

sim_traces = load_bench("sim_traces")
colocation = load_bench("colocation")


def _plan(tmp_path: Path, **kw):  # type: ignore[no-untyped-def]
    args = synthetic_trace_args(tmp_path)
    opts = dict(
        online_file=args[1], online_name="azure", offline_file=args[3], offline_name="arxiv",
        data=None, profile_slices=2, load=2.0, window_s=8.0, backlog=40, seed=0,
    )  # fmt: skip
    opts.update(kw)
    return sim_traces.plan_traces(**opts)


def test_slices_and_backlogs_are_disjoint_and_described(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    assert len(plan.online) == 600
    spans = [(s.start, s.end) for s in [*plan.prof_slices, plan.eval_slice]]
    assert len(spans) == 3
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    assert all(end <= len(plan.online) for _, end in spans)
    assert len(plan.prof_pool) == len(plan.eval_pool) == 40
    assert not {id(r) for r in plan.prof_pool} & {id(r) for r in plan.eval_pool}
    line = plan.describe()
    assert line.startswith("online trace 600 requests: profiling slices [0, ")
    assert f"evaluation [{plan.eval_slice.start}, {plan.eval_slice.end})" in line
    assert "backlogs of 40 (profiling) and 40 (evaluation), disjoint" in line


def test_the_same_options_cut_the_same_plan(tmp_path: Path) -> None:
    a, b = _plan(tmp_path), _plan(tmp_path)
    assert a.describe() == b.describe()
    assert [r.prompt_tokens for r in a.eval_pool] == [r.prompt_tokens for r in b.eval_pool]
    other = _plan(tmp_path, seed=1)
    assert [r.prompt_tokens for r in other.eval_pool] != [r.prompt_tokens for r in a.eval_pool]


def test_short_traces_and_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"trace too short: .* it has 600"):
        _plan(tmp_path, window_s=600.0)
    with pytest.raises(ValueError, match=r"offline set too small: .* it has 100"):
        _plan(tmp_path, backlog=60)
    with pytest.raises(FileNotFoundError):
        _plan(tmp_path, online_file=str(tmp_path / "absent.csv"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--window", "600"], "error: trace too short"),
        (["--offline", "60"], "error: offline set too small"),
    ],
)
def test_colocation_refuses_a_workload_it_cannot_cut_before_writing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    extra: list[str], message: str,
) -> None:  # fmt: skip
    out = tmp_path / "out"
    small = ["--loads", "2", "--window", "8", "--profile-slices", "2", "--offline", "40"]
    argv = [*synthetic_trace_args(tmp_path), *small, "--out", str(out), *extra]
    monkeypatch.setattr(sys, "argv", ["colocation.py", *argv])
    assert colocation.main() == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
