"""Batch latency predictor: a linear model of one iteration's time from its shape.

HyGen admits offline work into an iteration only while the predicted time stays
under a budget, so the model must be cheap to evaluate (a few microseconds) and
must answer "how many more prefill tokens fit" in closed form. Coefficients are
fitted by non-negative least squares on relative error, so the model is monotone
in every feature (more work never predicts less time) and MAPE is what is minimised.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from scipy.optimize import nnls

from hygen_pod.contract.jsonio import read_json, write_atomic
from hygen_pod.contract.predictor_document import SCHEMA_VERSION, FeatureName, PredictorDocument
from hygen_pod.policy.batch_shape import BatchShape

# Feature values are scaled so that coefficients stay in a sane numeric range.
_SCALE: dict[str, float] = {
    "intercept": 1.0,
    "prefill_tokens": 1e3,
    "prefill_tokens_total_sq": 1e6,
    "prefill_sq": 1e6,
    "num_prefills": 1.0,
    "num_decodes": 1.0,
    "decode_context": 1e3,
    "decode_context_sq": 1e9,
}

BASE_FEATURES: tuple[FeatureName, ...] = (
    "prefill_tokens",
    "prefill_sq",
    "num_prefills",
    "num_decodes",
    "decode_context",
)

# Candidate feature sets tried by `select_and_fit`; the paper's set is the base.
CANDIDATE_FEATURE_SETS: tuple[tuple[FeatureName, ...], ...] = (
    BASE_FEATURES,
    ("intercept", *BASE_FEATURES),
    ("intercept", *BASE_FEATURES, "decode_context_sq"),
    (
        "intercept",
        "prefill_tokens",
        "prefill_tokens_total_sq",
        "num_prefills",
        "num_decodes",
        "decode_context",
    ),
    (
        "intercept",
        "prefill_tokens",
        "prefill_tokens_total_sq",
        "prefill_sq",
        "num_prefills",
        "num_decodes",
        "decode_context",
    ),
)


def feature_value(name: str, s: BatchShape) -> float:
    """Raw value of one feature for a batch shape."""
    if name == "intercept":
        return 1.0
    if name == "prefill_tokens_total_sq":
        return float(s.prefill_tokens) ** 2
    return float(getattr(s, name))


class LatencyPredictor:
    """Predicts one iteration's duration in seconds from its `BatchShape`."""

    def __init__(
        self,
        features: Sequence[str],
        coefficients: Sequence[float],
        *,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if len(features) != len(coefficients):
            raise ValueError("features and coefficients differ in length")
        unknown = [f for f in features if f not in _SCALE]
        if unknown:
            raise ValueError(f"unknown predictor feature(s): {unknown}")
        if any(c < 0 or not math.isfinite(c) for c in coefficients):
            raise ValueError("predictor coefficients must be finite and non-negative")
        self.features: tuple[str, ...] = tuple(features)
        self.coefficients: tuple[float, ...] = tuple(float(c) for c in coefficients)
        self.meta: dict[str, Any] = dict(meta or {})
        # Per-raw-unit weights, precomputed so that predict() is a few multiplies.
        w = {f: c / _SCALE[f] for f, c in zip(self.features, self.coefficients, strict=True)}
        self._w_icpt = w.get("intercept", 0.0)
        self._w_sp = w.get("prefill_tokens", 0.0)
        self._w_sp_tot2 = w.get("prefill_tokens_total_sq", 0.0)
        self._w_sq = w.get("prefill_sq", 0.0)
        self._w_np = w.get("num_prefills", 0.0)
        self._w_nd = w.get("num_decodes", 0.0)
        self._w_sd = w.get("decode_context", 0.0)
        self._w_sd2 = w.get("decode_context_sq", 0.0)

    # ------------------------------------------------------------------ predict
    def predict(self, s: BatchShape) -> float:
        """Predicted iteration time in seconds (0 for an empty batch)."""
        if s.prefill_tokens == 0 and s.num_decodes == 0:
            return 0.0
        sp = s.prefill_tokens
        return (
            self._w_icpt
            + self._w_sp * sp
            + self._w_sp_tot2 * sp * sp
            + self._w_sq * s.prefill_sq
            + self._w_np * s.num_prefills
            + self._w_nd * s.num_decodes
            + self._w_sd * s.decode_context
            + self._w_sd2 * s.decode_context_sq
        )

    def decode_cost(self, s: BatchShape, context: int) -> float:
        """Extra seconds of adding one decode with ``context`` tokens to ``s``."""
        extra = self._w_nd + self._w_sd * context + self._w_sd2 * context * context
        if s.empty:
            extra += self._w_icpt
        return extra

    @property
    def decode_weights(self) -> tuple[float, float, float, float]:
        """(per decode, per context token, per context token squared, intercept): what
        `decode_cost` computes with, for a caller that inlines it in a hot loop."""
        return self._w_nd, self._w_sd, self._w_sd2, self._w_icpt

    def max_prefill_tokens(
        self, s: BatchShape, budget_s: float, computed: int = 0, new_request: bool = True
    ) -> int:
        """Largest chunk ``x`` of prefill tokens (after ``computed`` cached tokens) that can
        join batch ``s`` with predicted time still <= ``budget_s``.

        Closed form: the added time is a x^2 + b x + c with a, b >= 0, so the answer
        is the floor of the positive root. Returns 0 when nothing fits.
        """
        remaining = budget_s - self.predict(s)
        c = (self._w_np if new_request else 0.0) + (self._w_icpt if s.empty else 0.0)
        b = self._w_sp + 2 * self._w_sp_tot2 * s.prefill_tokens + 2 * self._w_sq * computed
        a = self._w_sp_tot2 + self._w_sq
        r = remaining - c
        if r < 0:
            return 0
        if a <= 0:
            if b <= 0:
                return 1 << 30
            x = r / b
        else:
            x = (-b + math.sqrt(b * b + 4 * a * r)) / (2 * a)
        # Guard against floating error at the boundary.
        n = math.floor(x + 1e-9)
        while n > 0 and a * n * n + b * n > r * (1 + 1e-12):
            n -= 1
        return max(n, 0)

    # --------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        shapes: Sequence[BatchShape],
        seconds: Sequence[float],
        features: Sequence[str] = BASE_FEATURES,
    ) -> LatencyPredictor:
        """Fit by non-negative least squares on relative error (minimises ~MAPE)."""
        if len(shapes) != len(seconds):
            raise ValueError("shapes and seconds differ in length")
        if len(shapes) < len(features) + 1:
            raise ValueError(
                f"need at least {len(features) + 1} steps to fit {len(features)} features, "
                f"got {len(shapes)}"
            )
        y = np.asarray(seconds, dtype=float)
        if np.any(y <= 0) or not np.all(np.isfinite(y)):
            raise ValueError("step times must be positive and finite")
        x = _design(shapes, features)
        coef, _ = nnls(x / y[:, None], np.ones_like(y), maxiter=50 * x.shape[1])
        model = cls(features, coef.tolist())
        model.meta["fitted_on"] = len(shapes)
        model.meta["train_mape"] = model.mape(shapes, seconds)
        return model

    @classmethod
    def select_and_fit(
        cls,
        shapes: Sequence[BatchShape],
        seconds: Sequence[float],
        candidates: Sequence[Sequence[str]] = CANDIDATE_FEATURE_SETS,
        folds: int = 5,
        seed: int = 0,
    ) -> tuple[LatencyPredictor, list[tuple[tuple[str, ...], float]]]:
        """Pick the feature set with the lowest k-fold cross-validated MAPE, refit on all.

        Returns the model and the (features, cv MAPE) table, best first.
        """
        n = len(shapes)
        idx = np.random.default_rng(seed).permutation(n)
        parts = np.array_split(idx, min(folds, n))
        table: list[tuple[tuple[str, ...], float]] = []
        for feats in candidates:
            errs: list[float] = []
            for k, test in enumerate(parts):
                train = np.concatenate([p for j, p in enumerate(parts) if j != k])
                if len(train) < len(feats) + 1 or len(test) == 0:
                    continue
                m = cls.fit([shapes[i] for i in train], [seconds[i] for i in train], feats)
                errs.extend(m.errors([shapes[i] for i in test], [seconds[i] for i in test]))
            if errs:
                table.append((tuple(feats), float(np.mean(errs))))
        table.sort(key=lambda t: t[1])
        best = cls.fit(shapes, seconds, table[0][0])
        best.meta["cv_mape"] = table[0][1]
        return best, table

    @classmethod
    def fit_with_holdout(
        cls,
        shapes: Sequence[BatchShape],
        seconds: Sequence[float],
        holdout: float = 0.2,
        seed: int = 0,
    ) -> tuple[LatencyPredictor, list[tuple[tuple[str, ...], float]], int]:
        """``select_and_fit`` on a random (1 - holdout) share; the held-out MAPE goes to
        ``meta["heldout_mape"]``. Returns the model, the selection table and the test size."""
        order = list(range(len(shapes)))
        random.Random(seed).shuffle(order)
        cut = int(len(order) * (1 - holdout))
        train, test = order[:cut], order[cut:]
        model, table = cls.select_and_fit(
            [shapes[i] for i in train], [seconds[i] for i in train], seed=seed
        )
        model.meta["heldout_mape"] = model.mape(
            [shapes[i] for i in test], [seconds[i] for i in test]
        )
        return model, table, len(test)

    def errors(self, shapes: Sequence[BatchShape], seconds: Sequence[float]) -> list[float]:
        return [abs(self.predict(s) - t) / t for s, t in zip(shapes, seconds, strict=True)]

    def mape(self, shapes: Sequence[BatchShape], seconds: Sequence[float]) -> float:
        """Mean absolute percentage error, as a fraction (0.05 = 5%)."""
        errs = self.errors(shapes, seconds)
        return float(np.mean(errs)) if errs else float("nan")

    # ----------------------------------------------------------- persistence
    def to_document(self) -> PredictorDocument:
        return PredictorDocument(
            features=[cast(FeatureName, f) for f in self.features],
            coefficients=list(self.coefficients),
            scales=[_SCALE[f] for f in self.features],
            fitted_on=int(self.meta.get("fitted_on", 0)),
            train_mape=self.meta.get("train_mape"),
            heldout_mape=self.meta.get("heldout_mape"),
            source=str(self.meta.get("source", "")),
        )

    @classmethod
    def from_document(cls, doc: PredictorDocument) -> LatencyPredictor:
        if doc.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"predictor schema_version {doc.schema_version} is not supported "
                f"(this build reads {SCHEMA_VERSION})"
            )
        expected = [_SCALE[f] for f in doc.features]
        if [float(s) for s in doc.scales] != expected:
            raise ValueError("predictor scales do not match this build's feature scaling")
        meta = {
            "fitted_on": doc.fitted_on,
            "train_mape": doc.train_mape,
            "heldout_mape": doc.heldout_mape,
            "source": doc.source,
        }
        return cls(doc.features, doc.coefficients, meta=meta)

    def save(self, path: str | Path) -> None:
        """Write the document atomically: a crash never leaves a half-written predictor."""
        write_atomic(path, self.to_document().model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        return cls.from_document(PredictorDocument.model_validate(read_json(path)))

    def __repr__(self) -> str:
        terms = ", ".join(
            f"{f}={c:.4g}" for f, c in zip(self.features, self.coefficients, strict=True)
        )
        return f"LatencyPredictor({terms})"


def _design(shapes: Sequence[BatchShape], features: Sequence[str]) -> np.ndarray:
    return np.array(
        [[feature_value(f, s) / _SCALE[f] for f in features] for s in shapes], dtype=float
    )
