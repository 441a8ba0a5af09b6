"""Presence: who is subscribed to a channel, across every server process.

A *member* is a user (when the connection's token names one) or else a single
connection; a user with several tabs is one member with several connections. Each
connection is an *entry* with an expiry that its process renews every third of
``PRESENCE_TTL``; a process that dies without saying goodbye stops renewing, and its
entries are swept once they expire. Adding, removing and sweeping report which members
joined or left, for the channel's join and leave events.

Each call says what it changed (a :class:`Change`): the members that joined or left, and
whether the channel went from no members to some (*occupied*) or back (*vacated*). The
Redis scripts decide this atomically, so across every process each change is reported
once, to the one process whose call made it; that process announces it (join and leave
notices, the cluster-wide signals, webhooks).

Two stores share one interface: :class:`MemoryPresence` for the embedded default
(one process: nothing can vanish without a goodbye) and :class:`RedisPresence`.

Internal.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from .redis import RedisShards

KEY_PREFIX = "realtime:presence:"
SWEEP_BATCH = 100


@dataclass(frozen=True, slots=True)
class Change:
    """What one presence call changed, in this order: ``left`` (swept or removed), the
    channel ``vacated``, ``occupied`` again, and ``joined`` (the member added, if new)."""

    left: list[dict] = field(default_factory=list)
    joined: dict | None = None
    occupied: bool = False
    vacated: bool = False


def _change(left: list, before: int, after: int, joined: dict | None = None) -> Change:
    """``before``: members before the call (and its sweep); ``after``: members after it."""
    middle = after - (1 if joined is not None else 0)  # after the sweep, before the join
    return Change(
        left=left,
        joined=joined,
        occupied=joined is not None and middle == 0,
        vacated=before > 0 and middle == 0,
    )


def member_key(client: str, user: dict | None) -> str:
    if user is not None and user.get("id") is not None:
        return f"user:{user['id']}"
    return f"client:{client}"


def _member(client: str, user: dict | None) -> dict:
    return {"client": client, "user": user}


def _group(entries) -> list[dict]:
    """Entries ``(client, user)`` -> members ``{"user", "clients"}``, in a stable order."""
    members: dict[str, dict] = {}
    for client, user in entries:
        member = members.setdefault(member_key(client, user), {"user": user, "clients": []})
        member["clients"].append(client)
    for member in members.values():
        member["clients"].sort()
    return [members[key] for key in sorted(members)]


class MemoryPresence:
    def __init__(self) -> None:
        self._channels: dict[str, dict[str, dict | None]] = {}

    def _count(self, channel: str) -> int:
        return len({member_key(client, user) for client, user in self._channels.get(channel, {}).items()})

    async def add(self, channel: str, client: str, user: dict | None, ttl: float) -> Change:
        entries = self._channels.setdefault(channel, {})
        if client in entries:
            return Change()
        before = self._count(channel)
        entries[client] = user
        after = self._count(channel)
        return _change([], before, after, _member(client, user) if after > before else None)

    async def remove(self, channel: str, client: str) -> Change:
        entries = self._channels.get(channel)
        if not entries or client not in entries:
            return Change()
        user = entries.pop(client)
        key = member_key(client, user)
        if not entries:
            del self._channels[channel]
            return Change([_member(client, user)], vacated=True)
        if any(member_key(other, u) == key for other, u in entries.items()):
            return Change()
        return Change([_member(client, user)])

    async def members(self, channel: str) -> tuple[list[dict], Change]:
        return _group(self._channels.get(channel, {}).items()), Change()

    async def refresh(self, channel: str, clients: list[str], ttl: float) -> Change:
        return Change()


# KEYS: entries hash (client -> json), expiry zset (client -> deadline), members hash
# (member key -> connection count). Every script first sweeps expired entries and
# returns the members that left because of it (as entry json), and the number of
# members before the sweep and at the end.
SWEEP = """
local now = tonumber(ARGV[1])
local before = redis.call('HLEN', KEYS[3])
local left = {}
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, SWEEP_BATCH)
for _, client in ipairs(expired) do
  local entry = redis.call('HGET', KEYS[1], client)
  redis.call('HDEL', KEYS[1], client)
  redis.call('ZREM', KEYS[2], client)
  if entry then
    local key = cjson.decode(entry)['m']
    if redis.call('HINCRBY', KEYS[3], key, -1) <= 0 then
      redis.call('HDEL', KEYS[3], key)
      left[#left + 1] = entry
    end
  end
end
""".replace("SWEEP_BATCH", str(SWEEP_BATCH))

# ARGV: now, client, entry json, member key, deadline, key lifetime.
ADD = (
    SWEEP
    + """
local joined = 0
if redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3]) == 1 then
  if redis.call('HINCRBY', KEYS[3], ARGV[4], 1) == 1 then joined = 1 end
