"""Sliding-window per-class latency and SLO status."""

from __future__ import annotations

import pytest

from hygen_pod.server.slo_window import SLOWindow


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_window_per_class_and_expiry() -> None:
    c = Clock()
    w = SLOWindow(10.0, clock=c)
    c.t += 10
    w.first_token("online", 0.100)
    w.next_tokens("online", 0.040, 2)  # two tokens in one gap: 20 ms each
    w.first_token("offline", 1.0)
    w.finished("online")
    on = w.window("online")
    assert on.requests == 1 and on.tokens == 3
    assert on.mean_ttft_ms == pytest.approx(100)
    assert on.mean_tbt_ms == pytest.approx(20)
    assert w.window("offline").mean_ttft_ms == pytest.approx(1000)
    [s] = w.slo({"mean_tbt": 15.0})
    assert s.metric == "mean_tbt" and s.observed_ms == pytest.approx(20) and s.met is False
    c.t += 11  # everything ages out
    assert w.window("online").tokens == 0
    assert w.window("online").p99_tbt_ms is None
    assert w.slo({"p99_tbt": 50.0})[0].met is None
