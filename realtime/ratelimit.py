"""A token bucket per connection: ``rate`` frames per second, bursts up to ``burst``."""

from __future__ import annotations

import time

from . import stats


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        """Spend one token; False if none is left (the frame should be refused)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            stats.counters.rate_limited += 1
            return False
        self.tokens -= 1
        return True
