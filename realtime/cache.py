"""The small process-local caches on the hot path (keys by secret hash, channels by name).

Entries are trusted for ``REVALIDATE_INTERVAL`` seconds at most, and every cache is
dropped whenever keys or channels change (``realtime.changes.notify_changed``) and at
each revalidation, so nothing stale outlives the promise revalidation makes. The size
is bounded by clearing everything when full: simple, and refilling costs one query
per name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .conf import settings

MISSING = object()


class TTLCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[Any, tuple[float, Any]] = {}
        self._loading: dict[tuple[asyncio.AbstractEventLoop, Any], asyncio.Task] = {}
        self._generation = 0

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

    def discard(self, key: Any) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
        # A load that began before now may have read what was just changed: not kept.
        self._generation += 1

    async def load(self, key: Any, loader: Callable[[], Awaitable[Any]]) -> Any:
        """The entry for ``key``, or what ``loader()`` gives (kept for next time).

        Concurrent misses for one key share one load: a thousand connections that
        authenticate with one key at once cost one query, not a thousand queued on
        the database thread. An exception reaches every caller and is not kept.
        """
        value = self.get(key)
        if value is not MISSING:
            return value
        loop = asyncio.get_running_loop()
        task = self._loading.get((loop, key))
        if task is None:
            task = loop.create_task(self._load(loop, key, loader, self._generation))
            self._loading[loop, key] = task
        return await asyncio.shield(task)

    async def _load(self, loop, key: Any, loader, generation: int) -> Any:
        try:
            value = await loader()
        finally:
            del self._loading[loop, key]
        if generation == self._generation:
            self.put(key, value)
        return value
