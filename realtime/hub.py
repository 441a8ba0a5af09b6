"""The process-local hub: who is subscribed to what here, and the fan-out.

Internal. There is one hub per event loop (a server process has one; see
``realtime.runtime``). Connections register with it; it listens on the broker's topic
for a channel when the first local subscriber arrives and stops after the last one
goes. A publication arriving from the broker is already an encoded frame:
:meth:`Hub.deliver` hands that same string to each local subscriber, synchronously,
with no JSON encode, channel-layer message, thread hop or task per delivery.

The hub runs no database queries. When keys or channels change it calls
``on_change`` (``realtime.revalidation`` re-checks the connections and tells them
through the :class:`Subscriber` methods).

Pattern subscribers are served from each connection's cached decisions
(``Subscriber.readable``: concrete channel -> may it read it), a dict lookup per
delivery. A channel that a connection's pattern reaches for the first time has no
decision yet: its publications for that connection are held (up to
``MAX_PENDING_FRAMES``), the policy is asked in a task of its own, and the held ones are
then delivered in order, or dropped if it refused. Fan-out never waits for a policy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from . import events, signals
from .auth import Principal
from .broker import Broker
from .conf import settings
from .errors import Unavailable
from .names import lineage, pattern_prefix, patterns_matching, topic
from .permissions import may_read, may_read_now
from .protocol import join_frame, leave_frame, missed_frame
from .stats import counters

logger = logging.getLogger("realtime")

# How long after a recovery live copies of recovered publications may still arrive.
SKIP_SECONDS = 5.0


class Subscriber(Protocol):
    """What the hub needs from a connection (native consumers, Bayeux sessions, SSE streams)."""

    principal: Principal | None
    subscriptions: set[str]
    client_id: str  # public: shown in presence
    protocol_name: str  # "native" or "bayeux", for the lifecycle signals
    # Policy decisions for this principal (cleared when it changes, re-asked by
    # revalidation): channels reached through a pattern -> may it read them; channels
    # published on -> why not (None: it may).
    readable: dict[str, bool]
    writable: dict[str, str | None]
    # Optional: the client address its subscriptions count towards (realtime.quotas).
    address: str | None

    def push(self, frame: str) -> None:
        """Send one encoded frame; never blocks, never raises."""

    def drop_subscription(self, name: str, reason: str) -> None:
        """Access to ``name`` was withdrawn: unsubscribe and tell the client why."""

    def drop_principal(self, reason: str) -> None:
        """The credentials stopped being valid: log out and tell the client why."""

    def replace_principal(self, principal: Principal) -> None:
        """The same credentials, re-read from the database (a key's scope may have changed)."""

    def disconnect(self, code: int, reason: str = "") -> None:
        """Close the connection, after what is queued (the server API's ``disconnect``);
        ``code`` tells the client whether to reconnect."""


class Hub:
    def __init__(self, loop: asyncio.AbstractEventLoop, broker: Broker) -> None:
        self.loop = loop
        self.broker = broker
        # Called when keys or channels changed (set by realtime.runtime).
        self.on_change: Callable[[], None] | None = None
        # Carries out server API commands (set by realtime.runtime: realtime.operations).
        self.on_command: Callable[[dict], Awaitable[dict]] | None = None
        # Channel -> publications delivered here, while the server API measures rates
        # (realtime.operations turns it on while someone asks; None: not counting).
        self.published: dict[str, int] | None = None
        # Subscription name (a channel, or a pattern such as rooms/*) -> its local subscribers.
        self.subscribers: dict[str, set[Subscriber]] = {}
        self.patterns: set[str] = set()
        # Channels whose subscribers also get the publications below them (bubbling):
        # each listens on its tree's topic too, as the pattern name/** would.
        self.bubbling: set[str] = set()
        # Broker topic (names.topic) -> the subscription names listening through it.
        self.topics: dict[str, set[str]] = {}
        self.connections: set[Subscriber] = set()
        # Channel -> connections recovering from history: their live publications are
        # held back (with offsets) until the stored ones have been sent.
        self.holding: dict[str, dict[Subscriber, list[tuple[int | None, str]]]] = {}
        # Channel -> connections that recovered up to an offset, and until when: live
        # copies at or below it are dropped. The history is read over another Redis
        # connection than the one live publications arrive on, so a publication may be
        # read a moment before it arrives. (Only for a moment: after a Redis flush,
        # offsets start again from 1.)
        self.skipping: dict[str, dict[Subscriber, tuple[int, float]]] = {}
        # Channel with presence -> (its configuration, local connections with an entry).
        self.present: dict[str, tuple[object, set[Subscriber]]] = {}
        # (connection, channel) -> publications held while the policy decides whether a
        # pattern of the connection may deliver that channel.
        self.deciding: dict[tuple[Subscriber, str], list[str]] = {}
        # Connections authenticated with a token that ends: the timer that ends it.
        self.expiries: dict[Subscriber, asyncio.TimerHandle] = {}
        self.started: asyncio.Task
        self._listening: dict[str, asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        await self.broker.start(self)
        self.spawn(self._renew_presence())

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def spawn(self, coro) -> asyncio.Task:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # Connections and subscriptions -------------------------------------------------

    def add(self, conn: Subscriber) -> None:
        self.connections.add(conn)

    def remove(self, conn: Subscriber) -> None:
        self.connections.discard(conn)
        self.watch_expiry(conn, None)
        for name in list(conn.subscriptions):
            self.unsubscribe(conn, name, "closed")

    def watch_expiry(self, conn: Subscriber, principal: Principal | None) -> None:
        """End ``conn``'s authentication (``drop_principal("token_expired")``) when the
        token ``principal`` stands for ends; None (or a principal that does not end)
        stops watching."""
        timer = self.expiries.pop(conn, None)
        if timer is not None:
            timer.cancel()
        if principal is None or not principal.is_token or principal.expires_at is None:
            return
        delay = max(0.0, principal.expires_at.timestamp() - time.time())
        self.expiries[conn] = self.loop.call_later(delay, self._expired, conn, principal)

    def _expired(self, conn: Subscriber, principal: Principal) -> None:
        self.expiries.pop(conn, None)
        if conn.principal is principal and conn in self.connections:
            conn.drop_principal("token_expired")

    async def subscribe(self, conn: Subscriber, name: str, hold: bool = False, bubble: bool = False) -> None:
        """Add a local subscriber (to a channel or a pattern); returns once the broker
        delivers its topic here.

        With ``hold``, publications for ``conn`` on ``name`` are kept back until
        :meth:`stop_holding` (the connection is recovering from history meanwhile).
        With ``bubble``, the channel's subscribers also get the publications on every
        channel below it.
        """
        key = topic(name)
        if hold:
            self.holding.setdefault(name, {})[conn] = []
        subs = self.subscribers.get(name)
        if subs is None:
            subs = self.subscribers[name] = set()
            if key != name:
                self.patterns.add(name)
            self._join_topic(key, name)
        subs.add(conn)
        conn.subscriptions.add(name)
        if bubble and name not in self.bubbling:
            self.bubbling.add(name)
            self._join_topic(topic(name + "/**"), name)
        if name in self.bubbling:
            await self._wait_listening(topic(name + "/**"))
        await self._wait_listening(key)

    def _join_topic(self, key: str, name: str) -> None:
        names = self.topics.get(key)
        if names is None:
            names = self.topics[key] = set()
            self._listening[key] = self.loop.create_task(self.broker.listen(key, self))
        names.add(name)

    def _leave_topic(self, key: str, name: str) -> None:
        names = self.topics.get(key)
        if names is not None:
            names.discard(name)
            if not names:
                del self.topics[key]
                self._listening.pop(key, None)
                self.spawn(self._unlisten(key))

    async def _wait_listening(self, key: str) -> None:
        pending = self._listening.get(key)
        if pending is None:
            return
        try:
            await asyncio.shield(pending)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if self._listening.get(key) is pending:
                del self._listening[key]
                for lost in self.topics.pop(key, ()):
                    self.patterns.discard(lost)
                    if lost in self.bubbling:
                        self.bubbling.discard(lost)
                        for other_key in (topic(lost), topic(lost + "/**")):
                            if other_key != key:
                                self._leave_topic(other_key, lost)
                    for other in self.subscribers.pop(lost, ()):
                        other.subscriptions.discard(lost)
            logger.warning("realtime: could not listen to %s on the broker: %s", key, error)
            raise Unavailable("the broker is unreachable") from error
        if self._listening.get(key) is pending:
            del self._listening[key]

    def stop_holding(self, conn: Subscriber, name: str) -> list[tuple[int | None, str]]:
        """Stop holding ``conn``'s publications on ``name``; returns those held, in order."""
        held = self.holding.get(name)
        if held is None:
            return []
        frames = held.pop(conn, [])
        if not held:
            del self.holding[name]
        return frames

    def sent_up_to(self, conn: Subscriber, name: str, offset: int) -> None:
        """``conn`` has been sent ``name``'s publications up to ``offset``: drop live
        copies of those that are still on their way (until a newer one arrives)."""
        self.skipping.setdefault(name, {})[conn] = (offset, self.loop.time() + SKIP_SECONDS)

    def held(self, conn: Subscriber, name: str) -> list[tuple[int | None, str]]:
        return self.holding.get(name, {}).get(conn, [])

    def unsubscribe(self, conn: Subscriber, name: str, reason: str | None = None) -> None:
        """Remove a local subscriber. With a ``reason`` (``client``, ``closed``, a notice's
        reason), a subscription that existed is reported to ``signals.unsubscribed``."""
        if reason is not None and name in conn.subscriptions:
            events.connection_event(signals.unsubscribed, conn, channel=name, reason=reason)
        conn.subscriptions.discard(name)
        if name in self.holding:
            self.stop_holding(conn, name)
        if name in self.skipping:
            self._stop_skipping(name, conn)
        present = self.present.get(name)
        if present is not None and conn in present[1]:
            present[1].discard(conn)
            if not present[1]:
                del self.present[name]
            self.spawn(self._leave(name, conn.client_id, present[0]))
        subs = self.subscribers.get(name)
        if subs is None or conn not in subs:
            return
        subs.discard(conn)
        if subs:
            return
        del self.subscribers[name]
        self.patterns.discard(name)
        if self.published is not None:
            self.published.pop(name, None)
        if name in self.bubbling:
            self.bubbling.discard(name)
            self._leave_topic(topic(name + "/**"), name)
        self._leave_topic(topic(name), name)

    async def _unlisten(self, key: str) -> None:
        try:
            await self.broker.unlisten(key, self)
        except Exception as error:
            logger.warning("realtime: could not leave %s on the broker: %s", key, error)

    # Fan-out -----------------------------------------------------------------------

    def deliver(
        self, name: str, frame: str, via: str | None = None, info=None, offset: int | None = None
    ) -> None:
        """Hand one encoded publication on ``name`` to every local subscriber, once each.

        ``via`` says which broker topic carried this copy (``exact``, ``tree`` or
        ``all``; None when the publication was made in this process and arrives once).
        Each connection is served by exactly one copy: exact subscribers by the exact
        one, pattern subscribers by the tree or the bare-pattern one. ``info`` is the
        channel the publisher resolved; pattern subscribers only get what they may read.
        ``offset`` is the publication's place in the channel's history, if it has one.
        """
        if via is None or via == "exact":
            subs = self.subscribers.get(name)
            if subs:
                # Counted per publication, not per delivery: off the per-subscriber loop.
                counters.delivered += len(subs)
                published = self.published
                if published is not None:
                    published[name] = published.get(name, 0) + 1
                if name not in self.holding and name not in self.skipping:
                    for conn in subs:
                        conn.push(frame)
                else:
                    self._deliver_recovering(name, subs, frame, offset)
            if via == "exact":
                return
        if self.patterns or self.bubbling:
            self._deliver_to_patterns(name, frame, via, info)

    def _deliver_recovering(self, name: str, subs, frame: str, offset: int | None) -> None:
        """Deliver to a channel where some connections are recovering from history."""
        holding = self.holding.get(name, {})
        skipping = self.skipping.get(name, {})
        for conn in list(subs):
            held = holding.get(conn)
            if held is not None:
                held.append((offset, frame))
                continue
            mark = skipping.get(conn)
            if mark is not None and offset is not None:
                if offset <= mark[0] and self.loop.time() < mark[1]:
                    continue  # sent already, from the history
                self._stop_skipping(name, conn)
            conn.push(frame)

    def _stop_skipping(self, name: str, conn: Subscriber) -> None:
        skipping = self.skipping.get(name)
        if skipping is not None:
            skipping.pop(conn, None)
            if not skipping:
                del self.skipping[name]

    def _deliver_to_patterns(self, name: str, frame: str, via: str | None, info) -> None:
        exact = self.subscribers.get(name, ())
        seen: set = set()
        pushed = 0
        # Prefixed patterns and bubbling ancestors (both served by the tree copy) come
        # first, so a connection that also holds a bare pattern is served by the tree
        # copy and skipped when the bare-pattern copy arrives.
        order = [(pattern, bool(pattern_prefix(pattern))) for pattern in patterns_matching(name)]
        if self.bubbling:
            bubbled = [(parent, True) for parent in lineage(name)[1:] if parent in self.bubbling]
            order = [o for o in order if o[1]] + bubbled + [o for o in order if not o[1]]
        for pattern, by_tree in order:
            subs = self.subscribers.get(pattern)
            if not subs:
                continue
            responsible = via is None or (via == "tree") == by_tree
            for conn in subs:
                if conn in exact or conn in seen:
                    continue
                seen.add(conn)
                if responsible and info is not None:
                    allowed = conn.readable.get(name)
                    if allowed:
                        conn.push(frame)
                        pushed += 1
                    elif allowed is None and self._undecided(conn, name, info, frame):
                        pushed += 1
        counters.delivered += pushed

    def _reaches(self, conn: Subscriber, name: str) -> bool:
        """Whether one of ``conn``'s patterns, or a bubbling channel above ``name`` that it
        subscribes to, still delivers ``name`` to it."""
        if any(pattern in conn.subscriptions for pattern in patterns_matching(name)):
            return True
        return any(parent in conn.subscriptions and parent in self.bubbling for parent in lineage(name)[1:])

    def _undecided(self, conn: Subscriber, name: str, info, frame: str) -> bool:
        """Deliver ``frame`` once the policy has decided on ``name`` for ``conn``: at once
        when it can answer without awaiting (True if it was pushed), else held until its
        task has decided."""
        key = (conn, name)
        held = self.deciding.get(key)
        if held is None:
            allowed = may_read_now(conn.principal, name, info)
            if allowed is not None:
                if len(conn.readable) >= settings.DECISION_CACHE_SIZE:
                    conn.readable.clear()
                conn.readable[name] = allowed
                if allowed:
                    conn.push(frame)
                return allowed
            self.deciding[key] = [frame]
            self.spawn(self._decide(conn, name, info))
        elif len(held) < settings.MAX_PENDING_FRAMES:
            held.append(frame)
        return False

    async def _decide(self, conn: Subscriber, name: str, info) -> None:
        key = (conn, name)
        allowed = False
        try:
            while True:
                principal = conn.principal
                allowed = await may_read(principal, name, info)
                if conn.principal is principal:  # not logged in or out meanwhile
                    break
        except Exception:
            logger.exception("realtime: the policy failed deciding on %s; not delivering it", name)
        finally:
            held = self.deciding.pop(key, [])
        if conn not in self.connections or not self._reaches(conn, name):
            return
        if len(conn.readable) >= settings.DECISION_CACHE_SIZE:
            conn.readable.clear()
        conn.readable[name] = allowed
        if allowed:
            for frame in held:
                conn.push(frame)

    def broker_recovered(self, affected: Callable[[str], bool] | None = None) -> None:
        """The broker was unreachable for a while: every subscription (or those that
        ``affected`` names, the ones on one Redis shard) may have a gap."""
        for conn in list(self.connections):
            for name in list(conn.subscriptions):
                if affected is None or affected(name):
                    conn.push(missed_frame(name, "broker_unavailable"))

    # Presence ----------------------------------------------------------------------

    async def join(self, conn: Subscriber, name: str, info) -> None:
        """Record ``conn`` as present on ``name`` (which it has subscribed to)."""
        user = conn.principal.user if conn.principal is not None else None
        self.present.setdefault(name, (info, set()))[1].add(conn)
        change = await self.broker.presence.add(name, conn.client_id, user, settings.PRESENCE_TTL)
        await self.presence_changed(name, info, change)

    async def _leave(self, name: str, client_id: str, info) -> None:
        try:
            change = await self.broker.presence.remove(name, client_id)
            await self.presence_changed(name, info, change)
        except Exception as error:
            # The entry expires by itself within PRESENCE_TTL.
            logger.warning("realtime: could not remove a presence entry on %s: %s", name, error)

    async def presence_changed(self, name: str, info, change) -> None:
        """Announce what a presence call of this process changed (a ``stores.presence.Change``):
        this process is the only one told, so it tells subscribers and the cluster-wide
        signals (and so the webhooks) exactly once."""
        hub = type(self)
        for member in change.left:
            events.emit(signals.member_left, hub, channel=name, member=member)
        if change.vacated:
            events.emit(signals.channel_vacated, hub, channel=name)
        if change.occupied:
            events.emit(signals.channel_occupied, hub, channel=name)
        if change.joined is not None:
            events.emit(signals.member_joined, hub, channel=name, member=change.joined)
        if info.join_leave:
            for member in change.left:
                await self.broker.notice(name, leave_frame(name, member))
            if change.joined is not None:
                await self.broker.notice(name, join_frame(name, change.joined))

    async def _renew_presence(self) -> None:
        """Renew this process's entries; sweeping on the way announces members whose
        process died (their entries stopped being renewed)."""
        while True:
            ttl = settings.PRESENCE_TTL
            await asyncio.sleep(ttl / 3)
            for name, (info, conns) in list(self.present.items()):
                try:
                    change = await self.broker.presence.refresh(name, [c.client_id for c in conns], ttl)
                    await self.presence_changed(name, info, change)
                except Exception as error:
                    logger.warning("realtime: could not renew presence on %s: %s", name, error)

    # What the broker calls besides deliver ----------------------------------------

    def changed(self) -> None:
        """Keys or channels changed somewhere (announced through the broker)."""
        if self.on_change is not None:
            self.on_change()

    async def operate(self, command: dict) -> dict:
        """A server API command, sent through the broker (``realtime.operations``)."""
        if self.on_command is None:
            raise Unavailable("this process is still starting")
        return await self.on_command(command)
