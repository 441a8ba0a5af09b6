"""Channel history: the publications a channel keeps, numbered in its stream.

Each channel name with history (``Channel.history_size`` > 0) has a stream of
publications numbered within an epoch (``realtime.positions``). A client that remembers
a position can later ask for everything after it; if the epoch changed or the
publications were dropped, it is told the recovery is not complete rather than handed
a gap.

Two stores share one interface:

* :class:`MemoryHistory` for the embedded, single-process default;
* :class:`RedisHistory` when the channel layer is Redis: shared by every process and
  surviving server restarts. A Lua script numbers, stores and PUBLISHes a publication
  in one atomic step, so subscribers on every process see a channel's publications in
  offset order even when several processes publish at once (see ``docs/architecture.md``).

Stored entries are the frames subscribers received, offset and epoch included, so
replaying history never encodes anything again. Channels marked durable are also
mirrored to the database, and restored from it when the store has lost them: that is
:class:`realtime.stores.durable.DurableHistory`, a wrapper around either store. Here a
durable channel whose stream is missing raises :class:`StreamMissing` instead of
starting a new epoch, since the database knows the real one.

Internal.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from .. import protocol
from ..conf import settings
from ..errors import Unavailable
from ..positions import Position, new_epoch
from ..registry import ChannelInfo
from .redis import RedisShards

META_GRACE = 7 * 24 * 3600  # seconds a stream's epoch and offset outlive its last publication
KEY_PREFIX = "realtime:history:"
IDEMPOTENCY_PREFIX = "realtime:idem:"


class StreamMissing(Exception):
    """A durable channel's stream is not in the store: restore it from the database first."""


@dataclass(frozen=True, slots=True)
class Page:
    """Publications after some offset, as stored frames, in offset order."""

    frames: list[str]
    offsets: list[int]
    position: Position
    # False when publications after ``since`` were dropped (too old, too many, or the
    # epoch asked about is gone): what is here is not everything that was published.
    complete: bool
    # Unix time of the newest publication in ``frames`` (None when empty).
    last_time: float | None = None

    @property
    def more(self) -> bool:
        """True when publications after this page remain (ask again with ``since=next``)."""
        return bool(self.offsets) and self.offsets[-1] < self.position.offset

    @property
    def next(self) -> int | None:
        return self.offsets[-1] if self.more else None


def _expired(stamp: float, info: ChannelInfo, now: float) -> bool:
    return info.history_ttl > 0 and stamp + info.history_ttl <= now


# In memory -------------------------------------------------------------------------


class _MemoryStream:
    __slots__ = ("epoch", "offset", "entries", "touched")

    def __init__(self, epoch: str, offset: int, size: int) -> None:
        self.epoch = epoch
        self.offset = offset
        self.entries: deque[tuple[int, float, str]] = deque(maxlen=size)
        self.touched = time.time()


class MemoryHistory:
    """Streams in this process's memory: the embedded default, lost on restart
    (unless the channel is durable, in which case it is reloaded from the database)."""

    def __init__(self) -> None:
        self._streams: dict[str, _MemoryStream] = {}
        self._lock = threading.Lock()

    def _stream(self, name: str, info: ChannelInfo) -> _MemoryStream:
        stream = self._streams.get(name)
        now = time.time()
        if stream is not None and info.history_ttl and stream.touched + info.history_ttl + META_GRACE < now:
            # Forgotten, as Redis would forget it.
            with self._lock:
                self._streams.pop(name, None)
            stream = None
        if stream is None:
            if info.history_durable:
                raise StreamMissing(name)
            with self._lock:
                stream = self._streams.get(name)
                if stream is None:
                    stream = self._streams[name] = _MemoryStream(new_epoch(), 0, info.history_size)
        if stream.entries.maxlen != info.history_size:
            stream.entries = deque(stream.entries, maxlen=info.history_size)
        return stream

    async def append(self, name: str, frame: str, info: ChannelInfo, copies=(), middle=b"", **redis) -> tuple:
        """Number and keep a publication: ``(position, stamped frame)``.

        Nothing here suspends, so a caller that delivers right after the await delivers
        in numbering order. (``copies``, ``middle`` and the keyword options are the
        Redis store's; the in-memory broker deduplicates idempotency keys itself.)
        """
        stream = self._stream(name, info)
        now = time.time()
        with self._lock:
            stream.offset += 1
            offset = stream.offset
            stamped = protocol.stamp(frame, offset, stream.epoch)
            stream.entries.append((offset, now, stamped))
            stream.touched = now
        return Position(offset, stream.epoch), stamped

    async def read(self, name: str, info: ChannelInfo, since: int, limit: int, epoch: str | None) -> Page:
        stream = self._stream(name, info)
        with self._lock:
            entries = [entry for entry in stream.entries if entry[0] > since][:limit]
            position = Position(stream.offset, stream.epoch)
        return _page(entries, position, since, epoch, info)

    async def position(self, name: str, info: ChannelInfo) -> Position:
        stream = self._stream(name, info)
        return Position(stream.offset, stream.epoch)

    async def remove(self, name: str) -> None:
        """Forget the stream: its next publication starts a new epoch at offset 1."""
        with self._lock:
            self._streams.pop(name, None)

    async def restore(self, name: str, info: ChannelInfo, epoch: str, offset: int, rows: list) -> None:
        """Recreate a lost stream as the database kept it (unless it is back already)."""
        with self._lock:
            if name not in self._streams:
                stream = self._streams[name] = _MemoryStream(epoch, offset, info.history_size)
                stream.entries.extend(rows)


