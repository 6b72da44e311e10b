"""bench/scheduler_ab.py: a git revision's scheduler runs beside the working tree's, and a
difference in any step's schedule is caught."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers.bench_script import load_bench

pytest.importorskip("vllm")

ab = load_bench("scheduler_ab")


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory):
    root = Path(__file__).resolve().parents[2]
    if subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "HEAD"],
                      capture_output=True).returncode:  # fmt: skip
        pytest.skip("not a git checkout: no revision to load")
    return ab.load_revision("HEAD", tmp_path_factory.mktemp("rev"))


def test_an_unknown_revision_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no-such-revision"):
        ab.load_revision("no-such-revision", tmp_path)


def test_a_revision_runs_beside_the_tree_and_a_changed_decision_shows(head) -> None:
    sched, control, pred = head
    stock = ab.so._ProbedAsync

    class Rev(ab.so._OwnInsideBase, sched.HyGenScheduler, stock):  # type: ignore[misc,name-defined]
        pass

    weights = (["intercept", "num_decodes"], [0.001, 1e-6])

    def rev(budget_ms: float) -> tuple:
        return ("HEAD", Rev, control.OfflineControl(mode="budget", budget_ms=budget_ms),
                pred.LatencyPredictor(*weights))  # fmt: skip

    a, b = (v["run"] for v in ab.run_case("churn", 16, 30, True, [rev(1000.0), rev(1000.0)]))
    assert a.outs and a.outs == b.outs
    assert len(a.totals) == len(b.bases) == len(a.outs) == 30
    # a budget that admits only a few offline decodes: other schedules, and the run sees it
    a, b = (v["run"] for v in ab.run_case("churn", 16, 30, True, [rev(1000.0), rev(1.005)]))
    assert a.outs != b.outs


def test_stock_replays_hygens_schedule_and_a_late_replay_shows() -> None:
    from hygen_pod.contract.control import OfflineControl
    from hygen_pod.policy.predictor import LatencyPredictor

    tree = ("tree", ab.so.ProbedHyGenAsync, OfflineControl(mode="budget", budget_ms=1000.0),
            LatencyPredictor(["intercept", "num_decodes"], [0.001, 1e-6]))  # fmt: skip
    stock = (ab.STOCK, ab.so._ProbedAsync, None, None)
    starts = ab.offline_starts("churn", 16, 30, True, tree)
    assert sum(map(len, starts.values())) > 16, "HyGen started too few offline requests"
    batches: list = []
    a, b = (v["run"] for v in ab.run_case("churn", 16, 30, True, [tree, stock], starts, batches))
    why, _, reqs = ab.same_schedule(a.outs, b.outs, exact=False)
    assert not why and reqs == 0
    assert len(batches) == 30 and b.totals and not b.due  # every offline request was fed
    # each offline request a step late: stock starts them later, and the check sees it
    late = {k + 1: ids for k, ids in ab.offline_starts("churn", 16, 30, True, tree).items()}
    a, b = (v["run"] for v in ab.run_case("churn", 16, 30, True, [tree, stock], late))
    assert ab.same_schedule(a.outs, b.outs, exact=False)[0]
