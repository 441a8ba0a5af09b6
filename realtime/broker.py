"""Carries publications and control notices between server processes.

Two brokers share one small interface:

* :class:`LayerBroker` uses the configured Channels layer (channels_redis in
  production). Each server process holds one layer channel for its hub and joins one
  layer group per realtime channel that has local subscribers, so a publication
  crosses Redis once per process, already encoded, never once per subscriber.
* :class:`LocalBroker` is used when the layer is Channels' in-memory layer or there is
  none: one process only, so a publication goes straight to the local hub. Skipping
  the in-memory layer also skips its capacity of 100 queued messages, past which it
  drops group messages silently.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading

import msgpack
from asgiref.sync import async_to_sync, sync_to_async

from . import durable, history, presence, protocol
from .errors import Unavailable
from .names import CONTROL_GROUP, group_name
from .registry import ChannelInfo

logger = logging.getLogger("realtime")

PUBLICATION = "rt.pub"
CONTROL = "rt.control"
PROBE = "rt.probe"
READY = "rt.ready"
PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 2.0
READY_TIMEOUT = 5.0


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _topics(name: str) -> tuple[tuple[str, str], ...]:
    """The broker topics a publication on ``name`` goes to, with what each copy is for:
    the channel's own, its top-level tree (prefixed patterns) and bare patterns."""
    return ((name, "exact"), ("tree:" + name.split("/", 1)[0], "tree"), ("*", "all"))


async def _mirror(name: str, position, frame: str, info) -> None:
    """Write a durable channel's publication to the database (a thread hop, durable channels only)."""
    try:
        await sync_to_async(durable.store)(name, position.offset, position.epoch, frame, info)
    except Exception:
        logger.exception(
            "realtime: could not keep publication %s of %s in the database", position.offset, name
        )


class LocalBroker:
    """Delivers within this process, to every hub (one per event loop, usually one)."""

    kind = "local"
    multi_process = False

    def __init__(self) -> None:
        self.history = history.MemoryHistory()
        self.presence = presence.MemoryPresence()

    async def start(self, hub) -> None:
        pass

    async def listen(self, name: str, hub) -> None:
        pass

    async def unlisten(self, name: str, hub) -> None:
        pass

    async def publish(self, name: str, frame: str, info) -> history.Position | None:
        from .hub import live_hubs

        position = offset = None
        if info.has_history:
            stream = await self.history.prepare(name, info)
            # No await from numbering to delivery: subscribers see offsets in order.
            frame, position = self.history.append(stream, frame)
            offset = position.offset
        here = _running_loop()
        for hub in live_hubs():
            if hub.loop is here:
                hub.deliver(name, frame, None, info, offset)
            else:
                hub.loop.call_soon_threadsafe(hub.deliver, name, frame, None, info, offset)
        if position is not None and info.history_durable:
            await _mirror(name, position, frame, info)
        return position

    async def notice(self, name: str, frame: str) -> None:
        """A frame for the channel's exact subscribers that is no publication (join, leave)."""
        from .hub import live_hubs

        for hub in live_hubs():
            hub.loop.call_soon_threadsafe(hub.deliver, name, frame, "exact")

    def notify_changed(self) -> None:
        from .hub import live_hubs

        for hub in live_hubs():
            hub.loop.call_soon_threadsafe(hub.request_revalidation)


