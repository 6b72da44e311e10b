"""The JSON form of a fitted latency predictor, as profiles and ConfigMaps carry it.

Plain data: the fitting and evaluation code is `hygen_pod.policy.predictor`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

FeatureName = Literal[
    "intercept",
    "prefill_tokens",
    "prefill_tokens_total_sq",
    "prefill_sq",
    "num_prefills",
    "num_decodes",
    "decode_context",
    "decode_context_sq",
]

SCHEMA_VERSION = 1


class PredictorDocument(BaseModel):
    """The JSON form of a fitted predictor (stored in profiles and ConfigMaps)."""

    schema_version: int = SCHEMA_VERSION
    features: list[FeatureName]
    # Seconds contributed per unit of (feature / scale).
    coefficients: list[float]
    scales: list[float]
    fitted_on: int = Field(0, ge=0, description="number of steps the fit used")
    train_mape: float | None = None
    heldout_mape: float | None = None
    source: str = ""
