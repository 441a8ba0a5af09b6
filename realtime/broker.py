"""Carries publications and change announcements between server processes.

Internal. Two brokers share the :class:`Broker` interface:

* :class:`LayerBroker` uses the configured Channels layer (channels_redis in
  production). Each server process holds one layer channel for its hub and joins one
  layer group per realtime channel that has local subscribers, so a publication
  crosses Redis once per process, already encoded, never once per subscriber.
* :class:`LocalBroker` is used when the layer is Channels' in-memory layer or there is
  none: one process only, so a publication goes straight to the local hubs. Skipping
  the in-memory layer also skips its capacity of 100 queued messages, past which it
  drops group messages silently.

Dependencies run one way: a broker knows the hubs it was started with only through
the :class:`Receiver` protocol (kept weakly, with the broker's own per-hub state), and
never imports the hub. Each broker also owns the history and presence stores that go
with its layer (``realtime.stores``).

The server API (``realtime.api``) asks every hub something through :meth:`request`: a
command goes to every hub (the ``rt.control`` group) or to one, each carries it out
with :meth:`Receiver.operate` and replies to the asker's own layer channel; the asker
waits until every process in the node registry (``realtime.stores.nodes``) has
answered, or its timeout passes, and says which did not answer.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import msgpack
from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

from . import protocol, stats
from .conf import settings
from .errors import ErrorCode, InvalidData, RealtimeError, Unavailable, UnknownOutcome
from .names import CONTROL_GROUP, group_name, is_pattern
from .positions import EPOCH_BYTES, OFFSET_DIGITS, Position
from .registry import ChannelInfo
from .stores.durable import DurableHistory
from .stores.history import MemoryHistory, RedisHistory, micros, record_key
from .stores.nodes import BEAT_INTERVAL, FORGET_TIMEOUT, Node, RedisNodes, new_node
from .stores.presence import MemoryPresence, RedisPresence
from .stores.redis import RedisShards, unavailable, unconfirmed
from .topology import Topology, quiet_pubsub

logger = logging.getLogger("realtime")

PUBLICATION = "rt.pub"
CONTROL = "rt.control"
PROBE = "rt.probe"
READY = "rt.ready"
COMMAND = "rt.command"
REPLY = "rt.reply"
PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 2.0
READY_TIMEOUT = 5.0
READY_RESEND = 0.25

# Every copy of a publication that keeps no history, in one round trip. KEYS: the
# publication's idempotency record, if it has a key. ARGV: 1 deadline (Unix
# microseconds: later than this, Redis must not publish it), 2 the record's lifetime
# (ms), then pairs of (pubsub channel, message). Returns 1 published, 0 past the
# deadline, 2 a duplicate of one published within the window (nothing done either way).
# The shebang makes Redis refuse it, before it runs, on a replica or when it cannot write.
PUBLISH = """#!lua
local clock = redis.call('TIME')
if tonumber(clock[1]) * 1000000 + tonumber(clock[2]) > tonumber(ARGV[1]) then return 0 end
if #KEYS == 1 then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 2 end
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
end
for i = 3, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end
return 1
"""
LATE = "the broker: Redis got to the publication after its deadline; it was not published"


class Receiver(Protocol):
    """What a broker delivers to: a process's hub (``realtime.hub.Hub``)."""

    loop: asyncio.AbstractEventLoop

    def deliver(
        self,
        name: str,
        frame: str,
        via: str | None = None,
        info: ChannelInfo | None = None,
        offset: int | None = None,
    ) -> None: ...

    def broker_recovered(self, affected: Callable[[str], bool] | None = None) -> None:
        """The broker was unreachable for a while: publications may have been lost
        (on the subscriptions ``affected`` says, or all)."""

    def changed(self) -> None:
        """Keys or channels changed somewhere: re-check live connections."""

    def spawn(self, coro) -> asyncio.Task: ...

    async def operate(self, command: dict) -> dict:
        """Carry out a server API command here (``realtime.operations``); its result."""


@dataclass
class Replies:
    """What the server processes answered to one :meth:`Broker.request`.

    ``answers``: one per hub that answered in time, ``{"node": identity, "result": ...}``
    or ``{"node": identity, "error": [code, detail]}``. ``missing``: the identities of
    the registered hubs that did not answer in time.
    """

    answers: list[dict]
    missing: list[dict]


