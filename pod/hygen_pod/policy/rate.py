"""Token bucket for HyGen*'s offline QPS cap: at most ``qps`` starts per second, burst 1."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Refills ``qps`` tokens per second up to ``max(1, qps)``; ``None`` means unlimited."""

    def __init__(self, qps: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.qps = qps
        self._clock = clock
        self._tokens = 0.0
        self._last = clock()

    def take(self) -> bool:
        """Consume one start if available."""
        if self.qps is None:
            return True
        now = self._clock()
        cap = max(1.0, self.qps)
        self._tokens = min(cap, self._tokens + (now - self._last) * self.qps)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def give_back(self) -> None:
        """Return a start that was taken but not used."""
        if self.qps is not None:
            self._tokens += 1.0
