"""The step trace as a document: records written by `StepTrace` read back equal, and a bad
line is refused with its file and line number."""

from __future__ import annotations

from pathlib import Path

import pytest

from hygen_pod.policy.step_trace import StepRecord, StepTrace, read_trace


def _records() -> list[StepRecord]:
    a = StepRecord(step=1, online_tokens=3, shape={"num_decodes": 3, "sum_decode_context": 900},
                   budget_s=0.02, predicted_s=0.01)  # fmt: skip
    a.measured_s = 0.011  # set when the step's output comes back
    b = StepRecord(step=2, mode="qps", offline_tokens=512, offline_reqs=1, progress=True)
    return [a, b]


def test_written_records_read_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "steps.jsonl"
    trace = StepTrace(keep=1, path=path)
    for rec in _records():
        trace.append(rec)
    trace.close()
    assert len(trace) == 1  # keeps the last one in memory, writes them all
    assert read_trace(path) == _records()
    assert _records()[0].to_dict(exclude={"measured_s", "shape"})["budget_s"] == 0.02


@pytest.mark.parametrize(
    "line",
    ['{"online_tokens": 3}', '{"step": "two"}', '{"step": 1, "shape": {"num_decodes": "x"}}',
     "not json"],
)  # fmt: skip
def test_a_bad_line_is_refused_by_file_and_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "steps.jsonl"
    good = '{"step": 1}'
    path.write_text(f"{good}\n\n{line}\n")
    with pytest.raises(ValueError, match=r"steps.jsonl:3: bad step record"):
        read_trace(path)