class Broker(Protocol):
    """What the hub and the publishing path need from a broker."""

    kind: str
    multi_process: bool
    history: DurableHistory | None
    presence: MemoryPresence | RedisPresence | None

    async def start(self, hub: Receiver) -> None: ...
    async def listen(self, topic: str, hub: Receiver) -> None: ...
    async def unlisten(self, topic: str, hub: Receiver) -> None: ...
    async def publish(
        self, name: str, frame: str, info: ChannelInfo, idempotency_key: str | None = None
    ) -> Position | None: ...
    async def notice(self, name: str, frame: str) -> None: ...
    def pipelined(self) -> bool:
        """Whether publishes started one after the other, without waiting for each
        other, still reach subscribers in that order."""

    def announce_change(self) -> None: ...
    async def request(self, command: dict, timeout: float, node: str | None = None) -> Replies: ...


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _topics(name: str) -> tuple[tuple[str, str], ...]:
    """The broker topics a publication on ``name`` goes to, with what each copy is for:
    the channel's own, its top-level tree (prefixed patterns) and bare patterns."""
    return ((name, "exact"), ("tree:" + name.split("/", 1)[0], "tree"), ("*", "all"))


def _call_on(hub: Receiver, callback, *args) -> None:
    """Run ``callback`` on the hub's loop, in a context of its own: the caller's (a sync
    thread inside ``sync_to_async``, say) carries asgiref's deadlock guard, which would
    make the hub's own database calls refuse to run."""
    hub.loop.call_soon_threadsafe(callback, *args, context=contextvars.Context())


class LocalBroker:
    """Delivers within this process, to every hub it was started with (one per event
    loop, usually one)."""

    kind = "local"
    multi_process = False

    def __init__(self) -> None:
        self.history = DurableHistory(MemoryHistory())
        self.presence = MemoryPresence()
        self._hubs: weakref.WeakSet[Receiver] = weakref.WeakSet()
        # (channel, idempotency key) -> (until, position), oldest first; position is
        # _PENDING while that publication is on its way.
        self._keys: dict[tuple[str, str], tuple[float, object]] = {}
        self._nodes: weakref.WeakKeyDictionary[Receiver, Node] = weakref.WeakKeyDictionary()

    def _live(self) -> list[Receiver]:
        return [hub for hub in list(self._hubs) if not hub.loop.is_closed()]

    async def start(self, hub: Receiver) -> None:
        self._hubs.add(hub)
        self._nodes[hub] = new_node()

    async def listen(self, topic: str, hub: Receiver) -> None:
        pass

    def pipelined(self) -> bool:
        return True  # numbered and delivered with nothing awaited in between

    async def unlisten(self, topic: str, hub: Receiver) -> None:
        pass

    async def publish(
        self, name: str, frame: str, info: ChannelInfo, idempotency_key: str | None = None
    ) -> Position | None:
        key = None if idempotency_key is None else (name, idempotency_key)
        if key is not None:
            first = self._first(key)
            if first is _PENDING:
                raise UnknownOutcome("a publication with this idempotency key is on its way; ask again")
            if first is not _MISSING:
                return first
            self._keys[key] = (time.monotonic() + settings.IDEMPOTENCY_WINDOW, _PENDING)
        position = offset = None
        try:
            if info.has_history:
                # No suspension from numbering to delivery: subscribers see offsets in order.
                position, frame = await self.history.append(name, frame, info)
                offset = position.offset
        except BaseException:
            if key is not None:
                self._keys.pop(key, None)
            raise
        if key is not None:
            self._keys[key] = (self._keys[key][0], position)
        here = _running_loop()
        for hub in self._live():
            if hub.loop is here:
                hub.deliver(name, frame, None, info, offset)
            else:
                _call_on(hub, hub.deliver, name, frame, None, info, offset)
        if position is not None:
            await self.history.persist(name, position, frame, info)
        return position

    def _first(self, key: tuple[str, str]):
        """What the publication with this key published, if it is remembered."""
        now = time.monotonic()
        for old, (until, _) in list(self._keys.items()):
            if until > now:
                break
            del self._keys[old]
        found = self._keys.get(key)
        if found is None or found[0] <= now:
            return _MISSING
        return found[1]

    async def notice(self, name: str, frame: str) -> None:
        """A frame for the channel's exact subscribers that is no publication (join, leave)."""
        for hub in self._live():
            _call_on(hub, hub.deliver, name, frame, "exact")

    def announce_change(self) -> None:
        for hub in self._live():
            _call_on(hub, hub.changed)

    async def request(self, command: dict, timeout: float, node: str | None = None) -> Replies:
        """Ask this process's own hubs (each on its own loop), at most ``timeout`` seconds."""
        here = _running_loop()
        asked: dict[asyncio.Future, Node] = {}
        for hub in self._live():
            identity = self._nodes.get(hub)
            if identity is None or (node is not None and identity.id != node):
                continue
            if hub.loop is here:
                future = asyncio.ensure_future(hub.operate(command))
            else:
                future = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(hub.operate(command), hub.loop))
            asked[future] = identity
        if node is not None and not asked:
            raise InvalidData(f"no live server process has the id {node!r}")
        done, pending = await asyncio.wait(asked, timeout=timeout) if asked else (set(), set())
        for future in pending:
            future.cancel()
        answers = []
        for future in done:
            answer = {"node": asked[future].identity()}
            error = future.exception()
            if error is None:
                answer["result"] = future.result()
            else:
                answer["error"] = _error_of(error)
            answers.append(answer)
        return Replies(answers, [asked[future].identity() for future in pending])


