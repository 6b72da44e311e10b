"""Did online work alone fall behind the engine? A check on an online-only replay.

Where online demand alone exceeds what the engine serves, online-only has a queue that
grows until the replay's arrivals stop: its latencies depend on where the slice ends, so
"within tolerance of online-only" means little there and the pod needs more capacity or
less online load, not an offline setting. Two signs must both show
(docs/benchmarks.md, "When online work alone cannot keep up", has the measurements):

* ``served``: the share of the online output tokens owed to the replay's requests that
  were emitted by its last arrival is under `MIN_SERVED` (when the engine keeps up, only
  the work of requests still in flight is missing: 0.91-1.00 on the Azure trace, 0.75-1.00
  for Mooncake's long requests in 60 s windows);
* ``ttft_growth``: the median TTFT of the last third of arrivals is at least
  `MIN_TTFT_GROWTH` times that of the first third (a queue that grows; 0.3-2.4 on every
  slice that keeps up, 4-35 on saturated ones). Medians, because one long prompt moves a
  third's mean.

Either alone misfires: a short window ends with long requests in flight (served low, no
growth), and a burst early in a slice leaves growth near 1 but a late one can double it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from hygen_pod.policy.latency import RequestTiming

MIN_SERVED = 0.9
MIN_TTFT_GROWTH = 3.0
MIN_REQUESTS = 9  # three per third, or the medians mean nothing


@dataclass(frozen=True, slots=True)
class OnlineLoad:
    """How an online-only replay kept up (`online_load`)."""

    requests: int
    served: float  # share of owed output tokens emitted by the last arrival
    ttft_growth: float  # median TTFT, last third of arrivals over the first third

    def describe(self) -> str:
        """The two signs in words, for logs and warnings."""
        return (
            f"{self.served:.0%} of its tokens served by the last arrival, median TTFT "
            f"x{self.ttft_growth:.1f} from the first third of arrivals to the last"
        )

    @property
    def behind(self) -> bool:
        """Online work alone fell behind: both signs show (module docstring)."""
        return (
            self.requests >= MIN_REQUESTS
            and self.served < MIN_SERVED
            and self.ttft_growth >= MIN_TTFT_GROWTH
        )


def online_load(timings: list[RequestTiming]) -> OnlineLoad | None:
    """The two signs for one online-only replay; None without requests that got a token."""
    ts = sorted((t for t in timings if t.token_times), key=lambda t: t.arrival)
    if not ts:
        return None
    third = max(1, len(ts) // 3)
    first = statistics.median(t.token_times[0] - t.arrival for t in ts[:third])
    last = statistics.median(t.token_times[0] - t.arrival for t in ts[-third:])
    end = ts[-1].arrival
    owed = sum(len(t.token_times) for t in ts)
    served = sum(sum(1 for x in t.token_times if x <= end) for t in ts)
    # a zero first-third TTFT (no real engine has one) must not make the ratio infinite:
    # the profile stores it as JSON
    return OnlineLoad(len(ts), served / owed, last / max(first, 1e-9))
