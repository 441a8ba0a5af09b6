"""Re-checking live connections against the database.

Internal. A live connection keeps what it was allowed when it authenticated and
subscribed; this module takes it away when that changes: a key revoked, expired or
given a new secret, a token user deactivated or deleted, a token's grant narrowed or
withdrawn (``TOKEN_GRANT`` is run again for the users of tokens it gave), a channel
deactivated or deleted, a scope narrowed. It runs at once when a change is announced (through the
broker, from any process) and every ``REVALIDATE_INTERVAL`` seconds, for changes made
behind the models' back (bulk updates, expiry, other tools). Requests made while a
check runs are coalesced into one more.

Connections are told through the hub's :class:`~realtime.hub.Subscriber` methods; the
hub itself runs no queries.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async

from . import auth, registry, tokens
from .hub import Hub
from .names import is_pattern, pattern_prefix
from .permissions import get_policy

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
        snapshot = [(conn, conn.principal, tuple(conn.subscriptions)) for conn in self.hub.connections]
        held = [principal for _, principal, _ in snapshot if principal is not None]
        key_ids = {p.key_id for p in held if not p.is_token}
        users = {tokens.state_key(p) for p in held if p.is_token} - {None}
        # A pattern is judged by the channel its prefix resolves to (bare ones by none).
        names = {
            pattern_prefix(name) if is_pattern(name) else name
            for _, _, subscribed in snapshot
            for name in subscribed
        } - {""}
        principals, states, channels = await sync_to_async(_load_state)(key_ids, users, names)
        for key, state in states.items():
            tokens.cache.put(key, state)  # presentations of these tokens need no query now
        policy = get_policy()
        for conn, principal, subscribed in snapshot:
            if principal is not None and conn.principal is principal:
                if principal.is_token:
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
            for name in subscribed:
                if name not in conn.subscriptions:
                    continue
                if is_pattern(name):
                    prefix = pattern_prefix(name)
                    if not policy.can_subscribe_pattern(conn.principal, name, channels.get(prefix)):
                        conn.drop_subscription(name, "access_revoked")
                    continue
                info = channels.get(name)
                if info is None:
                    conn.drop_subscription(name, "channel_unavailable")
                elif not policy.can_subscribe(conn.principal, info):
                    conn.drop_subscription(name, "access_revoked")


def _load_state(key_ids, users, names):
    from django.db import close_old_connections

    close_old_connections()
    return auth.load_principals(key_ids), tokens.load_states(users), registry.resolve_many(names)