def _error_of(error: BaseException) -> list[str]:
    """``[code, detail]`` of what an operation raised (unexpected errors are logged)."""
    if isinstance(error, RealtimeError):
        return [error.code.value, error.detail]
    logger.error("realtime: a server API command failed", exc_info=error)
    return [ErrorCode.INTERNAL_ERROR.value, ""]


_MISSING = object()
_PENDING = object()


@dataclass(eq=False)
class _Link:
    """A hub's end of the layer: its layer channel, what it waits for on it, and how
    each shard (Redis host) has been doing."""

    channel: str
    # Where the hub sends its probes: its own layer channel, or with several shards one
    # group per shard.
    probes: list[str]
    returned: list[asyncio.Event]
    ready: dict[str, asyncio.Future] = field(default_factory=dict)
    # Per shard: loop time the probe last started failing, the pubsub connection last
    # reconnected, and the connection object being watched.
    failed_at: list[float] = field(default_factory=list)
    reconnected_at: list[float] = field(default_factory=list)
    watched: list = field(default_factory=list)
    reconnects: list = field(default_factory=list)
    node: Node | None = None  # this hub in the node registry (the server API)


class _Reconnects:
    """A redis-py connect callback on the layer's pubsub connection to one shard: it is
    called after the connection was re-established (and had subscribed again), which
    means publications made meanwhile were not received here."""

    def __init__(self, broker: LayerBroker, hub: Receiver, link: _Link, shard: int) -> None:
        self.broker = broker
        self.hub = weakref.ref(hub)
        self.link = link
        self.shard = shard

    def connected(self, connection) -> None:
        hub = self.hub()
        if hub is None or hub.loop.is_closed():
            return
        self.link.reconnected_at[self.shard] = hub.loop.time()
        hub.loop.call_soon(
            self.broker._recovered, hub, self.shard, "the connection to Redis was re-established"
        )