def _page(entries, position: Position, since: int, epoch: str | None, info: ChannelInfo) -> Page:
    """A page from ``(offset, time, frame)`` entries after ``since``, in offset order.

    Stored offsets are contiguous (a log is only ever trimmed from its oldest end), so
    nothing is missing exactly when the first entry still kept is ``since + 1``.
    """
    if epoch is not None and epoch != position.epoch:
        return Page([], [], position, complete=False)
    now = time.time()
    live = [entry for entry in entries if not _expired(entry[1], info, now)]
    complete = since >= position.offset or (bool(live) and live[0][0] == since + 1)
    return Page(
        [entry[2] for entry in live],
        [entry[0] for entry in live],
        position,
        complete,
        live[-1][1] if live else None,
    )


# In Redis --------------------------------------------------------------------------

# KEYS: meta hash (epoch, offset), log sorted set (score offset, member "time:frame"),
# and the publication's idempotency record if it has a key. ARGV: 1 frame (unstamped),
# 2 size, 3 ttl, 4 new epoch, 5 durable ("1": never invent an epoch, the database holds
# it), 6 meta grace, 7 msgpack middle (between offset and epoch), 8 deadline (Unix
# microseconds: later than this, Redis must not publish it), 9 idempotency record
# lifetime (ms), 10 copy count, then pairs of (pubsub channel, msgpack head).
# Returns {offset, epoch, stamped frame}; {-1} when a durable stream must be restored;
# {-2, offset, epoch, stored frame or nil} for a duplicate of a publication made within
# the window (nothing done); {-3} past the deadline (nothing done). The shebang makes
# Redis refuse the script, before it runs, on a replica or when it cannot write.
APPEND = """#!lua
local clock = redis.call('TIME')
if tonumber(clock[1]) * 1000000 + tonumber(clock[2]) > tonumber(ARGV[8]) then return {-3} end
if #KEYS == 3 then
  local first = redis.call('GET', KEYS[3])
  if first then
    local split = string.find(first, ':', 1, true)
    local at = string.sub(first, 1, split - 1)
    local kept = redis.call('ZRANGEBYSCORE', KEYS[2], at, at)
    local frame = false
    if kept[1] then frame = string.sub(kept[1], string.find(kept[1], ':', 1, true) + 1) end
    return {-2, tonumber(at), string.sub(first, split + 1), frame}
  end
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  if ARGV[5] == '1' then return {-1} end
  epoch = ARGV[4]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local seconds = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local digits = string.format('%020d', offset)
local frame = string.sub(ARGV[1], 1, -3) .. ',"offset":' .. string.format('%d', offset)
  .. ',"epoch":"' .. epoch .. '"}}'
redis.call('ZADD', KEYS[2], offset, string.format('%.6f', seconds) .. ':' .. frame)
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[2]) + 1))
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  for _ = 1, 1000 do
    local first = redis.call('ZRANGE', KEYS[2], 0, 0)
    if #first == 0 then break end
    local stamp = tonumber(string.match(first[1], '^([%d.]+):'))
    if stamp + ttl > seconds then break end
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, 0)
  end
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[1], ttl + tonumber(ARGV[6]))
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
if #KEYS == 3 then redis.call('SET', KEYS[3], string.format('%d', offset) .. ':' .. epoch, 'PX', ARGV[9]) end
for i = 1, tonumber(ARGV[10]) do
  redis.call('PUBLISH', ARGV[9 + 2 * i], ARGV[10 + 2 * i] .. digits .. ARGV[7] .. epoch)
end
return {offset, epoch, frame}
"""

# KEYS: meta, log. ARGV: 1 since, 2 limit, 3 new epoch, 4 durable, 5 ttl, 6 meta grace.
# Returns {epoch, offset, entries...}, or {-1} to restore first.
READ = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  if ARGV[4] == '1' then return {-1} end
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  local ttl = tonumber(ARGV[5])
  if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl + tonumber(ARGV[6])) end
