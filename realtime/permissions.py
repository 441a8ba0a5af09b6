"""Who may subscribe and publish where: one policy object, replaceable by dotted path.

Set ``REALTIME["POLICY"]`` to a subclass of :class:`Policy` to narrow the rules, for
example to keep some keys away from ``admin/`` channels. A policy is asked after the
fixed rules (read-only credentials never publish; anonymous clients only read
channels open to them), so it can refuse more but never allow more. Policies are
called on the hot path with plain objects (no database access), so keep them cheap.
"""

from __future__ import annotations

from functools import lru_cache

from django.utils.module_loading import import_string

from .auth import Principal
from .conf import settings
from .registry import ChannelInfo


class Policy:
    def can_subscribe(self, principal: Principal | None, channel: ChannelInfo) -> bool:
        # Logging in never takes away what an anonymous client may read.
        if channel.anonymous_read:
            return True
        return principal is not None and principal.covers(channel)

    def can_subscribe_pattern(
        self, principal: Principal | None, pattern: str, prefix: ChannelInfo | None
    ) -> bool:
        """May this principal subscribe to a wildcard pattern (``rooms/*``, ``**``)?

        ``prefix`` is what the part before the wildcard resolves to (None for a bare
        pattern, or when no active channel covers it). Each publication the pattern then
        matches is checked again with :meth:`can_subscribe` before it is delivered.
        """
        if prefix is not None and self.can_subscribe(principal, prefix):
            return True
        return principal is not None and principal.all_channels

    def can_publish(self, principal: Principal | None, channel: ChannelInfo) -> bool:
        return principal is not None and principal.can_write and principal.covers(channel)


@lru_cache(maxsize=8)
def _load(path: str) -> Policy:
    return import_string(path)()


def get_policy() -> Policy:
    return _load(settings.POLICY)


def reset() -> None:
    """Forget loaded policies (settings changed)."""
    _load.cache_clear()
