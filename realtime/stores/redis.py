"""Redis for realtime's own commands: clients per host and event loop, the shards a
layer's hosts form, and the one place where Redis errors become
:class:`~realtime.errors.Unavailable` or :class:`~realtime.errors.UnknownOutcome`.

Internal. History, presence and the broker all talk to Redis through
:meth:`RedisConnection.run`, which sends one Lua script (and, for writes that replicas
must confirm, a ``WAIT`` in the same round trip) and knows how far each request got:

* not sent (no connection, Redis refused it before running it: ``READONLY``,
  ``NOREPLICAS``, ``OOM``, ``LOADING``), or not answered within the request's time while
  its script carries a deadline it checks against Redis's clock (so a late run refuses
  itself): ``Unavailable``, it was not done and never will be;
* sent, then the connection broke before the answer (Redis died, a failover), or the
  script ran but replicas did not confirm it in time: ``UnknownOutcome``.

Every request is bounded by ``REDIS_TIMEOUT`` (plus ``REDIS_CLOCK_SKEW`` for one with a
deadline), whatever socket timeout the layer's hosts configure. After a request times
out, requests to that host fail at once until Redis answers a ``PING`` again (sent in
the background, every :data:`PING_EVERY` seconds while it fails): a connection's queued
frames are then answered at once instead of each waiting out the timeout in turn, and
requests go through again as soon as Redis does.

A host is a channels_redis host dict: ``{"address": "redis://..."}``, ``{"host": ...,
"port": ...}``, or Sentinel's ``{"sentinels": [(host, port), ...], "master_name": ...}``
(the master is looked up on every new connection, so a failover needs no restart).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from .. import stats
from ..conf import settings
from ..errors import Unavailable, UnknownOutcome

logger = logging.getLogger("realtime")

PING_EVERY = 0.2  # seconds between PINGs to a host that stopped answering
MAX_CONNECTIONS = 1000  # per host and event loop, unless the host dict says otherwise


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
    except (Unavailable, UnknownOutcome):
        raise
    except Exception as error:
        if is_unavailable(error):
            stats.counters.redis_errors += 1
            raise Unavailable(f"{what} is unreachable: {error}") from error
        raise


@contextmanager
def unconfirmed(what: str, *, begun: bool = False) -> Iterator[None]:
    """Failures of a publication sent without a deadline (through the layer's own
    ``group_send``): a timeout means Redis may still run it, and so does any failure once
    part of it is done (``begun``): ``UnknownOutcome``; other failures ``Unavailable``."""
    try:
        yield
    except (Unavailable, UnknownOutcome):
        raise
    except Exception as error:
        if is_unavailable(error):
            stats.counters.redis_errors += 1
        if isinstance(error, TimeoutError) or (begun and is_unavailable(error)):
            raise UnknownOutcome(f"{what} did not confirm the publication: {error!r}") from error
        if is_unavailable(error):
            raise Unavailable(f"{what} is unreachable: {error}") from error
        raise


@dataclass(eq=False)
class _Client:
    """One host's connection pool on one event loop, and whether it is failing fast."""

    pool: object
    loop: asyncio.AbstractEventLoop
    # A request timed out: fail at once until the pinger hears from Redis again.
    paused: bool = False
    pinger: asyncio.Task | None = None
    loaded: set = field(default_factory=set)  # script digests known to be loaded


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA1, for EVALSHA."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> Script:
        return cls(source, hashlib.sha1(source.encode()).hexdigest())


_scripts: dict[str, Script] = {}


def script(source: str) -> Script:
    found = _scripts.get(source)
    if found is None:
        found = _scripts[source] = Script.of(source)
    return found