class LayerBroker:
    """Delivers through a Channels layer: one layer message per process per publication."""

    kind = "layer"
    multi_process = True

    def __init__(self, layer) -> None:
        self.layer = layer
        self.topology = Topology.of(layer)
        self.history: DurableHistory | None = None
        self.presence: RedisPresence | None = None
        self.redis: RedisShards | None = None
        self.nodes: RedisNodes | None = None
        if self.topology.hosts:
            redis = self.redis = RedisShards(self.topology.hosts, self.topology.shard_of)
            self.history = DurableHistory(RedisHistory(redis))
            self.presence = RedisPresence(redis)
            # The registry of live processes lives on the first host.
            self.nodes = RedisNodes(redis[0])
        self._links: weakref.WeakKeyDictionary[Receiver, _Link] = weakref.WeakKeyDictionary()
        # Channel name -> what its publications' layer messages share (see _copies).
        self._layout: dict[str, _Layout] = {}

    async def start(self, hub: Receiver) -> None:
        if self.topology.pubsub:
            quiet_pubsub(self.layer)
        channel = await self.layer.new_channel("realtime.hub.")
        await self.layer.group_add(CONTROL_GROUP, channel)
        shards = max(1, self.topology.shards)
        if self.topology.pubsub and shards > 1:
            probes = self.topology.on_each_shard(f"rt.probe.{secrets.token_hex(8)}")
            for group in probes:
                await self.layer.group_add(group, channel)
        else:
            probes = [channel]
        link = _Link(channel, probes, [asyncio.Event() for _ in probes])
        link.failed_at = [0.0] * len(probes)
        link.reconnected_at = [0.0] * len(probes)
        link.watched = [None] * len(probes)
        link.reconnects = [_Reconnects(self, hub, link, shard) for shard in range(len(probes))]
        link.node = new_node(channel)
        self._links[hub] = link
        self._watch_reconnects(link)
        hub.spawn(self._receive(hub, link))
        hub.spawn(self._watch(hub, link))
        if self.nodes is not None:
            hub.spawn(self._beat(link.node))
            self.nodes.forget_when_stopping(link.node, hub.loop)

    async def _beat(self, node: Node) -> None:
        """Keep this hub listed in the node registry, and take it out when the hub stops
        (its tasks are cancelled as the server's loop ends)."""
        try:
            while True:
                try:
                    await self.nodes.beat(node)
                except Exception as error:
                    logger.debug("realtime: could not renew the node registry entry: %s", error)
                await asyncio.sleep(BEAT_INTERVAL)
        except asyncio.CancelledError:
            try:
                await asyncio.wait_for(self.nodes.forget(node), FORGET_TIMEOUT)
            except BaseException as error:  # the entry expires within NODE_TTL anyway
                logger.debug("realtime: could not take this hub out of the node registry: %s", error)
            raise

    def _watch_reconnects(self, link: _Link) -> None:
        """Register the reconnect callbacks on the layer's current pubsub connections."""
        try:
            connections = self.topology.pubsub_connections(self.layer)
        except Exception:  # channels_redis changed its insides: the probes still watch
            logger.debug("realtime: cannot watch the layer's pubsub connections", exc_info=True)
            return
        for shard, connection in enumerate(connections[: len(link.watched)]):
            if connection is not None and connection is not link.watched[shard]:
                connection.register_connect_callback(link.reconnects[shard].connected)
                link.watched[shard] = connection

    def _recovered(self, hub: Receiver, shard: int, how: str) -> None:
        """Publications on ``shard`` may have been lost here: tell its subscribers."""
        logger.warning(
            "realtime: %s%s; telling subscribers they may have missed messages",
            how,
            f" (shard {shard})" if self.topology.shards > 1 else "",
        )
        if self.topology.shards > 1:
            shard_of = self.topology.shard_of
            hub.broker_recovered(lambda name: is_pattern(name) or shard_of(name) == shard)
        else:
            hub.broker_recovered()

    async def _watch(self, hub: Receiver, link: _Link) -> None:
        """Notice the broker going away and coming back.

        Two signals, per shard. The layer's pubsub connection reconnecting (Redis
        restarted, or failed over to another master) is reported by redis-py at once
        (:class:`_Reconnects`). A Redis that hangs keeps its connections, so once a
        second the hub also sends a probe through each shard and waits for it to
        return: when probes return again after failing, and no reconnect has been
        reported since, publications may have been lost in between.
        """
        healthy = [True] * len(link.probes)
        counters = stats.counters
        last = hub.loop.time()
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            self._watch_reconnects(link)
            sent = hub.loop.time()
            results = await asyncio.gather(*(self._probe(link, shard) for shard in range(len(link.probes))))
            if all(results):
                counters.round_trip.observe(hub.loop.time() - sent)
            else:
                counters.redis_errors += 1
                counters.outage_seconds += hub.loop.time() - last
            last = hub.loop.time()
            counters.broker_up = int(all(results))
            for shard, ok in enumerate(results):
                if ok and not healthy[shard]:
                    # A reconnection reported since the first failed probe was sent has
                    # told the subscribers already.
                    if link.reconnected_at[shard] < link.failed_at[shard]:
                        self._recovered(hub, shard, "Redis answers again")
                elif healthy[shard] and not ok:
                    link.failed_at[shard] = sent
                    logger.warning("realtime: the broker is unreachable; publications cannot be delivered")
                healthy[shard] = ok

    async def _probe(self, link: _Link, shard: int) -> bool:
        returned = link.returned[shard]
        returned.clear()
        target = link.probes[shard]
        message = {"type": PROBE, "shard": shard}
        try:
            if target == link.channel:
                await asyncio.wait_for(self.layer.send(target, message), PROBE_TIMEOUT)
            else:
                await asyncio.wait_for(self.layer.group_send(target, message), PROBE_TIMEOUT)
            await asyncio.wait_for(returned.wait(), PROBE_TIMEOUT)
            return True
        except Exception:  # timeouts included
            return False

    async def _receive(self, hub: Receiver, link: _Link) -> None:
        while True:
            try:
                message = await self.layer.receive(link.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("realtime: receiving from the channel layer failed; retrying")
                await asyncio.sleep(1)
                continue
            kind = message.get("type")
            if kind == PUBLICATION:
                info = message["info"] and ChannelInfo.from_list(message["info"])
                frame, offset = message["frame"], message.get("offset")
                if offset is not None:
                    offset = int(offset)
                    frame = protocol.stamp(frame, offset, message["epoch"])
                hub.deliver(message["channel"], frame, message["via"], info, offset)
            elif kind == READY:
                waiter = link.ready.get(message["token"])
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif kind == CONTROL:
                hub.changed()
            elif kind == PROBE:
                shard = message.get("shard", 0)
                if 0 <= shard < len(link.returned):
                    link.returned[shard].set()
            elif kind == COMMAND:
                hub.spawn(self._answer(hub, link, message))

    async def _answer(self, hub: Receiver, link: _Link, message: dict) -> None:
        """Carry out a server API command and reply to whoever asked.

        A command that arrives after its deadline (this process was stopped, or
        overloaded) is dropped: the asker has reported this process as not answering,
        and carrying the command out later would surprise it.
        """
        if time.time() > message["deadline"]:
            logger.warning("realtime: a server API command arrived after its deadline; ignored")
            return
        reply = {"type": REPLY, "token": message["token"], "node": link.node.identity()}
        try:
            reply["result"] = await hub.operate(message["command"])
        except Exception as error:
            reply["error"] = _error_of(error)
        try:
            await self.layer.send(message["reply_to"], reply)
        except Exception as error:
            logger.warning("realtime: could not reply to a server API command: %s", error)

    async def request(self, command: dict, timeout: float, node: str | None = None) -> Replies:
        """Send ``command`` to every hub (or to the one whose node id is ``node``) and
        collect the replies on a layer channel of this caller's own, until every hub in
        the node registry has answered or ``timeout`` seconds have passed."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        expected: dict[str, Node] | None = None
        if self.nodes is not None:
            with unavailable("the broker"):
                # None when nobody is listed (Redis lost the registry?): wait the whole timeout.
                expected = {known.id: known for known in await self.nodes.live()} or None
        target = None
        if node is not None:
            target = (expected or {}).get(node)
            if target is None:
                raise InvalidData(f"no live server process has the id {node!r}")
            expected = {node: target}
        token = secrets.token_hex(8)
        answers: dict[str, dict] = {}
        subscribed, finished = asyncio.Event(), asyncio.Event()
        with unavailable("the broker"):
            reply_to = await self.layer.new_channel("realtime.reply.")

        async def collect() -> None:
            while True:
                message = await self.layer.receive(reply_to)
                kind = message.get("type")
                if kind == PROBE:
                    subscribed.set()
                elif kind == REPLY and message.get("token") == token:
                    answer = {"node": message["node"]}
                    answer.update({key: message[key] for key in ("result", "error") if key in message})
                    answers[answer["node"]["id"]] = answer
                    if expected is not None and expected.keys() <= answers.keys():
                        finished.set()

        collector = loop.create_task(collect())
        try:
            with unavailable("the broker"):
                # The reply channel is listened to once a probe sent to it comes back.
                await asyncio.wait_for(self.layer.send(reply_to, {"type": PROBE}), timeout)
                await _until(collector, subscribed, max(0.0, give_up - loop.time()))
                if not subscribed.is_set():
                    raise Unavailable("the broker did not deliver to this process in time")
                message = {
                    "type": COMMAND,
                    "token": token,
                    "reply_to": reply_to,
                    "deadline": time.time() + max(0.0, give_up - loop.time()),
                    "command": command,
                }
                if target is not None:
                    await self.layer.send(target.channel, message)
                else:
                    await self.layer.group_send(CONTROL_GROUP, message)
                await _until(collector, finished, max(0.0, give_up - loop.time()))
        finally:
            # Cancelling the receive also unsubscribes the reply channel (channels_redis).
            collector.cancel()
            await asyncio.wait([collector])
        missing = [known.identity() for key, known in (expected or {}).items() if key not in answers]
        return Replies(list(answers.values()), missing)

    async def listen(self, topic: str, hub: Receiver) -> None:
        """Join the topic's group (one per shard for pattern topics) and return once
        Redis delivers it here.

        A SUBSCRIBE is sent without waiting for Redis to confirm it, so a message sent
        through each group is waited for: after that, nothing published can be missed
        (recovery from history relies on it).
        """
        link = self._links[hub]
        groups = self.topology.groups(topic)
        async with asyncio.timeout(settings.REDIS_TIMEOUT):
            for group in groups:
                await self.layer.group_add(group, link.channel)
        waiters = {}
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                for group in groups:
                    token = secrets.token_hex(8)
                    waiter = waiters[token] = link.ready[token] = hub.loop.create_future()
                    # The probe goes over another connection than the SUBSCRIBE did, and
                    # may reach Redis first and be lost: send it again until one returns.
                    while not waiter.done():
                        await self.layer.group_send(group, {"type": READY, "token": token})
                        await asyncio.wait([waiter], timeout=READY_RESEND)
        except TimeoutError:
            # Redis took the SUBSCRIBE and the PUBLISH but the probe is late (an overloaded
            # process, say): carry on; the outage watchdog reports a broker that is really gone.
            logger.warning("realtime: no confirmation from the broker for %s after %ss", topic, READY_TIMEOUT)
        finally:
            for token in waiters:
                link.ready.pop(token, None)

    def pipelined(self) -> bool:
        """The scripts go out on one pipelined connection per shard, in order
        (``stores.redis``). Not so through the layer's own ``group_send`` (a layer the
        scripts cannot append to), nor with ``REDIS_WAIT_REPLICAS`` (each publication
        then waits for its replicas on a connection of its own)."""
        return self.topology.pubsub and self.topology.plain and not settings.REDIS_WAIT_REPLICAS

    async def unlisten(self, topic: str, hub: Receiver) -> None:
        link = self._links.get(hub)
        if link is not None:
            for group in self.topology.groups(topic):
                await self.layer.group_discard(group, link.channel)

    async def publish(
        self, name: str, frame: str, info: ChannelInfo, idempotency_key: str | None = None
    ) -> Position | None:
        """One layer message per topic that may have listeners (see :func:`_topics`),
        all on the channel's shard, in one round trip. Redis drops a PUBLISH nobody
        listens to, so a process only receives the copies it asked for.

        On a channel with history, the Lua script in ``realtime.stores.history``
        numbers and stores the publication and PUBLISHes the copies in one atomic step,
        so every process receives a channel's publications in offset order.

        Every script carries a deadline ``REDIS_TIMEOUT`` ahead and refuses to run after
        it, so a publication answered ``unavailable`` is never delivered later; one
        whose answer was lost is ``unknown_outcome``. With an ``idempotency_key``, a
        publication that Redis already took with that key on this channel (within
        ``IDEMPOTENCY_WINDOW``) is not published again: the first one's outcome is
        returned.
        """
        message = {"type": PUBLICATION, "channel": name, "frame": frame, "info": info.as_list()}
        if info.has_history and self.history is None:
            raise Unavailable("history needs a Redis channel layer (channels_redis)")
        deadline = time.time() + settings.REDIS_TIMEOUT
        topology = self.topology
        if not info.has_history:
            if topology.pubsub:
                shard, parts = self._copies(name, frame, info, message)
                keys = [] if idempotency_key is None else [record_key(name, idempotency_key)]
                replicas = settings.REDIS_WAIT_REPLICAS if keys else 0
                window = int(settings.IDEMPOTENCY_WINDOW * 1000)
                result = await self.redis[shard].run(
                    PUBLISH, keys, [micros(deadline), window, *parts], "the broker", deadline=deadline,
                    replicas=replicas,
                )  # fmt: skip
                if result == 0:
                    raise Unavailable(LATE)
                return None
            await self._send_through_layer(name, message, None, idempotency_key)
            return None
        options = {
            "deadline": deadline,
            "idempotency_key": idempotency_key,
            "replicas": settings.REDIS_WAIT_REPLICAS,
        }
        if topology.pubsub and topology.plain:
            shard = topology.shard_of(name)
            heads = [
                (topology.channel(topology.group_on(key, shard)), _msgpack_head({**message, "via": via}))
                for key, via in _topics(name)
            ]
            append = self.history.append
            position, stamped = await append(name, frame, info, heads, _MSGPACK_MIDDLE, **options)
        else:
            # A layer the script cannot publish through: number first, then send.
            # Publications from several processes at once may then arrive out of order.
            position, stamped = await self.history.append(name, frame, info, **options)
            await self._send_through_layer(name, message, position)
        await self.history.persist(name, position, stamped, info)
        return position

    def _copies(self, name: str, frame: str, info: ChannelInfo, message: dict) -> tuple[int, list]:
        """The shard of ``name`` and ``[pubsub channel, layer message, ...]`` for each copy
        of a publication without history. With a plain msgpack layer the message is
        packed once, from parts kept per channel name; the copies differ in ``via`` only."""
        topology = self.topology
        layout = self._layout.get(name)
        if layout is None:
            shard = topology.shard_of(name)
            copies = [(topology.channel(topology.group_on(key, shard)), via) for key, via in _topics(name)]
            if len(self._layout) >= LAYOUT_CACHE_SIZE:
                self._layout.clear()
            layout = self._layout[name] = _Layout(shard, copies, _msgpack_prefix(name))
        if not topology.plain:
            serialize = self.layer.serialize
            return layout.shard, [
                p for c, via in layout.copies for p in (c, serialize({**message, "via": via}))
            ]
        if layout.info is not info:
            layout.info, layout.info_bytes = info, _INFO_KEY + msgpack.packb(info.as_list())
        body = layout.prefix + _FRAME_KEY + msgpack.packb(frame) + layout.info_bytes
        return layout.shard, [p for c, via in layout.copies for p in (c, body + _VIA[via])]

    async def _send_through_layer(
        self, name: str, message: dict, position: Position | None, idempotency_key: str | None = None
    ) -> None:
        """The copies of a publication through the layer's own ``group_send`` (layers the
        scripts cannot publish through: encrypted, or not pub/sub). It carries no
        deadline, so a timeout is an unknown outcome. An idempotency key is recorded as
        pending before sending: confirmed after, forgotten if sending surely failed, and
        left pending (a retry is told the outcome is unknown) otherwise."""
        extra = {}
        if position is not None:
            extra = {"offset": f"{position.offset:0{OFFSET_DIGITS}d}", "epoch": position.epoch}
        record = None
        if idempotency_key is not None and self.redis is not None:
            record = record_key(name, idempotency_key)
            window = int(settings.IDEMPOTENCY_WINDOW * 1000)
            first = await self.redis.of(name).run(_REMEMBER, [record], [window], "the broker")
            if first == "1":
                return
            if first == "?":
                raise UnknownOutcome("the first publication with this idempotency key has an unknown outcome")
        try:
            with unconfirmed("the broker", begun=position is not None):
                async with asyncio.timeout(settings.REDIS_TIMEOUT):
                    for key, via in _topics(name):
                        await self.layer.group_send(group_name(key), {**message, "via": via, **extra})
        except Unavailable:
            if record is not None:
                await self._record(name, record, _FORGET)
            raise
        if record is not None:
            await self._record(name, record, _CONFIRM)

    async def _record(self, name: str, record: str, script: str) -> None:
        try:
            await self.redis.of(name).run(script, [record], [], "the broker")
        except Exception:
            logger.warning("realtime: could not update the idempotency record %s", record, exc_info=True)

    async def notice(self, name: str, frame: str) -> None:
        """A frame for the channel's exact subscribers that is no publication (join, leave)."""
        message = {"type": PUBLICATION, "channel": name, "frame": frame, "info": None, "via": "exact"}
        try:
            async with asyncio.timeout(settings.REDIS_TIMEOUT):
                await self.layer.group_send(group_name(name), message)
        except Exception:
            logger.warning("realtime: could not send a presence notice on %s", name, exc_info=True)

    def announce_change(self) -> None:
        """Tell every server process (this one included) that keys or channels changed."""
        loop = _running_loop()
        if loop is not None:
            task = loop.create_task(self._announce())
            _pending_announcements.add(task)
            task.add_done_callback(_pending_announcements.discard)
        else:
            async_to_sync(self._announce)()

    async def _announce(self) -> None:
        try:
            await self.layer.group_send(CONTROL_GROUP, {"type": CONTROL})
        except Exception:
            logger.warning(
                "realtime: could not announce a change over the channel layer; "
                "live connections pick it up at the next revalidation",
                exc_info=True,
            )


