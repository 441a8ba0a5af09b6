"""The small process-local caches on the hot path (keys by secret hash, channels by name).

Entries are trusted for ``REVALIDATE_INTERVAL`` seconds at most, and every cache is
dropped whenever keys or channels change (``realtime.broker.notify_changed``) and at
each revalidation, so nothing stale outlives the promise revalidation makes. The size
is bounded by clearing everything when full: simple, and refilling costs one query
per name.
"""

from __future__ import annotations

import time
from typing import Any

from .conf import settings

MISSING = object()


class TTLCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, default: Any = MISSING) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return default
        if time.monotonic() - entry[0] > settings.REVALIDATE_INTERVAL:
            del self._entries[key]
            return default
        return entry[1]

    def put(self, key: Any, value: Any) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), value)

    def clear(self) -> None:
        self._entries.clear()
