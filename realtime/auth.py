"""Turn a presented secret into a :class:`Principal`, the identity a connection acts as.

Lookups go through a small process-local cache keyed by the secret's hash, so an auth
storm of thousands of connections with the same key costs one database query. The
cache is dropped whenever keys change (``realtime.changes``) and on every periodic
revalidation, so a revoked key is never trusted for longer than ``REVALIDATE_INTERVAL``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from django.utils import timezone

from . import keys
from .cache import TTLCache
from .errors import InvalidCredentials
from .names import lineage

LAST_USED_RESOLUTION = timedelta(minutes=1)
# Access levels, from least to most: an admin key may do what a read-write key may, and
# use the server API and the metrics endpoint.
RANKS = {"read-only": 0, "read-write": 1, "admin": 2}
CACHE_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a connection is, and what it may reach.

    Either an access key (``key_id`` set; scope by channel ids, re-checked against the
    database) or a signed browser token (``realtime.tokens``; scope by channel names,
    bound to a user, or to nobody for anonymous visitors).
    """

    key_id: int | None
    name: str
    access: str
    all_channels: bool
    channel_ids: frozenset[int] = frozenset()
    expires_at: datetime | None = None
    # Which secret: regenerating it ends sessions opened with the old one.
    secret_hash: str = ""
    channel_names: frozenset[str] = frozenset()
    user_id: int | None = None
    user_name: str = ""
    # A token that TOKEN_GRANT gave: re-checked against the grant, not only the user.
    from_grant: bool = False

    @property
    def is_token(self) -> bool:
        return self.key_id is None

    @property
    def can_write(self) -> bool:
        return self.access in ("read-write", "admin")

    @property
    def can_operate(self) -> bool:
        """May use the server API (``realtime.api`` over HTTP) and read the metrics: an
        admin key, or a read-write key valid on all channels. Never a browser token."""
        if self.is_token:
            return False
        return self.access == "admin" or (self.access == "read-write" and self.all_channels)

    @property
    def user(self) -> dict | None:
        """What subscribers are told about who published, for a logged-in token user."""
        if self.user_id is None:
            return None
        return {"id": self.user_id, "name": self.user_name}

    def covers(self, channel, name: str | None = None) -> bool:
        """Whether the channel (a ``registry.ChannelInfo``) is within this principal's scope.

        With ``name``, the concrete channel that ``channel`` covers (``rooms/42`` for the row
        ``rooms``), a token's channel entry also covers, by name, itself and every channel
        below it: a token granted ``users/7`` may read ``users/7`` and ``users/7/inbox``
        although the row that covers them is ``users``.
        """
        if self.all_channels or channel.id in self.channel_ids or channel.name in self.channel_names:
            return True
        if name is None or not self.channel_names:
            return False
        return any(candidate in self.channel_names for candidate in lineage(name))

    def limited_to(self, access: str | None) -> Principal:
        """This principal with at most ``access``; asking for read-write with read-only
        credentials fails (at most ``admin`` is whatever it has)."""
        if access is None or access == self.access:
            return self
        if RANKS.get(access, 0) > RANKS.get(self.access, 0):
            if access == "read-write":
                raise InvalidCredentials("these credentials are read-only")
            return self
        return replace(self, access=access)


def _principal(key) -> Principal:
    return Principal(
        key_id=key.pk,
        name=key.name,
        access=key.access,
        all_channels=key.all_channels,
        channel_ids=frozenset(c.pk for c in key.channels.all()),
        expires_at=key.expires_at,
        secret_hash=key.secret_hash,
    )


def load_principals(key_ids) -> dict[int, Principal]:
    """Fresh principals for the usable keys among ``key_ids`` (one query plus prefetch)."""
    from .models import AccessKey

    found = AccessKey.objects.usable().filter(pk__in=list(key_ids)).prefetch_related("channels")
    return {key.pk: _principal(key) for key in found}


def authenticate_secret(secret: str) -> Principal:
    """Synchronous lookup of a secret; raises InvalidCredentials. Records last use."""
    from .models import AccessKey

    candidates = keys.candidate_hashes(secret)
    key = AccessKey.objects.usable().filter(secret_hash__in=candidates).prefetch_related("channels").first()
    # The lookup is by hash; the explicit constant-time comparison keeps the check
    # honest even if a backend's index comparison were not.
    if key is None or not keys.hashes_match(key.secret_hash, candidates):
        raise InvalidCredentials("unknown, revoked or expired key")
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        AccessKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return _principal(key)


cache = TTLCache(CACHE_MAX_ENTRIES)


async def authenticate(secret: str, access: str | None = None) -> Principal:
    """The principal for ``secret``, limited to ``access``; raises InvalidCredentials."""
    digest = keys.hash_secret(secret)
    principal = cache.get(digest, None)
    if principal is not None and principal.expires_at is not None and principal.expires_at <= timezone.now():
        cache.discard(digest)
    principal = await cache.load(digest, lambda: sync_to_async(authenticate_secret)(secret))
    return principal.limited_to(access)


async def aget_user(user_id):
    """The Django user with ``user_id`` (None for none, or when it no longer exists): one query."""
    if user_id is None:
        return None
    from django.contrib.auth import get_user_model

    model = get_user_model()
    return await model._default_manager.filter(pk=user_id).afirst()