# The layer message of a publication with history ends in "offset" and "epoch", both
# fixed-length strings (fixstr), so the Lua script can append them to bytes made here.
_MSGPACK_OFFSET = msgpack.packb("offset") + bytes([0xA0 | OFFSET_DIGITS])
_MSGPACK_MIDDLE = msgpack.packb("epoch") + bytes([0xA0 | EPOCH_BYTES * 2])


# Idempotency records of publications sent through the layer itself: "?" while one is on
# its way (or its outcome is unknown), "1" once sent. _REMEMBER returns the record that
# was there (nil: none, now "?").
_REMEMBER = """
local found = redis.call('GET', KEYS[1])
if found then return found end
redis.call('SET', KEYS[1], '?', 'PX', ARGV[1])
return false
"""
_CONFIRM = "return redis.call('SET', KEYS[1], '1', 'KEEPTTL', 'XX')"
_FORGET = "return redis.call('DEL', KEYS[1])"


async def _until(collector: asyncio.Task, event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event``, at most ``timeout`` seconds; a collector that failed raises."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([collector, waiter], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if collector.done() and not collector.cancelled() and collector.exception() is not None:
        raise collector.exception()


LAYOUT_CACHE_SIZE = 10_000  # channel names whose layer-message parts are kept

# A publication's layer message without history: a map of five, packed in parts.
_FRAME_KEY = msgpack.packb("frame")
_INFO_KEY = msgpack.packb("info")
_VIA = {via: msgpack.packb("via") + msgpack.packb(via) for via in ("exact", "tree", "all")}


def _msgpack_prefix(name: str) -> bytes:
    """The map header (five entries) and the type and channel of ``name``'s publications."""
    return (
        bytes([0x85])
        + msgpack.packb("type")
        + msgpack.packb(PUBLICATION)
        + msgpack.packb("channel")
        + (msgpack.packb(name))
    )


@dataclass(eq=False, slots=True)
class _Layout:
    """What every publication on one channel shares: its shard, the pubsub channel and
    ``via`` of each copy, and the packed parts of its layer message."""

    shard: int
    copies: list[tuple[str, str]]
    prefix: bytes
    info: ChannelInfo | None = None
    info_bytes: bytes = b""


def _msgpack_head(message: dict) -> bytes:
    """msgpack of ``message`` plus the two fields the script appends, up to the offset digits."""
    count = len(message) + 2
    assert count < 16  # a fixmap
    body = b"".join(msgpack.packb(key) + msgpack.packb(value) for key, value in message.items())
    return bytes([0x80 | count]) + body + _MSGPACK_OFFSET


_pending_announcements: set = set()
_lock = threading.Lock()
# One broker per layer object, kept as long as the layer is: Channels makes new layer
# objects when CHANNEL_LAYERS changes (override_settings), and a new object never meets
# the broker of an old one, even if it reuses the old one's id.
_brokers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_no_layer: LocalBroker | None = None


def get_broker() -> Broker:
    """The broker for the configured layer (one per layer object)."""
    global _no_layer
    layer = get_channel_layer(settings.CHANNEL_LAYER)  # called on every publish: no imports here
    if layer is None:
        with _lock:
            if _no_layer is None:
                _no_layer = LocalBroker()
            return _no_layer
    broker = _brokers.get(layer)
    if broker is None:
        with _lock:
            broker = _brokers.get(layer)
            if broker is None:
                broker = LocalBroker() if isinstance(layer, InMemoryChannelLayer) else LayerBroker(layer)
                _brokers[layer] = broker
    return broker


def reset() -> None:
    """Forget every broker (settings changed); hubs already running keep theirs."""
    global _no_layer
    with _lock:
        _brokers.clear()
        _no_layer = None


_serving = False


def mark_serving() -> None:
    """This process serves (a hub was made in it, or it handled a request through an ASGI
    server): say once how publications travel. On the in-memory layer, publications from
    any other process (a shell, a worker, a WSGI process) reach no one, and
    ``realtime.publishing`` warns about them."""
    global _serving
    if not _serving:
        _serving = True
        logger.info(describe())


def serving() -> bool:
    return _serving


def describe() -> str:
    """One line for the startup log."""
    from channels.layers import get_channel_layer

    from .conf import settings

    layer = get_channel_layer(settings.CHANNEL_LAYER)
    if get_broker().multi_process:
        return (
            f"realtime: publications cross processes through {type(layer).__module__}.{type(layer).__name__}"
        )
    return (
        "realtime: no multi-process channel layer is configured (in-memory): "
        "this process is a server of its own; set REDIS_URL (CHANNEL_LAYERS) to run several"
    )
