"""A token bucket per connection: ``rate`` frames per second, bursts up to ``burst``."""

from __future__ import annotations

import time

from . import stats


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp", "credit_until")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.credit_until = 0.0

    def take(self) -> bool:
        """Spend one token; False if none is left (the frame should be refused)."""
        now = time.monotonic()
        if self.tokens > self.burst and now >= self.credit_until:
            self.tokens = float(self.burst)  # unspent credit lapses
        if self.tokens < self.burst:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            stats.counters.rate_limited += 1
            return False
        self.tokens -= 1
        return True

    def credit(self, seconds: float) -> None:
        """The connection read no frames for ``seconds`` just now (a command waited on
        the broker): frames sent at ``rate`` meanwhile queued up and now arrive at once.

        They get the tokens the bucket would have gained over that time, above
        ``burst`` if need be, for as long again: a Redis hang does not turn into
        ``rate_limited`` for a client that kept to the rate, and credit cannot be saved
        up for a flood later.
        """
        now = time.monotonic()
        blocked = max(0.0, min(seconds, now - self.stamp))
        refill = (now - self.stamp - blocked) * self.rate
        if self.tokens < self.burst:
            self.tokens = min(self.burst, self.tokens + refill)
        self.tokens += blocked * self.rate
        self.stamp = now
        self.credit_until = max(self.credit_until, now + blocked)
