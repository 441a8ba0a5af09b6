"""Which channel configuration a name resolves to, with a process-local cache.

A name resolves to the nearest row in its lineage (the name, its parent, ...) that is
either the name itself or covers its sub-channels. If that row is inactive, or there
is none, the name is not a usable channel. So deactivating ``rooms`` closes every room
below it, while a row of its own for ``rooms/vip`` gives that room its own settings.

The publish path asks this module on every publication; the cache keeps that free of
database queries (see :func:`aresolve`). Entries live for ``REVALIDATE_INTERVAL``
seconds and are dropped whenever channels change.
"""

from __future__ import annotations

from dataclasses import dataclass

from asgiref.sync import sync_to_async

from .cache import TTLCache
from .names import lineage

CACHE_MAX_ENTRIES = 50_000
QUERY_CHUNK = 500
# With at most this many channel rows, the cache holds all of them (see aresolve).
SNAPSHOT_MAX_ROWS = 10_000


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
    personal: bool = False
    webhook_publications: bool = False
    bubble: bool = False
    cloudevents: bool = False
    cloudevents_source: str = ""

    @property
    def has_history(self) -> bool:
        return self.history_size > 0

    def owner(self, name: str) -> str | None:
        """On a personal row, whose channel ``name`` is: the segment after the row's name
        (``users/42/inbox`` under ``users`` -> ``"42"``); None for the row's own name, or
        when the row is not personal."""
        if not self.personal or not name.startswith(self.name + "/"):
            return None
        return name[len(self.name) + 1 :].split("/", 1)[0]

    def as_list(self) -> list:
        """A compact form for layer messages (msgpack carries lists, not dataclasses)."""
        return [getattr(self, field) for field in FIELDS]

    @classmethod
    def from_list(cls, values: list) -> ChannelInfo:
        return cls(*values)


FIELDS = tuple(ChannelInfo.__dataclass_fields__)


def _entry(row) -> tuple[bool, bool, ChannelInfo]:
    info = ChannelInfo(*(getattr(row, "pk" if field == "id" else field) for field in FIELDS))
    return row.is_active, row.include_subchannels, info


def _pick(name: str, rows: dict) -> ChannelInfo | None:
    """``rows``: channel name -> ``_entry`` of its row, for (at least) ``name``'s lineage."""
    for candidate in lineage(name):
        entry = rows.get(candidate)
        if entry is None:
            continue
        active, subchannels, info = entry
        if candidate != name and not subchannels:
            continue
        return info if active else None
    return None


def resolve_many(names) -> dict[str, ChannelInfo | None]:
    """Resolve several names with as few queries as possible (synchronous)."""
    from .models import Channel

    names = list(names)
    wanted = sorted({candidate for name in names for candidate in lineage(name)})
    rows = {}
    for start in range(0, len(wanted), QUERY_CHUNK):
        for row in Channel.objects.filter(name__in=wanted[start : start + QUERY_CHUNK]):
            rows[row.name] = _entry(row)
    return {name: _pick(name, rows) for name in names}


def resolve(name: str) -> ChannelInfo | None:
    return resolve_many([name])[name]


def _all_rows() -> dict | None:
    """Every channel row, or None when there are more than ``SNAPSHOT_MAX_ROWS``."""
    from .models import Channel

    rows = list(Channel.objects.all()[: SNAPSHOT_MAX_ROWS + 1])
    if len(rows) > SNAPSHOT_MAX_ROWS:
        return None
    return {row.name: _entry(row) for row in rows}


cache = TTLCache(CACHE_MAX_ENTRIES)
# Not channel names (names cannot hold NUL), so they never meet a real entry.
_ROWS_KEY = "\0rows"
_ANONYMOUS_KEY = "\0anonymous-read"


async def aresolve(name: str) -> ChannelInfo | None:
    """Resolve ``name`` through the cache.

    Channels are few (sub-channels need no rows), so the cache usually holds every row,
    loaded in one query: resolving a name, even one never seen before (``rooms/4711``),
    then costs no query and no thread hop. A name the rows held do not resolve is looked
    up on its own (it may belong to a channel created a moment ago, before the change
    was announced), and that answer is kept too. With more than ``SNAPSHOT_MAX_ROWS``
    rows, every name is resolved and kept one by one.
    """
    found = cached(name)
    if found is not None:
        return found  # the usual case: nothing to await, nothing made
    rows = await cache.load(_ROWS_KEY, sync_to_async(_all_rows))
    if rows is not None:
        info = _pick(name, rows)
        if info is not None:
            return info
    return await cache.load(name, lambda: sync_to_async(resolve)(name))


def cached(name: str) -> ChannelInfo | None:
    """What :func:`aresolve` would answer from the cache alone, without awaiting; None
    when the cache cannot say (the caller then awaits :func:`aresolve`)."""
    rows = cache.get(_ROWS_KEY, None)
    if rows is not None:
        info = _pick(name, rows)
        if info is not None:
            return info
    found = cache.get(name, None)
    return found if isinstance(found, ChannelInfo) else None


def _anonymous_read_anywhere() -> bool:
    from .models import Channel

    return Channel.objects.filter(is_active=True, anonymous_read=True).exists()


async def anonymous_read_anywhere() -> bool:
    """Whether any active channel may be read without credentials (cached like names)."""
    return await cache.load(_ANONYMOUS_KEY, sync_to_async(_anonymous_read_anywhere))
