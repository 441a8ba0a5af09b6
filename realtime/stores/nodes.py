"""Which server processes are alive: each one's identity, and a registry in Redis.

Internal. Every hub gets a :class:`Node` when it starts on its broker: the host name,
the process id and a random id, which the server API reports. With a Redis layer each
node renews an entry in one sorted set every ``BEAT_INTERVAL`` seconds; an entry not
renewed for ``NODE_TTL`` seconds is swept. A caller of the server API reads the
registry first, so it knows whom to wait for and can say which processes did not
answer (a process that hangs, or is killed, stays listed until its entry expires). A
process that stops in an orderly way (SIGTERM, the end of the interpreter) takes its
entry out at once: a rolling deploy does not leave processes that seem not to answer.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

from .redis import RedisConnection

logger = logging.getLogger("realtime")

KEY = "realtime:nodes"
FORGET_TIMEOUT = 1.0  # seconds the exiting process gives Redis to take its entry out
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

# KEYS: the registry. ARGV: the entry.
FORGET = """
redis.call('ZREM', KEYS[1], ARGV[1])
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

    async def forget(self, node: Node) -> None:
        await self.redis.run(FORGET, [KEY], [node.entry()], "the node registry")

    def forget_when_stopping(self, node: Node, loop: asyncio.AbstractEventLoop) -> None:
        """Take ``node`` out of the registry when its process stops in an orderly way.

        Two hooks, as servers stop in two ways: SIGTERM, when the server has a handler
        of its own (uvicorn, hypercorn, Twisted's for daphne), is chained: the entry is
        removed on the server's loop while the server shuts down, then the server's
        handler runs as before (uvicorn ends by re-raising SIGTERM, which runs no exit
        handlers); and the interpreter's exit, on a loop and a connection of its own
        since the server's loop is gone by then.
        """
        host = self.redis.host

        def at_exit() -> None:
            try:
                asyncio.run(asyncio.wait_for(RedisNodes(RedisConnection(host)).forget(node), FORGET_TIMEOUT))
            except Exception as error:  # it expires within NODE_TTL anyway
                logger.debug("realtime: could not take this process out of the node registry: %s", error)

        atexit.register(at_exit)
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return  # the default action: the process ends at once, and the entry expires

        def on_sigterm(signum, frame) -> None:
            try:
                loop.call_soon_threadsafe(lambda: loop.create_task(self.forget(node)))
            except RuntimeError:  # that loop has closed
                pass
            previous(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)

    async def live(self) -> list[Node]:
        entries = await self.redis.run(LIVE, [KEY], [time.time()], "the node registry")
        return [node for node in map(from_entry, entries) if node is not None]
