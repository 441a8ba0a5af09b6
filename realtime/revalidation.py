"""Re-checking live connections against the database.

Internal. A live connection keeps what it was allowed when it authenticated and
subscribed; this module takes it away when that changes: a key revoked, expired or
given a new secret, a token user deactivated or deleted, a token's grant narrowed or
withdrawn (``TOKEN_GRANT`` is run again for the users of tokens it gave), a token's
session ended, a channel deactivated or deleted, a scope narrowed, a policy that now
says no. Every cached policy decision is asked again (see ``realtime.permissions``).
It runs at once when a change is announced (through the broker, from any process) and
every ``REVALIDATE_INTERVAL`` seconds, for changes made behind the models' back (bulk
updates, expiry, other tools). Requests made while a check runs are coalesced into
one more.

Connections are told through the hub's :class:`~realtime.hub.Subscriber` methods; the
hub itself runs no queries.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.utils import timezone

from . import auth, permissions, registry, tokens
from .hub import Hub
from .names import is_pattern, pattern_prefix

logger = logging.getLogger("realtime")


class Revalidator:
    """Re-checks one hub's connections."""

    def __init__(self, hub: Hub, interval: float) -> None:
        self.hub = hub
        self._running: asyncio.Task | None = None
        self._again = False
        hub.on_change = self.request
        if interval:
            hub.spawn(self._periodic(interval))

    def request(self) -> None:
        """Re-check live connections soon; requests made meanwhile are coalesced."""
        if self._running is not None:
            self._again = True
            return
        self._running = self.hub.spawn(self._loop())

    async def _loop(self) -> None:
        try:
            while True:
                self._again = False
                try:
                    await self.revalidate()
                except Exception:
                    logger.exception("realtime: revalidating live connections failed")
                if not self._again:
                    return
        finally:
            self._running = None

    async def _periodic(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.request()

    async def revalidate(self) -> None:
        auth.cache.clear()
        registry.cache.clear()
        tokens.cache.clear()
        # Judge each connection only on what it held before the database was read:
        # a principal or subscription gained meanwhile was checked fresh when gained.
        snapshot = [
            (conn, conn.principal, tuple(conn.subscriptions), tuple(conn.readable))
            for conn in self.hub.connections
        ]
        held = [principal for _, principal, _, _ in snapshot if principal is not None]
        key_ids = {p.key_id for p in held if not p.is_token}
        users = {tokens.state_key(p) for p in held if p.is_token} - {None}
        # A pattern is judged by the channel its prefix resolves to (bare ones by none);
        # channels that patterns reached have their cached decisions asked again.
        names = {
            pattern_prefix(name) if is_pattern(name) else name
            for _, _, subscribed, decided in snapshot
            for name in (*subscribed, *decided)
        } - {""}
        principals, states, channels = await sync_to_async(_load_state)(key_ids, users, names)
        for key, state in states.items():
            tokens.cache.put(key, state)  # presentations of these tokens need no query now
        decisions = _Decisions()
        now = timezone.now()
        for conn, principal, subscribed, decided in snapshot:
            if principal is not None and conn.principal is principal:
                if principal.is_token:
                    if principal.expires_at is not None and principal.expires_at <= now:
                        conn.drop_principal("token_expired")
                        continue
                    key = tokens.state_key(principal)
                    if key is not None:
                        state = states.get(key)
                        if state == tokens.INACTIVE:
                            conn.drop_principal("user_inactive")
                            continue
                        fresh = tokens.narrowed(principal, state)
                        if fresh is None:
                            conn.drop_principal("grant_revoked")
                            continue
                        if fresh is not principal:
                            conn.replace_principal(fresh)
                else:
                    fresh = principals.get(principal.key_id)
                    if fresh is None or fresh.secret_hash != principal.secret_hash:
                        conn.drop_principal("key_revoked")
                        continue
                    # A read-write key used read-only stays read-only.
                    conn.replace_principal(fresh.limited_to(principal.access) if fresh.can_write else fresh)
            conn.writable.clear()  # asked again at the next publish
            await self._recheck(conn, subscribed, decided, channels, decisions)

    async def _recheck(self, conn, subscribed, decided, channels, decisions) -> None:
        """Ask the policy again about ``conn``'s subscriptions and cached decisions.

        Policies may await; a connection whose principal changes meanwhile is left
        alone (what it gained was checked when it gained it).
        """
        current = conn.principal
        for name in subscribed:
            if name not in conn.subscriptions:
                continue
            if is_pattern(name):
                prefix = pattern_prefix(name)
                allowed = await decisions.pattern(current, name, prefix, channels.get(prefix))
                reason = "access_revoked"
            else:
                info = channels.get(name)
                allowed = info is not None and await decisions.read(current, name, info)
                reason = "access_revoked" if info is not None else "channel_unavailable"
            if conn.principal is not current:
                return
            if not allowed and name in conn.subscriptions:
                conn.drop_subscription(name, reason)
        for name in decided:
            info = channels.get(name)
            allowed = info is not None and await decisions.read(current, name, info)
            if conn.principal is not current:
                return
            if name in conn.readable:
                conn.readable[name] = allowed


class _Decisions:
    """The policy's answers within one revalidation: connections with the same
    principal and channel are asked about once."""

    def __init__(self) -> None:
        self.known: dict[tuple, bool] = {}

    async def read(self, principal, name: str, info) -> bool:
        key = ("read", principal, name, info)
        if key not in self.known:
            self.known[key] = await permissions.may_read(principal, name, info)
        return self.known[key]

    async def pattern(self, principal, pattern: str, prefix: str, info) -> bool:
        key = ("pattern", principal, pattern, info)
        if key not in self.known:
            self.known[key] = await permissions.pattern_refusal(principal, pattern, prefix, info) is None
        return self.known[key]


def _load_state(key_ids, users, names):
    from django.db import close_old_connections

    close_old_connections()
    return auth.load_principals(key_ids), tokens.load_states(users), registry.resolve_many(names)
