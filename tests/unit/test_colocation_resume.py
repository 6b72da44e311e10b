"""bench/colocation.py's saved cells: --resume keeps them only under the same options."""

import argparse
import re
from pathlib import Path

import pytest

from tests.helpers.bench_script import load_bench

colocation = load_bench("colocation")


def _args(**kw) -> argparse.Namespace:
    base = {"window": 180.0, "profile_slices": 6, "targets": ["p99_tbt"], "seed": 0,
            "gpus": ["h100"], "loads": None, "tolerances": [0.1], "out": "x", "resume": True,
            "quick": False}  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


ROW = {"gpu": "h100", "online_qps": 2.0, "target": "p99_tbt", "tolerance": 0.1,
       "policy": "HyGen", "setting": "budget=9.5ms chunk=256", "offline_tps": 11719.5,
       "p99_tbt": 10.7, "slo_met": "yes", "offline_x_hygen_star": float("nan")}  # fmt: skip


def test_saved_cells_come_back_as_written(tmp_path: Path) -> None:
    colocation._start_csv(tmp_path, _args())
    colocation._save_rows(tmp_path, [ROW])
    (back,) = colocation._saved_rows(tmp_path, _args(tolerances=[0.05, 0.1], loads=[4.0]))
    assert {k: v for k, v in back.items() if k != "offline_x_hygen_star"} == {
        k: v for k, v in ROW.items() if k != "offline_x_hygen_star"
    }
    assert back["offline_x_hygen_star"] != back["offline_x_hygen_star"]  # NaN, as written


def test_other_options_are_refused_by_name(tmp_path: Path) -> None:
    colocation._start_csv(tmp_path, _args())
    colocation._save_rows(tmp_path, [ROW])
    with pytest.raises(ValueError, match=r"--profile-slices 6 there, 3 now"):
        colocation._saved_rows(tmp_path, _args(profile_slices=3))
    assert (tmp_path / colocation.CSV_NAME).exists()  # nothing lost by the refusal


def test_a_csv_without_its_options_is_refused(tmp_path: Path) -> None:
    colocation._start_csv(tmp_path, _args())
    colocation._save_rows(tmp_path, [ROW])
    (tmp_path / colocation.OPTIONS_NAME).unlink()
    with pytest.raises(ValueError, match="is missing"):
        colocation._saved_rows(tmp_path, _args())


def test_a_fresh_run_never_pairs_an_old_csv_with_its_options(tmp_path: Path) -> None:
    colocation._start_csv(tmp_path, _args())
    colocation._save_rows(tmp_path, [ROW])
    colocation._start_csv(tmp_path, _args(window=60.0))  # a new run, stopped before a cell
    # the old rows are gone rather than taken for the new run's
    assert colocation._saved_rows(tmp_path, _args(window=60.0)) == []
    colocation._save_rows(tmp_path, [ROW])
    with pytest.raises(ValueError, match=re.escape("--window 60.0 there, 180.0 now")):
        colocation._saved_rows(tmp_path, _args())
