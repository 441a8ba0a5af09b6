"""Limits across connections: what one client address, and anonymous clients, may hold
in one server process.

Internal. The per-connection limits live with the connection (``MAX_SUBSCRIPTIONS``,
``MAX_AUTH_FAILURES``...); these are the ones a client escapes by opening more
connections: WebSockets per process and per address, subscriptions and Bayeux sessions
per address, failed authentications per address over time, and the broker topics
anonymous clients make a process listen to. Addresses come from
``realtime.addresses.client_address`` (None: unknown, not counted).

Everything here is bounded by what it counts: an address has an entry only while it
holds connections or sessions, and the failure allowances are a table of at most
``MAX_TRACKED_ADDRESSES`` entries, oldest dropped first (forgetting an address only
gives it its allowance back, so an attacker with many addresses gains nothing by
filling the table). Nothing here runs per frame or per delivery: only when a
connection opens or closes, a subscription or a session begins, or credentials fail.
"""

from __future__ import annotations

import ipaddress
import logging
import time
import weakref

from .conf import settings
from .errors import CloseCode, TooManyAuthFailures, TooManySubscriptions

logger = logging.getLogger("realtime")

MAX_TRACKED_ADDRESSES = 10_000
PENDING = object()


class Quotas:
    """The counts of one process (module-level :data:`quotas`; tests make their own)."""

    def __init__(self) -> None:
        self.connections = 0
        self._connections: dict[str, int] = {}
        self._warned: set[str] = set()
        # Address -> its hub subscribers here (native connections and Bayeux sessions).
        self._subscribers: dict[str, set] = {}
        self._sessions: dict[str, int] = {}
        # Address -> [allowance left, when it was last computed] (a token bucket).
        self._failures: dict[str, list[float]] = {}
        # Hub -> {topic: the hub's set of names on it, when an anonymous client made the hub listen}.
        self._anonymous: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # WebSockets ----------------------------------------------------------------------

    def admit(self, address: str | None) -> CloseCode | None:
        """Count a new WebSocket, or say which close code refuses it (and count nothing)."""
        limit = settings.MAX_CONNECTIONS
        if limit is not None and self.connections >= limit:
            return CloseCode.TOO_MANY_CONNECTIONS
        if address is not None:
            held = self._connections.get(address, 0)
            limit = settings.MAX_CONNECTIONS_PER_ADDRESS
            if limit is not None and held >= limit:
                self._warn_if_proxy(address, limit)
                return CloseCode.TOO_MANY_CONNECTIONS_FROM_ADDRESS
            self._connections[address] = held + 1
        self.connections += 1
        return None

    def _warn_if_proxy(self, address: str, limit: int) -> None:
        """Say once if the address at its limit looks like a reverse proxy nobody trusts:
        then every client behind it shares one allowance."""
        if address in self._warned or settings.TRUSTED_PROXIES:
            return
        try:
            private = ipaddress.ip_address(address).is_private
        except ValueError:
            private = False
        if private and len(self._warned) < 100:
            self._warned.add(address)
            logger.warning(
                "realtime: %s holds MAX_CONNECTIONS_PER_ADDRESS (%d) WebSockets; if it is your "
                "reverse proxy, list it in REALTIME['TRUSTED_PROXIES'] (docs/deployment.md#hardening)",
                address,
                limit,
            )

    def release(self, address: str | None) -> None:
        """A WebSocket :meth:`admit` counted has ended."""
        self.connections -= 1
        if address is not None:
            held = self._connections.pop(address, 1) - 1
            if held > 0:
                self._connections[address] = held

    def connections_from(self, address: str | None) -> int:
        return self._connections.get(address, 0) if address is not None else 0

    # Subscribers and their subscriptions --------------------------------------------

    def add_subscriber(self, subscriber, address: str | None) -> None:
        """Count ``subscriber``'s subscriptions (a ``hub.Subscriber``) towards ``address``."""
        if address is not None:
            self._subscribers.setdefault(address, set()).add(subscriber)

    def remove_subscriber(self, subscriber, address: str | None) -> None:
        members = self._subscribers.get(address)
        if members is not None:
            members.discard(subscriber)
            if not members:
                del self._subscribers[address]

    def check_subscription(self, address: str | None) -> None:
        """Raise TooManySubscriptions if ``address`` holds ``MAX_SUBSCRIPTIONS_PER_ADDRESS``."""
        limit = settings.MAX_SUBSCRIPTIONS_PER_ADDRESS
        if limit is None or address is None:
            return
        # At most MAX_CONNECTIONS_PER_ADDRESS (+ sessions) members: cheap, and only on subscribe.
        held = sum(len(member.subscriptions) for member in self._subscribers.get(address, ()))
        if held >= limit:
            raise TooManySubscriptions(f"at most {limit} subscriptions from one address")

    # Bayeux sessions -----------------------------------------------------------------

    def add_session(self, address: str | None) -> bool:
        """Count a new Bayeux session; False (nothing counted) if ``address`` holds the most."""
        if address is None:
            return True
        held = self._sessions.get(address, 0)
        limit = settings.MAX_BAYEUX_SESSIONS_PER_ADDRESS
        if limit is not None and held >= limit:
            return False
        self._sessions[address] = held + 1
        return True

    def remove_session(self, address: str | None) -> None:
        if address is not None:
            held = self._sessions.pop(address, 1) - 1
            if held > 0:
                self._sessions[address] = held

    # Failed authentications ----------------------------------------------------------

    def _allowance(self, address: str, now: float) -> list[float] | None:
        bucket = self._failures.get(address)
        if bucket is None:
            return None
        limit = settings.AUTH_FAILURES_PER_ADDRESS or 1
        bucket[0] = min(limit, bucket[0] + (now - bucket[1]) * limit / settings.AUTH_FAILURE_WINDOW)
        bucket[1] = now
        return bucket

    def begin_auth(self, address: str | None) -> None:
        """Before checking credentials from ``address``: take one failure from its allowance.

        Raises TooManyAuthFailures (nothing taken) if none is left. Taken before the
        check, not after it fails, so that many attempts in flight at once (a flood over
        hundreds of connections) cannot all pass before the first failure is counted.
        Call :meth:`auth_succeeded` when the credentials turn out good.
        """
        limit = settings.AUTH_FAILURES_PER_ADDRESS
        if address is None or limit is None:
            return
        now = time.monotonic()
        bucket = self._allowance(address, now)
        if bucket is None:
            if len(self._failures) >= MAX_TRACKED_ADDRESSES:
                self._forget_failures(now)
            bucket = [float(limit), now]
        elif bucket[0] < 1:
            rate = limit / settings.AUTH_FAILURE_WINDOW
            raise TooManyAuthFailures(
                "too many failed authentications from this address; try again later",
                retry_after=(1 - bucket[0]) / rate,
            )
        else:
            del self._failures[address]  # re-inserted below: the table is kept oldest first
        bucket[0] -= 1
        self._failures[address] = bucket

    def auth_succeeded(self, address: str | None) -> None:
        """The credentials :meth:`begin_auth` was for were good (or not checked): give it back."""
        if address is None or settings.AUTH_FAILURES_PER_ADDRESS is None:
            return
        bucket = self._allowance(address, time.monotonic())
        if bucket is not None:
            bucket[0] += 1
            if bucket[0] >= settings.AUTH_FAILURES_PER_ADDRESS:
                del self._failures[address]  # nothing to remember

    def _forget_failures(self, now: float) -> None:
        """Make room: drop the addresses whose allowance is back, then the oldest."""
        for address in list(self._failures):
            bucket = self._allowance(address, now)
            if bucket is not None and bucket[0] >= (settings.AUTH_FAILURES_PER_ADDRESS or 1):
                del self._failures[address]
        for address in list(self._failures)[: max(0, len(self._failures) - MAX_TRACKED_ADDRESSES * 9 // 10)]:
            del self._failures[address]

    # Anonymous topics ----------------------------------------------------------------

    def reserve_anonymous_topic(self, hub, key: str) -> bool:
        """Before an anonymous client subscribes through topic ``key`` of ``hub``.

        Returns whether ``key`` is new to the hub; if so it is reserved, and the caller
        must call :meth:`anonymous_subscribed` once the subscribe ends, whatever the
        outcome. Raises TooManySubscriptions when anonymous clients already made the hub
        listen to ``MAX_ANONYMOUS_TOPICS`` topics it still listens to.
        """
        limit = settings.MAX_ANONYMOUS_TOPICS
        if key in hub.topics or limit is None:
            return False
        made = self._anonymous.get(hub)
        if made is None:
            made = self._anonymous[hub] = {}
        if len(made) >= limit:
            # Forget the topics the hub has stopped listening to (or listens to again,
            # for someone else: its names set is a new one then).
            for topic, names in list(made.items()):
                if names is not PENDING and hub.topics.get(topic) is not names:
                    del made[topic]
            if len(made) >= limit:
                raise TooManySubscriptions("this server takes no more channels from anonymous clients")
        made[key] = PENDING
        return True

    def anonymous_subscribed(self, hub, key: str) -> None:
        """The subscribe that reserved ``key`` has ended (subscribed or not)."""
        made = self._anonymous.get(hub, {})
        names = hub.topics.get(key)
        if names is None:
            made.pop(key, None)
        else:
            made[key] = names


quotas = Quotas()