end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[2])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[6]) end
return {joined, left, before, redis.call('HLEN', KEYS[3])}
"""
)

# ARGV: now, client.
REMOVE = (
    SWEEP
    + """
local gone = false
local entry = redis.call('HGET', KEYS[1], ARGV[2])
if entry then
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[2])
  local key = cjson.decode(entry)['m']
  if redis.call('HINCRBY', KEYS[3], key, -1) <= 0 then
    redis.call('HDEL', KEYS[3], key)
    gone = entry
  end
end
return {gone, left, before, redis.call('HLEN', KEYS[3])}
"""
)

# ARGV: now.
MEMBERS = (
    SWEEP
    + """
return {redis.call('HVALS', KEYS[1]), left, before, redis.call('HLEN', KEYS[3])}
"""
)

# ARGV: now, deadline, key lifetime, clients...
REFRESH = (
    SWEEP
    + """
for i = 4, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then redis.call('ZADD', KEYS[2], ARGV[2], ARGV[i]) end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
end
return {0, left, before, redis.call('HLEN', KEYS[3])}
"""
)


def _keys(channel: str) -> list[str]:
    base = f"{KEY_PREFIX}{{{channel}}}"
    return [f"{base}:entries", f"{base}:expiry", f"{base}:members"]


def _decode(entry: str) -> dict:
    value = json.loads(entry)
    return _member(value["c"], value["u"])


class RedisPresence:
    """Entries in Redis, on the host (shard) that carries the channel's publications."""

    def __init__(self, redis: RedisShards) -> None:
        self.redis = redis

    async def _run(self, script: str, channel: str, args: list):
        first, left, before, after = await self.redis.of(channel).run(
            script, _keys(channel), [time.time(), *args], "presence"
        )
        return first, [_decode(entry) for entry in left], int(before), int(after)

    async def add(self, channel: str, client: str, user: dict | None, ttl: float) -> Change:
        entry = json.dumps({"c": client, "u": user, "m": member_key(client, user)}, separators=(",", ":"))
        args = [client, entry, member_key(client, user), time.time() + ttl, int(ttl * 3) + 1]
        joined, left, before, after = await self._run(ADD, channel, args)
        return _change(left, before, after, _member(client, user) if joined else None)

    async def remove(self, channel: str, client: str) -> Change:
        gone, left, before, after = await self._run(REMOVE, channel, [client])
        if gone:
            left.append(_decode(gone))
        return Change(left, vacated=before > 0 and after == 0)

    async def members(self, channel: str) -> tuple[list[dict], Change]:
        entries, left, before, after = await self._run(MEMBERS, channel, [])
        decoded = [_decode(entry) for entry in entries]
        members = _group((member["client"], member["user"]) for member in decoded)
        return members, Change(left, vacated=before > 0 and after == 0)

    async def refresh(self, channel: str, clients: list[str], ttl: float) -> Change:
        _, left, before, after = await self._run(
            REFRESH, channel, [time.time() + ttl, int(ttl * 3) + 1, *clients]
        )
        return Change(left, vacated=before > 0 and after == 0)
