"""Settings of the HyGen scheduler plugin, read from vLLM's ``--additional-config``.

Example::

    vllm serve MODEL --scheduler-cls hygen_pod.vllm_adapter.scheduler.HyGenScheduler \\
        --additional-config '{"hygen": {"predictor_path": "/profile/predictor.json",
                                        "control_path": "/state/control.json",
                                        "initial": {"mode": "budget", "budget_ms": 40}}}'
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hygen_pod.contract.control import OfflineControl

# The request field that marks a request offline: SamplingParams.extra_args
# (``vllm_xargs`` over HTTP). Absent means online.
CLASS_KEY = "hygen_class"
RequestClass = Literal["online", "offline"]


class SchedulerSettings(BaseModel):
    """The ``hygen`` section of vLLM's additional_config."""

    model_config = ConfigDict(extra="forbid")

    predictor_path: str | None = Field(
        None, description="predictor JSON; required for a non-zero budget"
    )
    profile_path: str | None = Field(
        None,
        description="profile JSON (hygen-pod profile): its predictor, and its budget as the "
        "initial control unless 'initial' is given",
    )
    control_path: str | None = Field(
        None, description="JSON control file re-read when it changes (budget/QPS at run time)"
    )
    initial: OfflineControl | None = Field(None, description="default: online only")
    trace_path: str | None = Field(None, description="append one JSON line per step here")
    status_path: str | None = Field(
        None, description="JSON status (queues, predictor error) rewritten about once a second"
    )
    trace_keep: int = Field(100_000, ge=0, description="steps kept in memory")
    max_bypass: int = Field(
        256, ge=0, description="starvation guard: max newer offline requests that may overtake"
    )
    max_wait_s: float | None = Field(
        None, gt=0, description="starvation guard: start an offline request after this wait"
    )


def request_class(extra_args: dict[str, Any] | None) -> RequestClass:
    """The class a request's extra_args declare; anything but "offline" is online."""
    if extra_args and extra_args.get(CLASS_KEY) == "offline":
        return "offline"
    return "online"
