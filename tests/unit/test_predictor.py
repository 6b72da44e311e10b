"""Predictor: fitting, closed-form capacity, persistence and bad input."""

from __future__ import annotations

import json
import random
import time

import pytest

from hygen_pod.policy.batch_shape import BatchShape
from hygen_pod.policy.predictor import LatencyPredictor


def _random_shape(rng: random.Random) -> BatchShape:
    s = BatchShape()
    for _ in range(rng.randint(0, 3)):
        s.add_prefill(rng.randint(1, 2048), rng.choice([0, 0, rng.randint(0, 4096)]))
    for _ in range(rng.randint(0, 64)):
        s.add_decode(rng.randint(16, 4096))
    if s.empty:
        s.add_decode(100)
    return s


# A synthetic "engine" with known coefficients (seconds per raw unit).
TRUE = {
    "prefill_tokens": 40e-6,
    "prefill_sq": 2e-9,
    "num_prefills": 3e-4,
    "num_decodes": 1e-4,
    "decode_context": 5e-8,
}


def _true_time(s: BatchShape) -> float:
    return 5e-3 + sum(getattr(s, k) * v for k, v in TRUE.items())


def test_fit_recovers_known_model_and_selects_intercept() -> None:
    rng = random.Random(1)
    shapes = [_random_shape(rng) for _ in range(400)]
    secs = [_true_time(s) * (1 + rng.gauss(0, 0.01)) for s in shapes]
    model, table = LatencyPredictor.select_and_fit(shapes[:300], secs[:300])
    assert "intercept" in model.features, table
    held = model.mape(shapes[300:], secs[300:])
    assert held < 0.02, (held, table)
    # Without the intercept the same data fits clearly worse: selection is not a no-op.
    no_icpt = dict(table)[
        ("prefill_tokens", "prefill_sq", "num_prefills", "num_decodes", "decode_context")
    ]
    assert no_icpt > table[0][1]


def test_max_prefill_tokens_is_the_exact_boundary() -> None:
    rng = random.Random(2)
    shapes = [_random_shape(rng) for _ in range(200)]
    model = LatencyPredictor.fit(
        shapes,
        [_true_time(s) for s in shapes],
        (
            "intercept",
            "prefill_tokens",
            "prefill_sq",
            "num_prefills",
            "num_decodes",
            "decode_context",
        ),
    )
    for _ in range(200):
        base = _random_shape(rng)
        computed = rng.choice([0, rng.randint(1, 3000)])
        budget = model.predict(base) + rng.uniform(-0.005, 0.08)
        x = model.max_prefill_tokens(base, budget, computed)
        if x > 0:
            with_x = base.copy()
            with_x.add_prefill(x, computed)
            assert model.predict(with_x) <= budget + 1e-12
        over = base.copy()
        over.add_prefill(x + 1, computed)
        assert model.predict(over) > budget


def test_predict_is_microseconds() -> None:
    model = LatencyPredictor(
        [
            "intercept",
            "prefill_tokens",
            "prefill_sq",
            "num_prefills",
            "num_decodes",
            "decode_context",
        ],
        [1, 1, 1, 1, 1, 1],
    )
    s = _random_shape(random.Random(3))
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        model.predict(s)
    per_call = (time.perf_counter() - t0) / n
    # Generous bound for a loaded 2-core CI box; typical is well under 1 us.
    assert per_call < 50e-6


def test_save_load_roundtrip(tmp_path) -> None:
    rng = random.Random(4)
    shapes = [_random_shape(rng) for _ in range(50)]
    model = LatencyPredictor.fit(shapes, [_true_time(s) for s in shapes])
    path = tmp_path / "p.json"
    model.save(path)
    again = LatencyPredictor.load(path)
    assert again.features == model.features
    for s in shapes[:10]:
        assert again.predict(s) == pytest.approx(model.predict(s), rel=1e-12)
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == 1 and doc["fitted_on"] == 50


def test_bad_documents_and_data_are_rejected(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        LatencyPredictor.load(bad)
    bad.write_text(json.dumps({"features": ["warp_speed"], "coefficients": [1], "scales": [1]}))
    with pytest.raises(ValueError, match="warp_speed"):
        LatencyPredictor.load(bad)
    with pytest.raises(ValueError, match="non-negative"):
        LatencyPredictor(["num_decodes"], [-1.0])
    with pytest.raises(ValueError, match="positive"):
        LatencyPredictor.fit([BatchShape(num_decodes=1)] * 3, [0.0, 1.0, 1.0], ["num_decodes"])
    with pytest.raises(ValueError, match="at least"):
        LatencyPredictor.fit([BatchShape(num_decodes=1)], [1.0])
