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

Scripts that carry a deadline (publications) are *pipelined*: each host has one
connection per event loop for them, the scripts submitted during one event-loop turn go
out in one write, and their replies are read back in order (:class:`_Pipe`). Redis runs
them in the order they were written, so publications keep their order (one publisher's,
and the offsets of a channel with history) however many are on their way at once, and a
burst of them costs one system call, not one round trip each.

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
from collections import deque
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
    pipe: _Pipe | None = None  # the connection for scripts with a deadline


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
        self._last: _Client | None = None  # the one asked for last

    def _client(self) -> _Client:
        loop = asyncio.get_running_loop()
        client = self._last
        if client is not None and client.loop is loop:
            return client  # the usual case: one event loop (a WeakKeyDictionary makes a weakref)
        client = self._clients.get(loop)
        if client is None:
            from channels_redis.utils import create_pool
            from redis.maint_notifications import MaintNotificationsConfig

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
        self._last = client
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
        if deadline is not None and not replicas:
            return await self.submit(source, keys, args, what)
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

    def submit(self, source: str, keys: Sequence, args: Sequence, what: str) -> asyncio.Future:
        """Queue a script that carries a deadline (it refuses to run after it) on this
        host's pipelined connection; the future gets its reply, or the error :meth:`run`
        would raise. Nothing is awaited: scripts submitted one after the other are
        written, and run, in that order."""
        client = self._client()
        future = client.loop.create_future()
        if client.paused:
            future.set_exception(
                Unavailable(f"{what} is unreachable: Redis stopped answering; waiting for it to answer again")
            )
            return future
        pipe = client.pipe
        if pipe is None:
            pipe = client.pipe = _Pipe(self, client)
        pipe.add(_Request(future, script(source), keys, args, what))
        return future

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


class _Request:
    """One script on a pipelined connection, and how far it got."""

    __slots__ = ("future", "code", "keys", "args", "what", "expires")

    def __init__(self, future: asyncio.Future, code: Script, keys, args, what: str) -> None:
        self.future = future
        self.code = code
        self.keys = keys
        self.args = args
        self.what = what
        self.expires = 0.0