end
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local entries = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
local result = {epoch, offset}
for i = 1, #entries do result[#result + 1] = entries[i] end
return result
"""

# KEYS: meta, log. ARGV: epoch, offset, ttl, meta grace, then (offset, member) pairs.
RESTORE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'offset', ARGV[2])
redis.call('DEL', KEYS[2])
for i = 5, #ARGV, 2 do redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i + 1]) end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl + tonumber(ARGV[4]))
  if #ARGV > 4 then redis.call('EXPIRE', KEYS[2], ttl) end
end
return 1
"""


# KEYS: meta, log. Forget a stream (the server API's history_remove).
REMOVE = """#!lua
redis.call('DEL', KEYS[1], KEYS[2])
return 0
"""


def keys_for(name: str) -> list[str]:
    # The braces are a Redis Cluster hash tag: both keys of a stream live together.
    return [f"{KEY_PREFIX}{{{name}}}:meta", f"{KEY_PREFIX}{{{name}}}:log"]


def record_key(name: str, idempotency_key: str) -> str:
    """Where Redis remembers a publication's idempotency key, next to the channel's stream."""
    return f"{IDEMPOTENCY_PREFIX}{{{name}}}:{idempotency_key}"


def micros(deadline: float) -> int:
    """A Unix time as the whole microseconds the scripts compare with Redis's ``TIME``."""
    return int(deadline * 1_000_000)


def _split_entry(member: str) -> tuple[float, str]:
    stamp, _, frame = member.partition(":")
    return float(stamp), frame


class RedisHistory:
    """Streams in Redis, shared by every server process; each channel's stream is on
    the host (shard) that carries its publications."""

    def __init__(self, redis: RedisShards) -> None:
        self.redis = redis

    async def _call(self, script: str, name: str, args: list, keys: list | None = None, **options):
        keys = keys or keys_for(name)
        result = await self.redis.of(name).run(script, keys, args, "history", **options)
        if result[0] == -1:
            raise StreamMissing(name)
        return result

    async def append(
        self,
        name: str,
        frame: str,
        info: ChannelInfo,
        copies=(),
        middle=b"",
        *,
        deadline: float | None = None,
        idempotency_key: str | None = None,
        replicas: int = 0,
    ) -> tuple:
        """Number and keep a publication, and PUBLISH each ``(pubsub channel, msgpack
        head)`` copy in the same atomic step: ``(position, stamped frame)``.

        Redis refuses it after ``deadline`` (Unix time; ``Unavailable``). A publication
        whose ``idempotency_key`` was used on the channel within ``IDEMPOTENCY_WINDOW``
        is not published again: the first one's position is returned, with its frame if
        the stream still keeps it (else None). ``replicas``: see ``RedisConnection.run``.
        """
        if deadline is None:
            deadline = time.time() + settings.REDIS_TIMEOUT
        keys = keys_for(name)
        if idempotency_key is not None:
            keys.append(record_key(name, idempotency_key))
        args = [frame, info.history_size, info.history_ttl, new_epoch(), "1" if info.history_durable else "0"]
        args += [META_GRACE, middle, micros(deadline), int(settings.IDEMPOTENCY_WINDOW * 1000), len(copies)]
        for channel, head in copies:
            args += [channel, head]
        result = await self._call(APPEND, name, args, keys, deadline=deadline, replicas=replicas)
        if result[0] == -3:
            raise Unavailable("history: Redis got to the publication after its deadline; not published")
        if result[0] == -2:
            return Position(int(result[1]), result[2]), (result[3] if len(result) > 3 else None)
        return Position(int(result[0]), result[1]), result[2]

    async def remove(self, name: str) -> None:
        """Forget the stream: its next publication starts a new epoch at offset 1."""
        await self.redis.of(name).run(REMOVE, keys_for(name), [], "history")

    async def restore(self, name: str, info: ChannelInfo, epoch: str, offset: int, rows: list) -> None:
        args = [epoch, offset, info.history_ttl, META_GRACE]
        for row_offset, stamp, frame in rows:
            args += [row_offset, f"{stamp:.6f}:{frame}"]
        await self.redis.of(name).run(RESTORE, keys_for(name), args, "history")

    async def read(self, name: str, info: ChannelInfo, since: int, limit: int, epoch: str | None) -> Page:
        args = [max(since, 0), limit, new_epoch(), "1" if info.history_durable else "0"]
        args += [info.history_ttl, META_GRACE]
        result = await self._call(READ, name, args)
        position = Position(int(result[1]), result[0])
        entries = []
        for member in result[2:]:
            stamp, frame = _split_entry(member)
            entries.append((_offset_of(frame), stamp, frame))
        return _page(entries, position, since, epoch, info)

    async def position(self, name: str, info: ChannelInfo) -> Position:
        return (await self.read(name, info, 2**62, 1, None)).position


def _offset_of(frame: str) -> int:
    """The offset stamped near the end of a stored frame (``...,"offset":N,"epoch":"E"}}``)."""
    start = frame.rindex(',"offset":') + 10
    return int(frame[start : frame.index(",", start)])