class LayerBroker:
    """Delivers through a Channels layer: one layer message per process per publication."""

    kind = "layer"
    multi_process = True

    def __init__(self, layer) -> None:
        self.layer = layer
        self.history, self._group_prefix = _redis_history(layer)
        self.presence = presence.RedisPresence(self.history.client) if self.history else None

    async def start(self, hub) -> None:
        hub.layer_channel = await self.layer.new_channel("realtime.hub.")
        await self.layer.group_add(CONTROL_GROUP, hub.layer_channel)
        hub.probe_returned = asyncio.Event()
        hub.spawn(self._receive(hub))
        hub.spawn(self._watch(hub))

    async def _watch(self, hub) -> None:
        """Notice the broker going away and coming back.

        Once a second the hub sends a probe to its own layer channel and waits for it to
        return through Redis: that proves publishing and the (re)subscribed listening
        connection both work. When probes return again after failing, publications may
        have been lost in between, so every local subscriber is told.
        """
        healthy = True
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            hub.probe_returned.clear()
            try:
                await asyncio.wait_for(self.layer.send(hub.layer_channel, {"type": PROBE}), PROBE_TIMEOUT)
                await asyncio.wait_for(hub.probe_returned.wait(), PROBE_TIMEOUT)
                ok = True
            except Exception:  # timeouts included
                ok = False
            if ok and not healthy:
                logger.warning(
                    "realtime: the broker is back; telling subscribers they may have missed messages"
                )
                hub.broker_recovered()
            elif healthy and not ok:
                logger.warning("realtime: the broker is unreachable; publications cannot be delivered")
            healthy = ok

    async def _receive(self, hub) -> None:
        while True:
            try:
                message = await self.layer.receive(hub.layer_channel)
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
                waiter = hub.ready_waiters.get(message["token"])
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif kind == CONTROL:
                hub.request_revalidation()
            elif kind == PROBE:
                hub.probe_returned.set()

    async def listen(self, name: str, hub) -> None:
        """Join the topic's group and return once Redis delivers it here.

        A SUBSCRIBE is sent without waiting for Redis to confirm it, so a message sent
        through the group is waited for: after that, nothing published can be missed
        (recovery from history relies on it).
        """
        group = group_name(name)
        await self.layer.group_add(group, hub.layer_channel)
        token = secrets.token_hex(8)
        waiter = hub.ready_waiters[token] = hub.loop.create_future()
        try:
            await self.layer.group_send(group, {"type": READY, "token": token})
            await asyncio.wait_for(waiter, READY_TIMEOUT)
        except TimeoutError:
            # Redis took the SUBSCRIBE and the PUBLISH but the probe is late (an overloaded
            # process, say): carry on; the outage watchdog reports a broker that is really gone.
            logger.warning("realtime: no confirmation from the broker for %s after %ss", name, READY_TIMEOUT)
        finally:
            hub.ready_waiters.pop(token, None)

    async def unlisten(self, name: str, hub) -> None:
        await self.layer.group_discard(group_name(name), hub.layer_channel)

    async def publish(self, name: str, frame: str, info) -> history.Position | None:
        """One layer message per topic that may have listeners (see :func:`_topics`).
        Redis drops a PUBLISH nobody listens to, so a process only receives the copies
        it asked for.

        On a channel with history, the Lua script in ``realtime.history`` numbers and
        stores the publication and PUBLISHes the copies in one atomic step, so every
        process receives a channel's publications in offset order.
        """
        message = {"type": PUBLICATION, "channel": name, "frame": frame, "info": info.as_list()}
        if info.has_history and self.history is None:
            raise Unavailable("history needs a Redis channel layer (channels_redis)")
        try:
            if not info.has_history:
                if self._group_prefix is not None:
                    # One round trip for the three copies, not one per copy.
                    await self.history.publish(
                        [
                            (f"{self._group_prefix}{group_name(key)}", msgpack.packb({**message, "via": via}))
                            for key, via in _topics(name)
                        ]
                    )
                    return None
                for key, via in _topics(name):
                    await self.layer.group_send(group_name(key), {**message, "via": via})
                return None
            if self._group_prefix is not None:
                copies = [
                    (f"{self._group_prefix}{group_name(key)}", _msgpack_head({**message, "via": via}))
                    for key, via in _topics(name)
                ]
                position, stamped = await self.history.append(name, frame, info, copies, _MSGPACK_MIDDLE)
            else:
                # A layer the script cannot publish through: number first, then send.
                # Publications from several processes at once may then arrive out of order.
                position, stamped = await self.history.append(name, frame, info)
                digits = f"{position.offset:0{history.OFFSET_DIGITS}d}"
                for key, via in _topics(name):
                    await self.layer.group_send(
                        group_name(key), {**message, "via": via, "offset": digits, "epoch": position.epoch}
                    )
        except (TimeoutError, OSError, ConnectionError) as error:
            raise Unavailable(f"the broker is unreachable: {error}") from error
        except Exception as error:
            if type(error).__module__.startswith("redis"):
                raise Unavailable(f"the broker is unreachable: {error}") from error
            raise
        if info.history_durable:
            await _mirror(name, position, stamped, info)
        return position

    async def notice(self, name: str, frame: str) -> None:
        """A frame for the channel's exact subscribers that is no publication (join, leave)."""
        message = {"type": PUBLICATION, "channel": name, "frame": frame, "info": None, "via": "exact"}
        try:
            await self.layer.group_send(group_name(name), message)
        except Exception:
            logger.warning("realtime: could not send a presence notice on %s", name, exc_info=True)

    def notify_changed(self) -> None:
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
_MSGPACK_OFFSET = msgpack.packb("offset") + bytes([0xA0 | history.OFFSET_DIGITS])
_MSGPACK_MIDDLE = msgpack.packb("epoch") + bytes([0xA0 | history.EPOCH_BYTES * 2])


def _msgpack_head(message: dict) -> bytes:
    """msgpack of ``message`` plus the two fields the script appends, up to the offset digits."""
    count = len(message) + 2
    assert count < 16  # a fixmap
    body = b"".join(msgpack.packb(key) + msgpack.packb(value) for key, value in message.items())
    return bytes([0x80 | count]) + body + _MSGPACK_OFFSET


def _redis_history(layer):
    """The history store for a Redis layer, and the prefix of its group pubsub channels
    when the Lua script can publish through it (None when it cannot)."""
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
        return history.RedisHistory(hosts[0]), prefix
    return history.RedisHistory(layer.hosts[0]), None


_pending_announcements: set = set()
_lock = threading.Lock()
_brokers: dict[int, object] = {}


def get_broker():
    """The broker for the configured layer (one per layer object)."""
    from channels.layers import InMemoryChannelLayer, get_channel_layer

    from .conf import settings

    layer = get_channel_layer(settings.CHANNEL_LAYER)
    key = id(layer)
    broker = _brokers.get(key)
    if broker is None:
        with _lock:
            broker = _brokers.get(key)
            if broker is None:
                if layer is None or isinstance(layer, InMemoryChannelLayer):
                    broker = LocalBroker()
                else:
                    broker = LayerBroker(layer)
                _brokers[key] = broker
    return broker


def describe() -> str:
    """One line for the startup log."""
    from channels.layers import get_channel_layer

    from .conf import settings

    layer = get_channel_layer(settings.CHANNEL_LAYER)
    broker = get_broker()
    if broker.multi_process:
        return (
            f"realtime: publications cross processes through {type(layer).__module__}.{type(layer).__name__}"
        )
    return (
        "realtime: no multi-process channel layer is configured (in-memory): "
        "this process is a server of its own; set REDIS_URL (CHANNEL_LAYERS) to run several"
    )


def notify_changed() -> None:
    """Tell every server process that keys or channels changed, so live connections are re-checked."""
    from . import auth, registry

    auth.cache.clear()
    registry.cache.clear()
    get_broker().notify_changed()
