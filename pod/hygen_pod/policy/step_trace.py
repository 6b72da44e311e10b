"""Per-iteration trace: what the scheduler decided and how long the step took.

One record per engine step. It serves two purposes: the budget guarantee can be
checked after the fact (every step carrying offline tokens has predicted time
<= budget), and the (shape, measured seconds) pairs are the training data the
predictor is fitted on — captured from the very engine it will control.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from hygen_pod.policy.batch_shape import BatchShape


@dataclass(slots=True, kw_only=True)
class StepRecord:
    """One scheduled iteration. A plain dataclass, built by the scheduler every step
    (a pydantic model's validating constructor cost ~20 us of a busy step at 256
    running); as a document (the JSONL trace) it is written and validated by pydantic
    through `STEP_RECORD` (`StepTrace`, `read_trace`)."""

    step: int
    online_tokens: int = 0
    offline_tokens: int = 0
    online_reqs: int = 0
    offline_reqs: int = 0
    shape: dict[str, int] = field(default_factory=dict)
    mode: str = "budget"
    budget_s: float | None = None
    predicted_s: float | None = None
    measured_s: float | None = None
    progress: bool = False  # idle-engine progress step, exempt from the budget (see docs)
    offline_preempted: int = 0
    online_preempted: int = 0
    online_waiting: int = 0
    offline_waiting: int = 0

    @property
    def over_budget(self) -> bool:
        """True when offline tokens ran in a step predicted to exceed the budget
        (progress steps, which carry no online work, are exempt by design)."""
        return (
            self.mode == "budget"
            and not self.progress
            and self.offline_tokens > 0
            and self.budget_s is not None
            and self.predicted_s is not None
            and self.predicted_s > self.budget_s * (1 + 1e-9)
        )

    def batch_shape(self) -> BatchShape:
        return BatchShape(**self.shape)

    def to_dict(self, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """The record as the trace's JSON object, less ``exclude``."""
        out: dict[str, Any] = STEP_RECORD.dump_python(self)
        for k in exclude:
            out.pop(k, None)
        return out


# The trace line's schema: pydantic validates a read line and writes each record.
STEP_RECORD: TypeAdapter[StepRecord] = TypeAdapter(StepRecord)


class StepTrace:
    """Keeps the last ``keep`` records in memory and optionally appends them to JSONL."""

    def __init__(self, keep: int = 100_000, path: str | Path | None = None) -> None:
        self.records: deque[StepRecord] = deque(maxlen=keep)
        self.path = Path(path) if path else None
        self._fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", buffering=1)

    def append(self, rec: StepRecord) -> None:
        self.records.append(rec)
        if self._fh is not None:
            self._fh.write(STEP_RECORD.dump_json(rec).decode() + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __iter__(self) -> Iterator[StepRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)


def read_trace(path: str | Path) -> list[StepRecord]:
    """Load a JSONL trace; a malformed line raises with its line number."""
    out: list[StepRecord] = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(STEP_RECORD.validate_python(json.loads(line)))
        except ValueError as e:
            raise ValueError(f"{path}:{n}: bad step record: {e}") from e
    return out


def timing_samples(records: Iterable[StepRecord]) -> tuple[list[BatchShape], list[float]]:
    """(shape, seconds) pairs of the records that carry a measured, non-empty step."""
    shapes: list[BatchShape] = []
    secs: list[float] = []
    for r in records:
        if r.measured_s is None or r.measured_s <= 0:
            continue
        shape = r.batch_shape()
        if shape.empty:
            continue
        shapes.append(shape)
        secs.append(r.measured_s)
    return shapes, secs
