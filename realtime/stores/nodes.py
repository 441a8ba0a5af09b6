"""Which server processes are alive: each one's identity, and a registry in Redis.

Internal. Every hub gets a :class:`Node` when it starts on its broker: the host name,
the process id and a random id, which the server API reports. With a Redis layer each
node renews an entry in one sorted set every ``BEAT_INTERVAL`` seconds; an entry not
renewed for ``NODE_TTL`` seconds is swept. A caller of the server API reads the
registry first, so it knows whom to wait for and can say which processes did not
answer (a process that hangs stays listed until its entry expires).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from dataclasses import dataclass, field

from .redis import RedisConnection

KEY = "realtime:nodes"
NODE_TTL = 10.0
BEAT_INTERVAL = 3.0


@dataclass(frozen=True)
class Node:
    """One hub of one server process (a process usually has one hub)."""

    id: str
    hostname: str
    pid: int
    # The hub's layer channel, for commands to this node alone ("" without a layer).
    channel: str = ""
    started: float = field(default_factory=time.time)

    def identity(self) -> dict:
        """What replies say about the node."""
        return {"id": self.id, "hostname": self.hostname, "pid": self.pid}

    def entry(self) -> str:
        return json.dumps({**self.identity(), "channel": self.channel}, separators=(",", ":"))


def new_node(channel: str = "") -> Node:
    return Node(secrets.token_hex(8), socket.gethostname(), os.getpid(), channel)


def from_entry(entry: str) -> Node | None:
    try:
        value = json.loads(entry)
        return Node(str(value["id"]), str(value["hostname"]), int(value["pid"]), str(value["channel"]), 0.0)
    except (ValueError, KeyError, TypeError):
        return None


# KEYS: the registry. ARGV: now, deadline, entry.
BEAT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) - tonumber(ARGV[1])) + 1)
return 0
"""

# KEYS: the registry. ARGV: now.
LIVE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


class RedisNodes:
    def __init__(self, redis: RedisConnection) -> None:
        self.redis = redis

    async def beat(self, node: Node, ttl: float = NODE_TTL) -> None:
        now = time.time()
        await self.redis.run(BEAT, [KEY], [now, now + ttl, node.entry()], "the node registry")

    async def live(self) -> list[Node]:
        entries = await self.redis.run(LIVE, [KEY], [time.time()], "the node registry")
        return [node for node in map(from_entry, entries) if node is not None]
