"""Engine-side status the scheduler publishes for the pod server (and /metrics).

The scheduler runs in vLLM's engine-core process; the server in the API process.
As with the control file (the other direction), a small JSON file replaced
atomically is the channel. It is written at most once per `interval_s`.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

from pydantic import BaseModel, ValidationError

from hygen_pod.contract.control import OfflineControl
from hygen_pod.contract.jsonio import write_atomic


class SchedulerStatus(BaseModel):
    """What the scheduler reports: its control, queue depths and predictor error."""

    written_at: float
    steps: int
    control: OfflineControl
    offline_waiting: int
    offline_running: int
    over_budget_steps: int
    predictor_mape: float | None = None
    control_error: str | None = None


class StatusWriter:
    """Tracks the predictor's rolling error and writes the status file now and then."""

    def __init__(self, path: str | Path, interval_s: float = 1.0, keep: int = 256) -> None:
        self.path = Path(path)
        self.interval_s = interval_s
        self._errors: deque[float] = deque(maxlen=keep)
        self._last = 0.0
        self.over_budget_steps = 0

    def step_timed(self, predicted_s: float | None, measured_s: float) -> None:
        if predicted_s is not None and measured_s > 0:
            self._errors.append(abs(predicted_s - measured_s) / measured_s)

    @property
    def mape(self) -> float | None:
        return sum(self._errors) / len(self._errors) if self._errors else None

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.interval_s

    def write(self, status: SchedulerStatus) -> None:
        self._last = time.monotonic()
        write_atomic(self.path, status.model_dump_json())


def read_status(path: str | Path) -> SchedulerStatus | None:
    """The last status written, or None if there is none (yet) or it is unreadable."""
    try:
        return SchedulerStatus.model_validate_json(Path(path).read_text())
    except (OSError, ValidationError):
        return None