class RedisConnection:
    """Clients of one Redis host (or Sentinel-managed master), one per event loop:
    redis-py's asyncio clients are bound to the loop that made them."""

    def __init__(self, host: dict) -> None:
        self.host = host
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _client(self) -> _Client:
        from channels_redis.utils import create_pool
        from redis.maint_notifications import MaintNotificationsConfig

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            host = {
                "socket_connect_timeout": 5,
                "max_connections": MAX_CONNECTIONS,
                **self.host,
                # Requests are bounded by REDIS_TIMEOUT here, whatever the layer's
                # hosts say: a shorter socket timeout would answer before a
                # publication's deadline, and could not tell what happened.
                "socket_timeout": None,
                "decode_responses": True,
            }
            # No retries inside redis-py: resending after a broken connection could run a
            # publication twice. A pooled connection whose server went away is noticed
            # (and replaced) when it is taken from the pool, before anything is sent.
            host.pop("retry", None)
            host.pop("retry_on_error", None)
            host.pop("retry_on_timeout", None)
            # With maintenance notifications on ("auto", redis-py 8's default), the pool
            # skips that check on taking a connection.
            host["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
            client = self._clients[loop] = _Client(create_pool(host), loop)
        return client

    async def run(
        self,
        source: str,
        keys: Sequence,
        args: Sequence,
        what: str,
        *,
        deadline: float | None = None,
        replicas: int = 0,
    ):
        """Run a Lua script and return its reply.

        ``deadline`` (Unix time, for scripts that check it against Redis's ``TIME`` and
        refuse to run after it) lets a timeout answer ``Unavailable``; without one, a
        script that was sent but not answered is an unknown outcome only if it writes
        what matters, so callers without a deadline get ``Unavailable`` either way.
        ``replicas`` > 0 adds ``WAIT replicas REDIS_WAIT_TIMEOUT`` in the same round trip.
        """
        client = self._client()
        if client.paused:
            raise Unavailable(
                f"{what} is unreachable: Redis stopped answering; waiting for it to answer again"
            )
        limit = settings.REDIS_TIMEOUT
        if deadline is not None:
            limit += settings.REDIS_CLOCK_SKEW
        wait_ms = 0
        if replicas:
            wait_ms = max(1, int(settings.REDIS_WAIT_TIMEOUT * 1000))
            limit += wait_ms / 1000
        stage = ["connecting"]
        try:
            async with asyncio.timeout(limit):
                try:
                    reply = await self._send(client, script(source), keys, args, replicas, wait_ms, stage)
                except Exception as error:
                    if deadline is not None or stage[0] == "ran" or not isinstance(error, _broken_errors()):
                        raise
                    # Reads and presence updates are safe to run twice: after Redis
                    # restarted, a connection may break before the pool noticed it was dead.
                    logger.debug("realtime: retrying %s on a fresh connection: %s", what, error)
                    stage[0] = "connecting"
                    reply = await self._send(client, script(source), keys, args, replicas, wait_ms, stage)
        except TimeoutError as error:
            self._pause(client)
            if stage[0] == "ran":
                raise UnknownOutcome(
                    f"{what}: Redis ran it, but replicas did not confirm it within "
                    f"{settings.REDIS_WAIT_TIMEOUT}s"
                ) from error
            raise Unavailable(f"{what} is unreachable: no answer from Redis within {limit:g}s") from error
        except Exception as error:
            self._raise(error, stage[0], deadline is not None, what)
            raise
        return reply

    def _pause(self, client: _Client) -> None:
        client.paused = True
        if client.pinger is None or client.pinger.done():
            client.pinger = client.loop.create_task(self._ping(client))

    async def _ping(self, client: _Client) -> None:
        """PING until Redis answers, then let requests through again."""
        while True:
            try:
                async with asyncio.timeout(settings.REDIS_TIMEOUT):
                    connection = await client.pool.get_connection()
                    try:
                        await connection.send_command("PING")
                        await connection.read_response()
                    finally:
                        await client.pool.release(connection)
            except Exception:
                await asyncio.sleep(PING_EVERY)
                continue
            client.paused = False
            return

    async def _send(self, client: _Client, code: Script, keys, args, replicas: int, wait_ms: int, stage):
        from redis.exceptions import NoScriptError, ResponseError

        pool = client.pool
        connection = await pool.get_connection()
        try:
            for attempt in range(2):
                loaded = attempt == 0 and code.sha in client.loaded
                call = ("EVALSHA", code.sha) if loaded else ("EVAL", code.source)
                commands = [(*call, len(keys), *keys, *args)]
                if replicas:
                    commands.append(("WAIT", replicas, wait_ms))
                stage[0] = "sending"
                await connection.send_packed_command(connection.pack_commands(commands))
                stage[0] = "sent"
                try:
                    reply = await connection.read_response()
                except ResponseError as error:
                    if replicas:
                        await connection.read_response()  # the WAIT after it
                    if not isinstance(error, NoScriptError):
                        raise
                    client.loaded.discard(code.sha)
                    continue
                stage[0] = "ran"
                client.loaded.add(code.sha)
                if replicas:
                    acknowledged = await connection.read_response()
                    if acknowledged < replicas:
                        raise _NotReplicated(acknowledged)
                return reply
            raise AssertionError("unreachable: EVAL never answers NOSCRIPT")  # pragma: no cover
        finally:
            await pool.release(connection)

    def _raise(self, error: Exception, stage: str, has_deadline: bool, what: str) -> None:
        """Re-raise a failed request's error as what it means for the caller."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import ReadOnlyError, ResponseError

        stats.counters.redis_errors += 1
        if isinstance(error, _NotReplicated):
            raise UnknownOutcome(
                f"{what}: Redis ran it, but only {error.args[0]} replica(s) confirmed it "
                f"within {settings.REDIS_WAIT_TIMEOUT}s"
            ) from error
        if isinstance(error, ResponseError):
            # Refused before the script ran (READONLY after a failover, NOREPLICAS, OOM,
            # LOADING), or the script failed (a bug: it stops before writing anything).
            raise Unavailable(f"{what} is unavailable: {error}") from error
        broken = isinstance(error, (RedisConnectionError, OSError, ConnectionError))
        if broken and stage == "sent" and has_deadline and not isinstance(error.__context__, ReadOnlyError):
            raise UnknownOutcome(f"{what}: the connection to Redis broke before it answered: {error}") from (
                error
            )
        if stage == "ran":
            raise UnknownOutcome(f"{what}: Redis ran it, but the answer was lost: {error}") from error
        if is_unavailable(error):
            raise Unavailable(f"{what} is unreachable: {error}") from error


class _NotReplicated(Exception):
    """WAIT answered fewer replicas than asked for."""


def _broken_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import ConnectionError as RedisConnectionError

    return (RedisConnectionError, ConnectionError)


class RedisShards:
    """The Redis hosts of a channel layer, and which one each channel lives on.

    ``locate(name)`` gives the index of the host that carries the channel's
    publications (the broker knows how its layer shards groups), so its history and
    presence are kept on that host too, and one Lua script can number, store and
    publish a publication in one step.
    """

    def __init__(self, hosts: Sequence[dict], locate: Callable[[str], int]) -> None:
        self.hosts = [RedisConnection(host) for host in hosts]
        self.locate = locate

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, index: int) -> RedisConnection:
        return self.hosts[index]

    def of(self, name: str) -> RedisConnection:
        """The host that keeps the channel ``name``."""
        return self.hosts[self.locate(name)] if len(self.hosts) > 1 else self.hosts[0]
