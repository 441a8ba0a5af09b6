import pytest

from realtime import ratelimit
from realtime.ratelimit import TokenBucket

# Steps are binary fractions of a second, so the arithmetic is exact.


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    # Replace the module's view of ``time`` only, not the time module itself.
    monkeypatch.setattr(ratelimit, "time", clock)
    return clock


def take_all(bucket: TokenBucket, attempts: int) -> list[bool]:
    return [bucket.take() for _ in range(attempts)]


def test_a_full_bucket_allows_a_burst_then_refuses(clock):
    bucket = TokenBucket(rate=5, burst=10)
    assert take_all(bucket, 10) == [True] * 10
    assert bucket.take() is False
    assert bucket.take() is False


def test_tokens_refill_at_the_rate(clock):
    bucket = TokenBucket(rate=4, burst=10)
    take_all(bucket, 10)

    clock.advance(0.125)  # half a token
    assert bucket.take() is False
    clock.advance(0.125)  # one whole token
    assert bucket.take() is True
    assert bucket.take() is False

    clock.advance(1)
    assert take_all(bucket, 5) == [True] * 4 + [False]


def test_refused_attempts_do_not_spend_tokens(clock):
    bucket = TokenBucket(rate=1, burst=2)
    take_all(bucket, 2)
    assert take_all(bucket, 5) == [False] * 5
    clock.advance(1)
    assert bucket.take() is True


def test_refill_is_capped_at_the_burst(clock):
    bucket = TokenBucket(rate=100, burst=3)
    take_all(bucket, 3)
    clock.advance(3600)
    assert take_all(bucket, 4) == [True, True, True, False]


def test_a_steady_rate_at_the_limit_is_never_refused(clock):
    bucket = TokenBucket(rate=8, burst=1)
    for _ in range(100):
        assert bucket.take() is True
        clock.advance(0.125)


def test_a_steady_rate_above_the_limit_is_refused_in_proportion(clock):
    bucket = TokenBucket(rate=8, burst=1)
    results = []
    for _ in range(200):  # twice the rate
        results.append(bucket.take())
        clock.advance(0.0625)
    assert results == [True, False] * 100


def test_fractional_rates_refill_slowly(clock):
    bucket = TokenBucket(rate=0.5, burst=1)
    assert bucket.take() is True
    clock.advance(1.875)
    assert bucket.take() is False
    clock.advance(0.125)
    assert bucket.take() is True


def test_a_zero_rate_never_refills(clock):
    bucket = TokenBucket(rate=0, burst=2)
    take_all(bucket, 2)
    clock.advance(10_000)
    assert bucket.take() is False


def test_a_zero_burst_refuses_everything(clock):
    bucket = TokenBucket(rate=1000, burst=0)
    clock.advance(10)
    assert bucket.take() is False


def test_time_before_the_bucket_was_made_does_not_count(clock):
    clock.advance(3600)
    bucket = TokenBucket(rate=1, burst=2)
    assert take_all(bucket, 3) == [True, True, False]
