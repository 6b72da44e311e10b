"""bench/budget_sweep.py: fixed budgets on the colocation bench's evaluation slice."""

from __future__ import annotations

import re
import sys

import pytest

from tests.helpers.bench_script import load_bench
from tests.helpers.trace_files import synthetic_trace_args

bench = load_bench("budget_sweep")

_SMALL = ["--window", "8", "--load", "2", "--profile-slices", "2", "--offline", "40"]


def _run(monkeypatch, capsys, args: list[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["budget_sweep.py", *args])
    rc = bench.main()
    out = capsys.readouterr()
    return rc, out.out, out.err


def _rows(out: str) -> dict[float, list[str]]:
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 5 and cells[0] != "budget ms":
            rows[float(cells[0])] = cells[1:]
    return rows


def test_each_budget_is_judged_against_online_only_on_the_same_slice(
    tmp_path, monkeypatch, capsys
) -> None:
    args = [*synthetic_trace_args(tmp_path), *_SMALL, "--targets", "p99_tbt", "mean_ttft",
            "--budgets", "1", "7", "60"]  # fmt: skip
    rc, out, _ = _run(monkeypatch, capsys, args)
    assert rc == 0
    rows = _rows(out)
    assert sorted(rows) == [1.0, 7.0, 60.0]
    for cells in rows.values():
        ratios = [float(x) for x in re.findall(r"\(([\d.]+)\)", cells[0])]
        assert len(ratios) == 2  # one per target
        # "met" is every target within the 10% tolerance of online only
        assert (cells[2] == "yes") == all(x <= 1.1 for x in ratios)
        assert len(cells[3].split(";")) == 2  # one entry per profiling slice
    # a loose budget does more offline work than a budget under one decode step (where
    # only the progress chunks of an idle engine run)
    share = {b: float(cells[1].rstrip("%")) for b, cells in rows.items()}
    assert share[60.0] > share[1.0] * 5
    met = [b for b, cells in rows.items() if cells[2] == "yes"]
    assert 0 < len(met) < len(rows)  # both outcomes are checked above
    largest = f"{max(met):g} ms" if met else "none"
    assert f"largest budget met on the evaluation slice: {largest}\n" in out


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["--budgets", "0"], "--budgets: each budget must be > 0 ms"),
        (["--budgets", "5", "--cap", "0"], "--cap must be >= 1 token"),
        (["--budgets", "5", "--jitter-cv", "1.5"], "--jitter-cv must be in [0, 1)"),
        (["--budgets", "5", "--tolerance", "-1"], "tolerance"),
    ],
)
def test_bad_input_is_refused_by_name(tmp_path, monkeypatch, capsys, bad, message) -> None:
    rc, out, err = _run(monkeypatch, capsys, [*synthetic_trace_args(tmp_path), *bad])
    assert rc == 2 and message in err and not out


def test_a_trace_too_short_for_the_slices_is_a_clear_error(tmp_path, monkeypatch, capsys) -> None:
    args = [*synthetic_trace_args(tmp_path), "--budgets", "5", "--window", "600"]
    rc, _, err = _run(monkeypatch, capsys, args)
    assert rc == 2 and "error: trace too short" in err and "it has 600" in err
