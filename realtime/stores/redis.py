"""Redis for realtime's own commands: one client per event loop, and the one place where
Redis errors become :class:`~realtime.errors.Unavailable`.

Internal. History, presence and the broker all talk to Redis through redis-py, whose
errors do not subclass Python's ``ConnectionError`` and include a ``TimeoutError`` of
its own; :func:`unavailable` maps every one of them (and the built-in network errors),
so each store answers ``unavailable`` for the same failures.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from .. import stats
from ..errors import Unavailable


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means Redis did not do what it was asked (down, hung, refusing)."""
    if isinstance(error, (TimeoutError, OSError, ConnectionError)):
        return True
    try:
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover - redis comes with channels-redis
        return False
    return isinstance(error, RedisError)


@contextmanager
def unavailable(what: str) -> Iterator[None]:
    """Turn a Redis failure inside the block into ``Unavailable("<what> is unreachable...")``."""
    try:
        yield
    except Unavailable:
        raise
    except Exception as error:
        if is_unavailable(error):
            stats.counters.redis_errors += 1
            raise Unavailable(f"{what} is unreachable: {error}") from error
        raise


class RedisConnection:
    """Clients of one Redis host, one per event loop (redis-py's asyncio clients are
    bound to the loop that made them), with Lua scripts registered once per client."""

    def __init__(self, host: dict) -> None:
        self.host = host
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def client(self):
        from channels_redis.utils import create_pool
        from redis import asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            host = {
                "socket_connect_timeout": 5,
                "socket_timeout": 5,
                **self.host,
                "decode_responses": True,
                # After Redis restarts, pooled connections are dead and the first command
                # on each fails: try once more on a fresh one. Only on connection errors,
                # which mean the command never ran (a timeout might mean it did).
                "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                "retry_on_error": [RedisConnectionError],
            }
            entry = self._clients[loop] = (aioredis.Redis(connection_pool=create_pool(host)), {})
        return entry[0]

    async def run(self, script: str, keys: list, args: list, what: str):
        """Run a Lua script (registered on first use); Redis failures are Unavailable."""
        client = self.client()
        scripts = self._clients[asyncio.get_running_loop()][1]
        registered = scripts.get(script)
        if registered is None:
            registered = scripts[script] = client.register_script(script)
        with unavailable(what):
            return await registered(keys=keys, args=args)
