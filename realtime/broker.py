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
from dataclasses import dataclass, field
from typing import Protocol

import msgpack
from asgiref.sync import async_to_sync

from . import protocol, stats
from .errors import ErrorCode, InvalidData, RealtimeError, Unavailable
from .names import CONTROL_GROUP, group_name
from .positions import EPOCH_BYTES, OFFSET_DIGITS, Position
from .registry import ChannelInfo
from .stores.durable import DurableHistory
from .stores.history import MemoryHistory, RedisHistory
from .stores.nodes import BEAT_INTERVAL, Node, RedisNodes, new_node
from .stores.presence import MemoryPresence, RedisPresence
from .stores.redis import RedisConnection, unavailable

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

# ARGV: pairs of (pubsub channel, message). Every copy of a publication that keeps no
# history, in one round trip.
PUBLISH = """
for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end
return 0
"""


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

    def broker_recovered(self) -> None:
        """The broker was unreachable for a while: publications may have been lost."""

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
    async def publish(self, name: str, frame: str, info: ChannelInfo) -> Position | None: ...
    async def notice(self, name: str, frame: str) -> None: ...
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
        self._nodes: weakref.WeakKeyDictionary[Receiver, Node] = weakref.WeakKeyDictionary()

    def _live(self) -> list[Receiver]:
        return [hub for hub in list(self._hubs) if not hub.loop.is_closed()]

    async def start(self, hub: Receiver) -> None:
        self._hubs.add(hub)
        self._nodes[hub] = new_node()

    async def listen(self, topic: str, hub: Receiver) -> None:
        pass

    async def unlisten(self, topic: str, hub: Receiver) -> None:
        pass

    async def publish(self, name: str, frame: str, info: ChannelInfo) -> Position | None:
        position = offset = None
        if info.has_history:
            # No suspension from numbering to delivery: subscribers see offsets in order.
            position, frame = await self.history.append(name, frame, info)
            offset = position.offset
        here = _running_loop()
        for hub in self._live():
            if hub.loop is here:
                hub.deliver(name, frame, None, info, offset)
            else:
                _call_on(hub, hub.deliver, name, frame, None, info, offset)
        if position is not None:
            await self.history.persist(name, position, frame, info)
        return position

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


@dataclass(eq=False)
class _Link:
    """A hub's end of the layer: its layer channel, and what it waits for on it."""

    channel: str
    probe_returned: asyncio.Event = field(default_factory=asyncio.Event)
    ready: dict[str, asyncio.Future] = field(default_factory=dict)
    node: Node | None = None


