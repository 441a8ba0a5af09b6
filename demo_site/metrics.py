"""Live metrics for the demo dashboard: real numbers from this machine, published on ``metrics``.

:func:`sample` reads CPU use and memory use; :func:`run_publisher` publishes one sample a
second as event ``sample`` with data ``{"t", "cpu", "memory"}`` (unix seconds, percentages).
Two ways to run it:

- ``manage.py demo_metrics``: its own process, so it needs ``REDIS_URL`` (like any worker);
- :func:`ensure_publisher`: a daemon thread inside the server process, started the first
  time the dashboard is requested. That is what ``make run`` (one process, in-memory layer)
  uses; ``realtime.publish`` from a thread reaches the local hub.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from django.db import DatabaseError, close_old_connections

import realtime
from realtime.errors import RealtimeError

logger = logging.getLogger("demo_site.metrics")

CHANNEL = "metrics"
EVENT = "sample"
PROC = Path("/proc")


class Sampler:
    """CPU use over the time since the previous sample, and memory in use now.

    CPU comes from ``/proc/stat`` (busy share of all cores); where that is missing (not
    Linux) it falls back to the 1-minute load average per core, capped at 100. Memory
    comes from ``/proc/meminfo`` (``MemTotal - MemAvailable``), falling back to this
    process's peak resident size as a share of physical memory.
    """

    def __init__(self, proc: Path = PROC) -> None:
        self.proc = proc
        self._previous: tuple[int, int] | None = self._cpu_times()

    def sample(self) -> dict:
        return {"t": round(time.time(), 3), "cpu": round(self.cpu(), 1), "memory": round(self.memory(), 1)}

    def _cpu_times(self) -> tuple[int, int] | None:
        try:
            fields = (self.proc / "stat").read_text().split("\n", 1)[0].split()
        except OSError:
            return None
        values = [int(v) for v in fields[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values[:8]), idle  # guest time is already counted in user time

    def cpu(self) -> float:
        current = self._cpu_times()
        previous, self._previous = self._previous, current
        if current is None or previous is None:
            return min(100.0, os.getloadavg()[0] / (os.cpu_count() or 1) * 100)
        total, idle = current[0] - previous[0], current[1] - previous[1]
        return 0.0 if total <= 0 else max(0.0, min(100.0, (total - idle) / total * 100))

    def memory(self) -> float:
        try:
            info = dict(
                line.split(":", 1) for line in (self.proc / "meminfo").read_text().splitlines() if ":" in line
            )
            total = int(info["MemTotal"].split()[0])
            available = int(info["MemAvailable"].split()[0])
            return (total - available) / total * 100
        except (OSError, KeyError, ValueError, ZeroDivisionError):
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            return peak / physical * 100


def run_publisher(
    interval: float = 1.0,
    count: int | None = None,
    stop: threading.Event | None = None,
    on_sample: Callable[[dict], None] | None = None,
) -> int:
    """Publish a sample every ``interval`` seconds, ``count`` times or until ``stop`` is set.

    A refused publication (no ``metrics`` channel yet, Redis down) is logged and the
    loop goes on, so the dashboard comes alive as soon as the channel exists.
    Returns the number of samples published.
    """
    sampler = Sampler()
    stop = stop or threading.Event()
    published = attempts = 0
    warned = False
    next_at = time.monotonic()
    while count is None or attempts < count:
        next_at += interval
        if stop.wait(max(0.0, next_at - time.monotonic())):
            break
        attempts += 1
        data = sampler.sample()
        try:
            realtime.publish(CHANNEL, EVENT, data)
        except (RealtimeError, DatabaseError) as error:
            if not warned:
                logger.warning("demo metrics: not published (%s); retrying every %ss", error, interval)
                warned = True
            continue
        finally:
            close_old_connections()
        warned = False
        published += 1
        if on_sample is not None:
            on_sample(data)
    return published


_lock = threading.Lock()
_thread: threading.Thread | None = None


def ensure_publisher() -> bool:
    """Start the in-process publisher thread unless it runs already; True if started now."""
    global _thread
    with _lock:
        if _thread is not None and _thread.is_alive():
            return False
        _thread = threading.Thread(target=run_publisher, name="demo-metrics", daemon=True)
        _thread.start()
        return True
