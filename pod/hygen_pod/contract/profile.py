"""The Profile document: what profiling found, in the form pods load and the operator stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hygen_pod.contract.control import OfflineControl
from hygen_pod.contract.jsonio import read_json
from hygen_pod.contract.metrics import Metric
from hygen_pod.contract.predictor_document import PredictorDocument

PROFILE_SCHEMA_VERSION = 1

# what a profile's tolerance is measured against (profiling/profiler.py)
Reference = Literal["vllm_chunking", "chosen_chunking"]
OfflineMode = Literal["budget", "qps"]


class MetricValues(BaseModel):
    """Online latency (milliseconds) measured during profiling."""

    mean_ttft_ms: float
    p99_ttft_ms: float
    mean_tbt_ms: float
    p99_tbt_ms: float


class OnlineBehind(BaseModel):
    """A profiling slice on which online work alone fell behind the engine."""

    model_config = ConfigDict(extra="forbid")

    slice: int = Field(ge=0, description="the slice's index (0 when profiling on one)")
    requests: int = Field(ge=0, description="online requests replayed")
    served: float = Field(
        ge=0, le=1, description="share of their output tokens emitted by the last arrival"
    )
    ttft_growth: float = Field(
        ge=0, description="median TTFT of the last third of arrivals over the first third"
    )


class ProfileDocument(BaseModel):
    """Versioned result of `hygen-pod profile`."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = PROFILE_SCHEMA_VERSION
    model: str
    hardware: str = Field(description="e.g. 'cpu' or 'oracle:h100'")
    engine: dict[str, Any] = Field(default_factory=dict, description="engine arguments used")
    seed: int
    targets: list[Metric] = Field(min_length=1)
    tolerance: float = Field(ge=0)
    confidence: float = Field(
        0.0, ge=0, le=1, description="share of bootstrap resamples a setting had to pass (0: point)"
    )
    slices: int = Field(
        1,
        ge=1,
        description="online trace slices each setting was run on: all had to pass and, with "
        "several, a new slice by the prediction bound of their spread; metrics are pooled",
    )
    predictor: PredictorDocument
    budget_ms: float = Field(ge=0, description="HyGen: largest budget within tolerance")
    qps: float = Field(ge=0, description="HyGen*: largest offline QPS within tolerance")
    online_prefill_cap: int | None = Field(
        None, ge=1, description="HyGen: online prefill cap chosen with the budget (null: vLLM's)"
    )
    qps_online_prefill_cap: int | None = Field(
        None, ge=1, description="HyGen*: online prefill cap chosen with the QPS (null: vLLM's)"
    )
    yield_to_prompts: bool = Field(
        False,
        description="HyGen: the budget was found (and applies) with no offline work in "
        "steps that carry an online prompt chunk or leave an online request waiting (tried "
        "beside the plain budget for TTFT targets; kept when it did more offline work)",
    )
    reference: Reference = Field(
        "vllm_chunking",
        description="what the tolerance was measured against: online only under vLLM's "
        "chunking, or under the cap chosen with each setting (online_only_with_cap)",
    )
    online_only: MetricValues = Field(description="online only, vLLM's chunking")
    online_only_with_cap: MetricValues | None = Field(
        None, description="online only under the budget's online prefill cap"
    )
    online_behind: list[OnlineBehind] = Field(
        default_factory=list,
        description="slices whose online-only replay fell behind the engine (a queue that "
        "grew to the end): online load alone exceeds the pod there, so no offline setting "
        "is meaningful and the pod needs more capacity or less online load",
    )
    with_budget: MetricValues
    with_qps: MetricValues
    offline_tps_budget: float = Field(ge=0)
    offline_tps_qps: float = Field(ge=0)
    probes: dict[str, list[tuple[float, bool]]] = Field(default_factory=dict)
    profiler_seconds: float = Field(ge=0)
    spec_hash: str | None = Field(
        None, description="the operator's hash of the inputs this profile was made for"
    )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")

    def best_mode(self) -> OfflineMode:
        """The mode whose setting did more offline work within the tolerance while
        profiling: HyGen's budget, unless HyGen*'s QPS did strictly more (it does under a
        mean TBT target at a tight tolerance: docs/benchmarks.md)."""
        return "qps" if self.offline_tps_qps > self.offline_tps_budget else "budget"

    def control(self, mode: OfflineMode | None = None) -> OfflineControl:
        """The profiled setting of ``mode`` (default: `best_mode`) with the online prefill
        cap chosen with it: a setting holds the targets only with its own chunking."""
        if (mode or self.best_mode()) == "qps":
            return OfflineControl(
                mode="qps", qps=self.qps, online_prefill_cap=self.qps_online_prefill_cap
            )
        return OfflineControl(
            mode="budget",
            budget_ms=self.budget_ms,
            online_prefill_cap=self.online_prefill_cap,
            yield_to_prompts=self.yield_to_prompts,
        )

    @classmethod
    def load(cls, path: str | Path) -> ProfileDocument:
        raw = read_json(path)
        version = raw.get("schema_version") if isinstance(raw, dict) else None
        if version != PROFILE_SCHEMA_VERSION:
            raise ValueError(
                f"{path}: profile schema_version {version!r} is not supported "
                f"(this build reads {PROFILE_SCHEMA_VERSION})"
            )
        return cls.model_validate(raw)