class _Pipe:
    """The pipelined connection of one host on one event loop, for scripts that carry a
    deadline (the publications' scripts: ``broker.PUBLISH``, ``history.APPEND``).

    Requests submitted during one event-loop turn are written together, once the turn's
    other callbacks have run; replies are matched to requests in the order they were
    written. What the caller is told, as :meth:`RedisConnection.run` tells it:

    * never written (no connection, or paused): ``Unavailable``;
    * no reply within ``REDIS_TIMEOUT`` + ``REDIS_CLOCK_SKEW``: ``Unavailable`` (its
      deadline has passed, so Redis refuses it if it ever gets to it); the host is
      paused, and a late reply is matched and ignored;
    * an error reply (``READONLY``, ``OOM``, ``NOSCRIPT`` after ``SCRIPT FLUSH``...):
      ``Unavailable``, since Redis refused it before running it;
    * written, then the connection broke before the reply: ``UnknownOutcome``.
    """

    def __init__(self, owner: RedisConnection, client: _Client) -> None:
        self.owner = owner
        self.client = client
        self.loop = client.loop
        self.connection = None
        self.queued: list[_Request] = []  # not written yet
        self.written: deque[_Request] = deque()  # written, in order, reply not read yet
        self.writer: asyncio.Task | None = None
        self.reader: asyncio.Task | None = None
        self.timer: asyncio.TimerHandle | None = None

    def add(self, request: _Request) -> None:
        self.queued.append(request)
        if self.writer is None:
            self.writer = self.loop.create_task(self._write())

    async def _write(self) -> None:
        try:
            while self.queued:
                if self.connection is None:
                    await self._connect()
                    continue
                if not self.written and not await self._usable(self.connection):
                    continue  # closed while idle: connect again before writing
                batch, self.queued = self.queued, []
                limit = settings.REDIS_TIMEOUT + settings.REDIS_CLOCK_SKEW
                expires = self.loop.time() + limit
                loaded = self.client.loaded
                commands = []
                for request in batch:
                    request.expires = expires
                    code = request.code
                    if code.sha in loaded:
                        call = ("EVALSHA", code.sha)
                    else:
                        # Loaded by this EVAL for the requests written after it.
                        loaded.add(code.sha)
                        call = ("EVAL", code.source)
                    commands.append((*call, len(request.keys), *request.keys, *request.args))
                connection = self.connection
                self.written.extend(batch)
                if self.timer is None:
                    self.timer = self.loop.call_at(expires, self._expire)
                packed = _pack(commands)
                try:
                    await connection.send_packed_command(packed, check_health=False)
                except Exception as error:
                    self._broken(connection, error, batch)
                    continue
                if self.reader is None or self.reader.done():
                    self.reader = self.loop.create_task(self._read(connection))
        finally:
            self.writer = None

    async def _connect(self) -> None:
        pool = self.client.pool
        try:
            async with asyncio.timeout(settings.REDIS_TIMEOUT):
                connection = await pool.get_connection()
        except Exception as error:
            if isinstance(error, TimeoutError):
                self.owner._pause(self.client)
            stats.counters.redis_errors += 1
            queued, self.queued = self.queued, []
            for request in queued:
                why = error or "no connection in time"
                _fail(request, Unavailable(f"{request.what} is unreachable: {why}"))
            return
        # A connection made again: Redis may have restarted and lost its scripts, so the
        # first requests on it load them (EVAL). Without this every request written
        # before the first NOSCRIPT came back would be refused.
        self.client.loaded.clear()
        self.connection = connection

    async def _usable(self, connection) -> bool:
        """Whether an idle connection is still open. Nobody reads it while nothing is
        written, so a Redis that restarted (or closed it) in the meantime shows only
        here: the connection is let go, nothing on it was lost, and the next write
        connects again, or fails as never written (``Unavailable``), as a request on a
        fresh pool connection would. (What the pool checks before lending one.)"""
        try:
            stale = await connection.can_read()  # data or EOF while nothing was asked
        except Exception:
            stale = True
        if stale:
            self.connection = None
            try:
                await connection.disconnect()
            finally:
                await self.client.pool.release(connection)
        return not stale

    async def _read(self, connection) -> None:
        from redis.exceptions import NoScriptError, ResponseError

        written = self.written
        while written and self.connection is connection:
            try:
                reply = await connection.read_response(disconnect_on_error=True)
            except ResponseError as error:
                request = written.popleft()
                stats.counters.redis_errors += 1
                if isinstance(error, NoScriptError):
                    # Redis lost its scripts (SCRIPT FLUSH) but not the connection: this
                    # one did not run. The next ones are sent with EVAL again.
                    self.client.loaded.discard(request.code.sha)
                _fail(request, Unavailable(f"{request.what} is unavailable: {error}"))
                continue
            except Exception as error:
                self._broken(connection, error, [])
                return
            request = written.popleft()
            if not request.future.done():
                request.future.set_result(reply)
        if self.timer is not None and not written:
            self.timer.cancel()
            self.timer = None

    def _broken(self, connection, error: BaseException, unsent: list[_Request]) -> None:
        """The connection failed: what was written has an unknown outcome, what was
        being written (``unsent``) was not done."""
        from redis.exceptions import ReadOnlyError

        if self.connection is not connection:
            return
        self.connection = None
        stats.counters.redis_errors += 1
        # A Sentinel-managed connection to a master that became a replica refuses
        # (READONLY) before running anything, and breaks the connection to say so.
        refused = isinstance(error.__context__, ReadOnlyError) or isinstance(error, ReadOnlyError)
        not_sent = {id(request) for request in unsent}
        for request in self.written:
            if id(request) in not_sent:
                _fail(request, Unavailable(f"{request.what} is unreachable: {error}"))
            elif refused:
                _fail(request, Unavailable(f"{request.what} is unavailable: {error}"))
            else:
                why = f"the connection to Redis broke before it answered: {error}"
                _fail(request, UnknownOutcome(f"{request.what}: {why}"))
        self.written.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.loop.create_task(self.client.pool.release(connection))

    def _expire(self) -> None:
        """Requests without a reply past their time: their deadline has passed."""
        self.timer = None
        now = self.loop.time()
        late = False
        for request in self.written:
            if request.expires > now:
                self.timer = self.loop.call_at(request.expires, self._expire)
                break
            if not request.future.done():
                late = True
                limit = settings.REDIS_TIMEOUT + settings.REDIS_CLOCK_SKEW
                why = f"no answer from Redis within {limit:g}s"
                _fail(request, Unavailable(f"{request.what} is unreachable: {why}"))
        if late:
            stats.counters.redis_errors += 1
            self.owner._pause(self.client)


def _pack(commands: list[tuple]) -> list[bytes]:
    """Commands in RESP, as redis-py packs them (str as UTF-8, int and float as text),
    in fewer steps: a burst of publications is packed on every one of them."""
    out = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, str):
                arg = arg.encode()
            elif isinstance(arg, int):
                arg = b"%d" % arg
            elif isinstance(arg, float):
                arg = repr(arg).encode()
            out.append(b"$%d\r\n" % len(arg))
            out.append(arg)
            out.append(b"\r\n")
    return [b"".join(out)]


def _fail(request: _Request, error: Exception) -> None:
    if not request.future.done():
        request.future.set_exception(error)
        # Callers that gave up on it (cancelled) must not log "never retrieved".
        request.future.exception()


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
