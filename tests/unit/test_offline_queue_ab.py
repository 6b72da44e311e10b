"""bench/offline_queue_ab.py: a revision's queue runs beside the tree's, and a changed
pop order is caught."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.helpers.bench_script import load_bench

_ROOT = Path(__file__).resolve().parents[2]
ab = load_bench("offline_queue_ab")

_SMALL = ["--against", "HEAD", "--queued", "60", "--pops", "40", "--repeats", "2"]


def _need_git() -> None:
    if subprocess.run(["git", "-C", str(_ROOT), "rev-parse", "--verify", "HEAD"],
                      capture_output=True).returncode:  # fmt: skip
        pytest.skip("not a git checkout: no revision to load")


def test_an_unknown_revision_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no-such-revision"):
        ab.load_revision("no-such-revision", tmp_path)


def test_the_two_queues_run_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    _need_git()
    ab.main(_SMALL)
    out = capsys.readouterr().out
    assert "peek+pop" in out and "tree/other" in out


def test_a_changed_pop_order_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    _need_git()

    class Lifo:
        """Pops the newest entry: a different order from the prefix queue's."""

        def __init__(self, max_bypass: int) -> None:
            self.items: list[object] = []

        def add(self, item_id: str, tokens: list[int], item: object) -> None:
            self.items.append(item)

        def peek(self) -> object:
            return self.items[-1]

        def pop(self) -> object:
            return self.items.pop()

    monkeypatch.setattr(ab, "tree", SimpleNamespace(OfflineQueue=Lifo))
    with pytest.raises(SystemExit, match="different orders"):
        ab.main(_SMALL)
