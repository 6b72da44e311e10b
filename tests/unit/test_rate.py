"""HyGen*'s offline start rate."""

from hygen_pod.policy.rate import TokenBucket


def test_token_bucket_rate_and_burst() -> None:
    now = [0.0]
    b = TokenBucket(2.0, clock=lambda: now[0])
    assert not b.take()  # starts empty: no burst at time 0
    now[0] = 0.5
    assert b.take() and not b.take()
    now[0] = 10.0  # long idle: capped at max(1, qps) = 2 tokens
    assert b.take() and b.take() and not b.take()
    b.give_back()
    assert b.take()
    starts = 0
    for i in range(1, 1001):  # 10 s in 10 ms ticks
        now[0] = 10.0 + i * 0.01
        starts += b.take()
    assert starts == 20


def test_unlimited_and_zero() -> None:
    assert all(TokenBucket(None).take() for _ in range(100))
    now = [0.0]
    z = TokenBucket(0.0, clock=lambda: now[0])
    now[0] = 1e6
    assert not z.take()
