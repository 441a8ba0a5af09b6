"""Which channel configuration a name resolves to, with a process-local cache.

A name resolves to the nearest row in its lineage (the name, its parent, ...) that is
either the name itself or covers its sub-channels. If that row is inactive, or there
is none, the name is not a usable channel. So deactivating ``rooms`` closes every room
below it, while a row of its own for ``rooms/vip`` gives that room its own settings.

The publish path asks this module on every publication; the cache keeps that free of
database queries. Entries live for ``REVALIDATE_INTERVAL`` seconds and are dropped
whenever channels change.
"""

from __future__ import annotations

from dataclasses import dataclass

from asgiref.sync import sync_to_async

from .cache import MISSING, TTLCache
from .names import lineage

CACHE_MAX_ENTRIES = 50_000
QUERY_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """What the hot path needs to know about a channel row."""

    id: int
    name: str
    include_subchannels: bool
    anonymous_read: bool
    history_size: int = 0
    history_ttl: int = 24 * 3600  # the model default
    history_durable: bool = False
    presence: bool = False
    join_leave: bool = False

    @property
    def has_history(self) -> bool:
        return self.history_size > 0

    def as_list(self) -> list:
        """A compact form for layer messages (msgpack carries lists, not dataclasses)."""
        return [getattr(self, field) for field in FIELDS]

    @classmethod
    def from_list(cls, values: list) -> ChannelInfo:
        return cls(*values)


FIELDS = tuple(ChannelInfo.__dataclass_fields__)


def _pick(name: str, rows: dict) -> ChannelInfo | None:
    for candidate in lineage(name):
        row = rows.get(candidate)
        if row is None:
            continue
        if candidate != name and not row.include_subchannels:
            continue
        if not row.is_active:
            return None
        return ChannelInfo(*(getattr(row, "pk" if field == "id" else field) for field in FIELDS))
    return None


def resolve_many(names) -> dict[str, ChannelInfo | None]:
    """Resolve several names with as few queries as possible (synchronous)."""
    from .models import Channel

    names = list(names)
    wanted = sorted({candidate for name in names for candidate in lineage(name)})
    rows = {}
    for start in range(0, len(wanted), QUERY_CHUNK):
        for row in Channel.objects.filter(name__in=wanted[start : start + QUERY_CHUNK]):
            rows[row.name] = row
    return {name: _pick(name, rows) for name in names}


def resolve(name: str) -> ChannelInfo | None:
    return resolve_many([name])[name]


cache = TTLCache(CACHE_MAX_ENTRIES)


async def aresolve(name: str) -> ChannelInfo | None:
    """Resolve ``name`` through the cache; at most one query on a miss."""
    info = cache.get(name)
    if info is not MISSING:
        return info
    info = await sync_to_async(resolve)(name)
    cache.put(name, info)
    return info


# Not a channel name (names cannot hold NUL), so it never meets a real entry.
_ANONYMOUS_KEY = "\0anonymous-read"


def _anonymous_read_anywhere() -> bool:
    from .models import Channel

    return Channel.objects.filter(is_active=True, anonymous_read=True).exists()


async def anonymous_read_anywhere() -> bool:
    """Whether any active channel may be read without credentials (cached like names)."""
    found = cache.get(_ANONYMOUS_KEY)
    if found is MISSING:
        found = await sync_to_async(_anonymous_read_anywhere)()
        cache.put(_ANONYMOUS_KEY, found)
    return found
