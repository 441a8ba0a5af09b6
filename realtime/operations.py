"""What one hub does for the server API: the commands the broker carries to it.

Internal. ``realtime.api`` sends a command to every hub (``Broker.request``); the
broker hands it to :meth:`Hub.operate`, which calls :meth:`Operator.handle` (attached
by ``realtime.runtime``). Each command acts on this hub's own connections and returns
a small result (plain lists and dicts, which the layer carries as msgpack);
``realtime.api`` adds up the results of every process.

Connections are reached through the hub's ``Subscriber`` protocol (``disconnect``,
``drop_subscription``, ``push``) and a server-side subscribe goes through
``realtime.actions.subscribe``, with the same access checks as a client's own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from . import __version__, actions, protocol, stats
from .errors import InvalidData, RealtimeError
from .hub import Hub, Subscriber
from .names import validate_subscription_name

# Seconds over which publication rates are measured, and how long after a channels
# call they go on being measured (counting costs a little per publication).
RATE_WINDOW = 5.0
WATCH_SECONDS = 60.0
# The reason in the notice a connection gets when the server API unsubscribes it.
UNSUBSCRIBED_BY_SERVER = "server"


def counts(hub: Hub) -> dict:
    """Connections (by protocol, and authenticated), subscriptions and channels of a hub."""
    connections: dict[str, int] = {}
    authenticated: dict[str, int] = {}
    for conn in list(hub.connections):
        kind = getattr(conn, "protocol_name", "native")
        connections[kind] = connections.get(kind, 0) + 1
        if conn.principal is not None:
            authenticated[kind] = authenticated.get(kind, 0) + 1
    subscribers = list(hub.subscribers.values())
    return {
        "connections": connections,
        "authenticated": authenticated,
        "subscriptions": sum(len(subs) for subs in subscribers),
        "channels": len(subscribers) - len(hub.patterns),
    }


def matching(hub: Hub, user: str | None, client: str | None) -> Iterator[Subscriber]:
    """The hub's connections of the Django user with the pk ``user`` (as a string),
    and/or with the public client id ``client``."""
    for conn in list(hub.connections):
        if client is not None and conn.client_id != client:
            continue
        if user is not None:
            principal = conn.principal
            if principal is None or principal.user_id is None or str(principal.user_id) != user:
                continue
        yield conn


class Operator:
    """Carries out the server API's commands on one hub."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.started = time.time()
        # Channel -> publications per second over the last window (None until measured).
        self.rates: dict[str, float] | None = None
        self.watched_until = 0.0
        self.counting_since = 0.0
        hub.on_command = self.handle
        hub.spawn(self._measure())

    async def handle(self, command: dict) -> dict:
        call = command.get("call")
        handler = CALLS.get(call)
        if handler is None:
            raise InvalidData(f"unknown server API call {call!r}")
        stats.counters.add(stats.counters.commands, call)
        return await handler(self, command)

    def _watch(self) -> None:
        """Count publications per channel from now until WATCH_SECONDS after the last ask."""
        now = self.hub.loop.time()
        self.watched_until = now + WATCH_SECONDS
        if self.hub.published is None:
            self.hub.published = {}
            self.counting_since = now

    async def _measure(self) -> None:
        """Turn the hub's per-channel publication counts into rates, once a window."""
        hub = self.hub
        while True:
            await asyncio.sleep(RATE_WINDOW)
            window = hub.published
            if window is None:
                continue
            now = hub.loop.time()
            elapsed = max(now - self.counting_since, 1e-3)
            if now > self.watched_until:
                hub.published, self.rates = None, None
                continue
            hub.published, self.counting_since = {}, now
            self.rates = {name: count / elapsed for name, count in window.items()}

    # Commands ----------------------------------------------------------------------

    async def info(self, command: dict) -> dict:
        return {"version": __version__, "uptime": round(time.time() - self.started, 3), **counts(self.hub)}

    async def channels(self, command: dict) -> dict:
        prefix = command.get("prefix") or ""
        self._watch()
        hub, rates = self.hub, self.rates
        found = []
        for name, subs in list(hub.subscribers.items()):
            if subs and name not in hub.patterns and name.startswith(prefix):
                rate = None if rates is None else round(rates.get(name, 0.0), 3)
                found.append([name, len(subs), rate])
        return {"channels": found}

    async def disconnect(self, command: dict) -> dict:
        found = list(matching(self.hub, command.get("user"), command.get("client")))
        for conn in found:
            conn.disconnect(int(command["code"]), command.get("reason") or "")
        return {"clients": [conn.client_id for conn in found]}

    async def unsubscribe(self, command: dict) -> dict:
        name = validate_subscription_name(command["channel"])
        found = [
            conn
            for conn in matching(self.hub, command.get("user"), command.get("client"))
            if name in conn.subscriptions
        ]
        for conn in found:
            conn.drop_subscription(name, UNSUBSCRIBED_BY_SERVER)
        return {"clients": [conn.client_id for conn in found]}

    async def subscribe(self, command: dict) -> dict:
        """Subscribe matching connections as if they had asked (the same checks apply);
        each is told with a ``subscribed`` notice."""
        name = validate_subscription_name(command["channel"])
        subscribed, already, refused = [], [], []
        for conn in list(matching(self.hub, command.get("user"), command.get("client"))):
            if name in conn.subscriptions:
                already.append(conn.client_id)
                continue
            try:
                result = await actions.subscribe(self.hub, conn, name)
            except RealtimeError as error:
                refused.append([conn.client_id, error.code.value, error.detail])
                continue
            # No await from here: what was recovered follows the notice.
            conn.push(protocol.subscribed_frame(name, result.reply))
            for frame in result.frames:
                conn.push(frame)
            subscribed.append(conn.client_id)
        return {"clients": subscribed, "already": already, "refused": refused}


CALLS = {
    "info": Operator.info,
    "channels": Operator.channels,
    "disconnect": Operator.disconnect,
    "unsubscribe": Operator.unsubscribe,
    "subscribe": Operator.subscribe,
}
