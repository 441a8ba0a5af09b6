"""Process-wide counters for the metrics endpoint: plain integers, nothing else.

Internal. Any layer may count here (it imports nothing of realtime), and counting is
one integer addition: the Prometheus collector (``realtime.metrics``) reads these
values at scrape time, so no ``prometheus_client`` object is touched on the paths that
serve connections. Where a count would be per delivery, it is made per publication
instead (``Hub.deliver`` adds the number of subscribers once).

Values only grow while the process lives, as Prometheus counters must.
"""

from __future__ import annotations

import bisect
import threading

# Close codes a client may send that are kept as themselves in the close-code label;
# any other value a client sends is counted as "other", so a client cannot grow the
# number of label values (and the metrics' size) by sending many different codes.
CLIENT_CLOSE_CODES = frozenset({1000, 1001, 1005, 1006, 1011, 1012})

# Buckets of the broker round-trip histogram, in seconds.
ROUND_TRIP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


class Histogram:
    """Observations counted into fixed buckets (cumulated at scrape time)."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(upper bound, observations at or below it)`` pairs, the last one ``+Inf``."""
        running, buckets = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


class Counters:
    """Every count the process keeps, as attributes."""

    def __init__(self) -> None:
        # Publications this process took from publishers (sockets, HTTP, publish(), the
        # server API) and handed to the broker.
        self.published = 0
        # Frames handed to local subscribers (counted per publication: len(subscribers)).
        self.delivered = 0
        # Frames that were not sent: a slow reader's discarded queue, or a connection
        # that was closing already.
        self.dropped = 0
        # Connections closed because they read too slowly (close code 4004).
        self.too_slow = 0
        # (initiator, close code) -> closes. initiator is "server" or "client".
        self.closes: dict[tuple[str, str], int] = {}
        # Protocol ("native", "bayeux", "http") -> failed authentications.
        self.auth_failures: dict[str, int] = {}
        # Client frames refused with rate_limited.
        self.rate_limited = 0
        # Redis commands that failed (mapped to unavailable), and broker probes that failed.
        self.redis_errors = 0
        # Seconds the broker was found unreachable by this process's probes.
        self.outage_seconds = 0.0
        # 1 while the last probe came back, 0 while it did not (None: no probe yet).
        self.broker_up: int | None = None
        self.round_trip = Histogram(ROUND_TRIP_BUCKETS)
        # Reads of a channel's history (history, the HTTP log, recovery, the server API).
        self.history_reads = 0
        # Server API commands this process carried out, by call name.
        self.commands: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, table: dict, key, amount: int = 1) -> None:
        """Count in one of the labelled tables (from any thread)."""
        with self._lock:
            table[key] = table.get(key, 0) + amount

    def closed(self, initiator: str, code: int | None) -> None:
        if initiator == "client" and code not in CLIENT_CLOSE_CODES:
            label = "other" if code is not None else "none"
        else:
            label = str(code)
        self.add(self.closes, (initiator, label))

    def auth_failed(self, protocol: str) -> None:
        self.add(self.auth_failures, protocol)


counters = Counters()
