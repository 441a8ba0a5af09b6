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
import threading

from asgiref.sync import async_to_sync

from .errors import Unavailable
from .names import CONTROL_GROUP, group_name
from .registry import ChannelInfo

logger = logging.getLogger("realtime")

PUBLICATION = "rt.pub"
CONTROL = "rt.control"
PROBE = "rt.probe"
PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 2.0


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LocalBroker:
    """Delivers within this process, to every hub (one per event loop, usually one)."""

    kind = "local"
    multi_process = False

    async def start(self, hub) -> None:
        pass

    async def listen(self, name: str, hub) -> None:
        pass

    async def unlisten(self, name: str, hub) -> None:
        pass

    async def publish(self, name: str, frame: str, info) -> None:
        from .hub import live_hubs

        here = _running_loop()
        for hub in live_hubs():
            if hub.loop is here:
                hub.deliver(name, frame, None, info)
            else:
                hub.loop.call_soon_threadsafe(hub.deliver, name, frame, None, info)

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
                cid, cname, subchannels, anonymous = message["info"]
                info = ChannelInfo(cid, cname, subchannels, anonymous)
                hub.deliver(message["channel"], message["frame"], message["via"], info)
            elif kind == CONTROL:
                hub.request_revalidation()
            elif kind == PROBE:
                hub.probe_returned.set()

    async def listen(self, name: str, hub) -> None:
        await self.layer.group_add(group_name(name), hub.layer_channel)

    async def unlisten(self, name: str, hub) -> None:
        await self.layer.group_discard(group_name(name), hub.layer_channel)

    async def publish(self, name: str, frame: str, info) -> None:
        """One layer message per topic that may have listeners: the channel's own, its
        top-level tree (pattern subscribers), and bare patterns. Redis drops a PUBLISH
        nobody listens to, so a process only receives the copies it asked for."""
        message = {
            "type": PUBLICATION,
            "channel": name,
            "frame": frame,
            "info": [info.id, info.name, info.include_subchannels, info.anonymous_read],
        }
        tree = "tree:" + name.split("/", 1)[0]
        try:
            for key, via in ((name, "exact"), (tree, "tree"), ("*", "all")):
                await self.layer.group_send(group_name(key), {**message, "via": via})
        except (TimeoutError, OSError, ConnectionError) as error:
            raise Unavailable(f"the broker is unreachable: {error}") from error
        except Exception as error:
            if type(error).__module__.startswith("redis"):
                raise Unavailable(f"the broker is unreachable: {error}") from error
            raise

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
