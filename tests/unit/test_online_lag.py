"""The check that online work alone fell behind the engine (profiling/online_lag.py)."""

from __future__ import annotations

from hygen_pod.policy.latency import RequestTiming
from hygen_pod.profiling.online_lag import MIN_REQUESTS, online_load


def _fifo(n: int, gap_s: float, service_s: float, tokens: int = 10) -> list[RequestTiming]:
    """One server, first come first served: each request's tokens spread over its service."""
    out, free_at = [], 0.0
    for i in range(n):
        arrival = i * gap_s
        start = max(arrival, free_at)
        free_at = start + service_s
        step = service_s / tokens
        out.append(RequestTiming(arrival, [start + step * (k + 1) for k in range(tokens)]))
    return out


def test_an_engine_that_keeps_up_is_not_behind() -> None:
    load = online_load(_fifo(60, gap_s=1.0, service_s=0.5))
    assert load is not None and not load.behind
    assert load.served > 0.98 and abs(load.ttft_growth - 1.0) < 1e-9


def test_a_queue_that_grows_to_the_end_is_behind() -> None:
    # arrivals every second, two seconds of service each: the queue grows all along
    load = online_load(_fifo(60, gap_s=1.0, service_s=2.0))
    assert load is not None and load.behind
    assert load.served < 0.6 and load.ttft_growth > 3


def test_long_requests_in_flight_at_the_end_alone_are_not_behind() -> None:
    # a short replay of long requests that the engine serves in parallel: much is still in
    # flight at the last arrival (served is low), but nobody waits longer than the first
    ts = [RequestTiming(float(i), [i + 0.2 + k for k in range(30)]) for i in range(20)]
    load = online_load(ts)
    assert load is not None and load.served < 0.9
    assert not load.behind


def test_a_burst_that_drains_is_not_behind() -> None:
    # TTFT grows late in the replay, but the engine caught up: nearly all tokens served
    ts = _fifo(40, gap_s=1.0, service_s=0.5)
    ts += [RequestTiming(40.0 + i * 0.01, [40.5 + i * 0.5]) for i in range(20)]
    ts.append(RequestTiming(60.0, [60.1]))
    load = online_load(ts)
    assert load is not None and load.ttft_growth >= 3 and load.served > 0.9
    assert not load.behind


def test_too_few_requests_are_not_judged() -> None:
    few = _fifo(MIN_REQUESTS - 1, gap_s=1.0, service_s=3.0)
    load = online_load(few)
    assert load is not None and load.served < 0.9 and load.ttft_growth > 3
    assert not load.behind
    assert online_load([]) is None
    assert online_load([RequestTiming(0.0)]) is None  # no token: nothing to judge


def test_a_zero_first_ttft_gives_a_finite_growth_the_profile_can_store() -> None:
    from hygen_pod.contract.profile import OnlineBehind

    ts = [RequestTiming(float(i), [float(i)]) for i in range(6)]  # served at arrival
    ts += [RequestTiming(6.0 + i, [40.0 + i, 41.0 + i]) for i in range(3)]
    load = online_load(ts)
    assert load is not None and load.behind
    doc = OnlineBehind(slice=0, requests=load.requests, served=load.served,
                       ttft_growth=load.ttft_growth)  # fmt: skip
    assert OnlineBehind.model_validate_json(doc.model_dump_json()) == doc
