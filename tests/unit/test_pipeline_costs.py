"""bench/pipeline_costs.py: the engine loops and host-time models, side by side."""

from __future__ import annotations

import sys

import pytest

from tests.helpers.bench_script import load_bench
from tests.helpers.trace_files import synthetic_trace_args

bench = load_bench("pipeline_costs")


def _run(monkeypatch, capsys, args: list[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["pipeline_costs.py", *args])
    rc = bench.main()
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_hygens_own_host_time_shows_in_sync_mode_only(tmp_path, monkeypatch, capsys) -> None:
    opts = ["--window", "8", "--load", "2", "--profile-slices", "1", "--offline", "40",
            "--budget", "20"]  # fmt: skip
    rc, out, _ = _run(monkeypatch, capsys, [*synthetic_trace_args(tmp_path), *opts])
    assert rc == 0
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 9 and cells[0] in ("sync", "async"):
            rows[tuple(cells[:3])] = [float(c.rstrip("%")) for c in cells[3:]]
    assert len(rows) == 10
    tbt = {k: v[2] for k, v in rows.items()}
    # sync: each step waits for its host time, so HyGen's own time lengthens every step
    # it is charged in; online work alone is never charged it
    assert tbt["sync", "stock + HyGen", "HyGen"] > tbt["sync", "stock", "HyGen"]
    assert tbt["sync", "stock", "HyGen"] > tbt["sync", "none", "HyGen"]
    assert ("sync", "stock + HyGen", "online only") not in rows
    assert rows["sync", "none", "HyGen"][4] > 0  # offline work ran
    # async: the next step is planned while one runs, so most host time hides
    hidden = tbt["async", "stock + HyGen", "HyGen"] - tbt["async", "none", "HyGen"]
    assert abs(hidden) < (tbt["sync", "stock + HyGen", "HyGen"] - tbt["sync", "none", "HyGen"]) / 4


def test_a_bad_budget_is_refused_by_name(tmp_path, monkeypatch, capsys) -> None:
    rc, _, err = _run(monkeypatch, capsys, [*synthetic_trace_args(tmp_path), "--budget", "0"])
    assert rc == 2 and "--budget must be > 0 ms" in err


@pytest.mark.parametrize("missing", ["--online-trace-file", "--offline-trace-file"])
def test_a_missing_trace_file_is_a_clear_error(tmp_path, monkeypatch, capsys, missing) -> None:
    args = synthetic_trace_args(tmp_path)
    args[args.index(missing) + 1] = str(tmp_path / "nope.csv")
    rc, _, err = _run(monkeypatch, capsys, args)
    assert rc == 2 and "nope.csv" in err