class LayerBroker:
    """Delivers through a Channels layer: one layer message per process per publication."""

    kind = "layer"
    multi_process = True

    def __init__(self, layer) -> None:
        self.layer = layer
        self.history: DurableHistory | None = None
        self.presence: RedisPresence | None = None
        self.redis: RedisConnection | None = None
        self.nodes: RedisNodes | None = None
        host, self._group_prefix = _redis_host(layer)
        if host is not None:
            redis = self.redis = RedisConnection(host)
            self.history = DurableHistory(RedisHistory(redis))
            self.presence = RedisPresence(redis)
            self.nodes = RedisNodes(redis)
        self._links: weakref.WeakKeyDictionary[Receiver, _Link] = weakref.WeakKeyDictionary()

    async def start(self, hub: Receiver) -> None:
        link = _Link(await self.layer.new_channel("realtime.hub."))
        link.node = new_node(link.channel)
        await self.layer.group_add(CONTROL_GROUP, link.channel)
        self._links[hub] = link
        hub.spawn(self._receive(hub, link))
        hub.spawn(self._watch(hub, link))
        if self.nodes is not None:
            hub.spawn(self._beat(link.node))

    async def _beat(self, node: Node) -> None:
        """Keep this hub listed in the node registry."""
        while True:
            try:
                await self.nodes.beat(node)
            except Exception as error:
                logger.debug("realtime: could not renew the node registry entry: %s", error)
            await asyncio.sleep(BEAT_INTERVAL)

    async def _watch(self, hub: Receiver, link: _Link) -> None:
        """Notice the broker going away and coming back.

        Once a second the hub sends a probe to its own layer channel and waits for it to
        return through Redis: that proves publishing and the (re)subscribed listening
        connection both work. When probes return again after failing, publications may
        have been lost in between, so every local subscriber is told.
        """
        healthy = True
        counters = stats.counters
        last = hub.loop.time()
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            link.probe_returned.clear()
            sent = hub.loop.time()
            try:
                await asyncio.wait_for(self.layer.send(link.channel, {"type": PROBE}), PROBE_TIMEOUT)
                await asyncio.wait_for(link.probe_returned.wait(), PROBE_TIMEOUT)
                ok = True
                counters.round_trip.observe(hub.loop.time() - sent)
            except Exception:  # timeouts included
                ok = False
                counters.redis_errors += 1
                counters.outage_seconds += hub.loop.time() - last
            last = hub.loop.time()
            counters.broker_up = int(ok)
            if ok and not healthy:
                logger.warning(
                    "realtime: the broker is back; telling subscribers they may have missed messages"
                )
                hub.broker_recovered()
            elif healthy and not ok:
                logger.warning("realtime: the broker is unreachable; publications cannot be delivered")
            healthy = ok

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
                link.probe_returned.set()
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
                await _first(collector, subscribed, max(0.0, give_up - loop.time()))
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
                await _first(collector, finished, max(0.0, give_up - loop.time()))
        finally:
            # Cancelling the receive also unsubscribes the reply channel (channels_redis).
            collector.cancel()
            await asyncio.wait([collector])
        missing = [known.identity() for key, known in (expected or {}).items() if key not in answers]
        return Replies(list(answers.values()), missing)

    async def listen(self, topic: str, hub: Receiver) -> None:
        """Join the topic's group and return once Redis delivers it here.

        A SUBSCRIBE is sent without waiting for Redis to confirm it, so a message sent
        through the group is waited for: after that, nothing published can be missed
        (recovery from history relies on it).
        """
        link = self._links[hub]
        group = group_name(topic)
        await self.layer.group_add(group, link.channel)
        token = secrets.token_hex(8)
        waiter = link.ready[token] = hub.loop.create_future()
        try:
            await self.layer.group_send(group, {"type": READY, "token": token})
            await asyncio.wait_for(waiter, READY_TIMEOUT)
        except TimeoutError:
            # Redis took the SUBSCRIBE and the PUBLISH but the probe is late (an overloaded
            # process, say): carry on; the outage watchdog reports a broker that is really gone.
            logger.warning("realtime: no confirmation from the broker for %s after %ss", topic, READY_TIMEOUT)
        finally:
            link.ready.pop(token, None)

    async def unlisten(self, topic: str, hub: Receiver) -> None:
        link = self._links.get(hub)
        if link is not None:
            await self.layer.group_discard(group_name(topic), link.channel)

    async def publish(self, name: str, frame: str, info: ChannelInfo) -> Position | None:
        """One layer message per topic that may have listeners (see :func:`_topics`).
        Redis drops a PUBLISH nobody listens to, so a process only receives the copies
        it asked for.

        On a channel with history, the Lua script in ``realtime.stores.history``
        numbers and stores the publication and PUBLISHes the copies in one atomic step,
        so every process receives a channel's publications in offset order.
        """
        message = {"type": PUBLICATION, "channel": name, "frame": frame, "info": info.as_list()}
        if info.has_history and self.history is None:
            raise Unavailable("history needs a Redis channel layer (channels_redis)")
        with unavailable("the broker"):
            if not info.has_history:
                if self._group_prefix is not None:
                    # One round trip for the three copies, not one per copy.
                    copies = [
                        (f"{self._group_prefix}{group_name(key)}", msgpack.packb({**message, "via": via}))
                        for key, via in _topics(name)
                    ]
                    parts = [part for copy in copies for part in copy]
                    await self.redis.run(PUBLISH, [], parts, "the broker")
                    return None
                for key, via in _topics(name):
                    await self.layer.group_send(group_name(key), {**message, "via": via})
                return None
            if self._group_prefix is not None:
                heads = [
                    (f"{self._group_prefix}{group_name(key)}", _msgpack_head({**message, "via": via}))
                    for key, via in _topics(name)
                ]
                position, stamped = await self.history.append(name, frame, info, heads, _MSGPACK_MIDDLE)
            else:
                # A layer the script cannot publish through: number first, then send.
                # Publications from several processes at once may then arrive out of order.
                position, stamped = await self.history.append(name, frame, info)
                digits = f"{position.offset:0{OFFSET_DIGITS}d}"
                for key, via in _topics(name):
                    await self.layer.group_send(
                        group_name(key), {**message, "via": via, "offset": digits, "epoch": position.epoch}
                    )
        await self.history.persist(name, position, stamped, info)
        return position

    async def notice(self, name: str, frame: str) -> None:
        """A frame for the channel's exact subscribers that is no publication (join, leave)."""
        message = {"type": PUBLICATION, "channel": name, "frame": frame, "info": None, "via": "exact"}
        try:
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


async def _first(collector: asyncio.Task, event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event``, at most ``timeout`` seconds; a collector that failed raises."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([collector, waiter], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if collector.done() and not collector.cancelled() and collector.exception() is not None:
        raise collector.exception()


def _msgpack_head(message: dict) -> bytes:
    """msgpack of ``message`` plus the two fields the script appends, up to the offset digits."""
    count = len(message) + 2
    assert count < 16  # a fixmap
    body = b"".join(msgpack.packb(key) + msgpack.packb(value) for key, value in message.items())
    return bytes([0x80 | count]) + body + _MSGPACK_OFFSET


def _redis_host(layer) -> tuple[dict | None, str | None]:
    """The Redis host of a channels_redis layer (None for other layers), and the prefix
    of its group pubsub channels when the Lua scripts can publish through it (None when
    they cannot: encryption, a prefix in the serialisation, several hosts)."""
    from channels_redis.utils import decode_hosts

    module = type(layer).__module__
    if not module.startswith("channels_redis"):
        return None, None
    if module == "channels_redis.pubsub":
        options = layer._kwargs
        hosts = decode_hosts(options.get("hosts") or (layer._args[0] if layer._args else None))
        probe = {"type": "x", "n": [1, True]}
        plain = layer.serialize(probe) == msgpack.packb(probe)  # no encryption or prefix
        prefix = f"{options.get('prefix', 'asgi')}__group__" if plain and len(hosts) == 1 else None
        return hosts[0], prefix
    return layer.hosts[0], None


_pending_announcements: set = set()
_lock = threading.Lock()
# One broker per layer object, kept as long as the layer is: Channels makes new layer
# objects when CHANNEL_LAYERS changes (override_settings), and a new object never meets
# the broker of an old one, even if it reuses the old one's id.
_brokers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_no_layer: LocalBroker | None = None


def get_broker() -> Broker:
    """The broker for the configured layer (one per layer object)."""
    from channels.layers import InMemoryChannelLayer, get_channel_layer

    from .conf import settings

    global _no_layer
    layer = get_channel_layer(settings.CHANNEL_LAYER)
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
