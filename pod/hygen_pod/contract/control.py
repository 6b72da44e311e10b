"""Offline control: the budget / QPS setting and the file that carries it at run time.

The scheduler lives in vLLM's engine-core process, which may be a different
process from the API server that receives control requests. A small JSON file,
replaced atomically by the writer and re-read by the scheduler when its mtime
changes, is the channel: it needs no extra port, survives restarts, and is easy
to inspect. Writers use `write_control`; the scheduler uses `ControlFile.poll`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hygen_pod.contract.jsonio import write_atomic


class OfflineControl(BaseModel):
    """How much offline work the scheduler may add to each iteration.

    - ``budget`` (HyGen): offline tokens join an iteration while its predicted
      time stays <= ``budget_ms``; 0 means online only.
    - ``qps`` (HyGen*): offline requests start at most ``qps`` per second and then
      run without a latency cap; 0 means online only, ``None`` means no rate cap.

    ``online_prefill_cap`` applies in both modes, with or without offline work (see
    `hygen_pod.policy.online_chunk`). ``yield_to_prompts`` (budget mode): a step that
    carries an online prompt chunk, or leaves an online request waiting, gets no offline
    work, so a new prompt's first token never waits on offline tokens in its own steps
    (for a TTFT target; profiling tries the budget with and without it).
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["budget", "qps"] = "budget"
    # strict: a JSON true/false is not a number here; finite: null (not inf) means no cap
    budget_ms: float = Field(
        0.0, ge=0.0, strict=True, allow_inf_nan=False, description="per-iteration budget (ms)"
    )
    qps: float | None = Field(
        None, ge=0.0, strict=True, allow_inf_nan=False, description="offline starts per second"
    )
    online_prefill_cap: int | None = Field(
        None,
        ge=1,
        description="most online prefill tokens in a step that carries online decodes "
        "(null: vLLM's own chunking)",
    )

    yield_to_prompts: bool = Field(
        False,
        strict=True,
        description="budget mode: no offline work in a step with an online prompt chunk or "
        "an online request waiting",
    )

    @field_validator("online_prefill_cap", mode="before")
    @classmethod
    def _whole_number(cls, v: object) -> object:
        # JSON Schema's "integer" includes 256.0; true/false and strings are not numbers
        if isinstance(v, bool | str):
            raise ValueError("must be a whole number of tokens")
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    @property
    def online_only(self) -> bool:
        if self.mode == "budget":
            return self.budget_ms <= 0
        return self.qps == 0


def write_control(path: str | Path, control: OfflineControl) -> None:
    """Atomically replace the control file (readers never see a partial write)."""
    write_atomic(path, control.model_dump_json())


class ControlFile:
    """Re-reads a control file when it changes; keeps the last good value on errors."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self.last_error: str | None = None

    def poll(self) -> OfflineControl | None:
        """The new control if the file changed since the last call, else None."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            control = OfflineControl.model_validate_json(self.path.read_text())
        except (OSError, ValidationError) as e:
            self.last_error = f"{self.path}: {e}"
            return None
        self.last_error = None
        return control
