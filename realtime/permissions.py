"""Who may read and publish where: fixed rules, then one policy object, replaceable by dotted path.

Set ``REALTIME["POLICY"]`` to a subclass of :class:`Policy`. Its methods are asked with an
:class:`AccessRequest`: the concrete channel the client named (``rooms/42``), the row
that covers it (``rooms``), and the principal, with its Django user a query away
(``await request.auser()``). A method may be a plain ``def`` (called on the event loop:
keep it to plain objects) or an ``async def``, which may query the database with Django's
async ORM::

    class TeamPolicy(Policy):
        async def may_subscribe(self, request):
            if request.row.name == "teams":
                user = await request.auser()
                return user is not None and await user.groups.filter(name=request.channel).aexists()
            return super().may_subscribe(request)

Decisions are cached per connection and channel: a subscription is decided once, a
channel reached through a wildcard pattern once per connection, a publish once per
connection and channel until the next revalidation, which asks every cached decision
again (``REVALIDATE_INTERVAL``). The HTTP endpoints ask once per request.

The fixed rules come first and a policy cannot widen them: anonymous connections read
only channels with *anonymous read*; only read-write credentials publish; a personal
channel (``users/42`` under a row with *personal sub-channels*) is refused to every
token but its user's, whatever the token's grant.

Policies written for the first API (``can_subscribe(principal, channel)``,
``can_publish(principal, channel)``, ``can_subscribe_pattern(principal, pattern,
prefix)``, synchronous, with the row as ``channel``) keep working: when a subclass
overrides one of those, the matching ``may_*`` method asks it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.utils.module_loading import import_string

from .auth import Principal, aget_user
from .conf import settings
from .registry import ChannelInfo

_UNSET = object()


@dataclass(eq=False)
class AccessRequest:
    """One question to the policy."""

    principal: Principal | None
    #: The concrete channel asked for ("users/42"); for a pattern, the part before the wildcard.
    channel: str
    #: The row that covers ``channel``; None only for bare patterns (``*``, ``**``) and a
    #: pattern whose prefix no active row covers.
    row: ChannelInfo | None
    #: "subscribe", "publish" or "subscribe_pattern".
    action: str = "subscribe"
    #: The pattern (``rooms/*``) for "subscribe_pattern".
    pattern: str | None = None
    _user: Any = field(default=_UNSET, repr=False)

    @property
    def user_id(self) -> int | None:
        return self.principal.user_id if self.principal is not None else None

    @property
    def owner(self) -> str | None:
        """Whose personal channel this is (the user id as a string), or None."""
        return self.row.owner(self.channel) if self.row is not None else None

    @property
    def is_owner(self) -> bool:
        """True on a personal channel of the principal's own user."""
        owner = self.owner
        return owner is not None and self.user_id is not None and owner == str(self.user_id)

    async def auser(self):
        """The principal's Django user (one query, then kept), or None for keys and anonymous."""
        if self._user is _UNSET:
            self._user = await aget_user(self.user_id)
        return self._user


def _overrides(policy: Policy, name: str) -> bool:
    return getattr(type(policy), name) is not getattr(Policy, name)


class Policy:
    """The default rules; subclass and override ``may_*`` to narrow (or, within the fixed
    rules, widen) them."""

    def may_subscribe(self, request: AccessRequest):
        """May ``request.principal`` read ``request.channel`` (subscribe, history, presence)?"""
        if request.is_owner:
            return True
        if _overrides(self, "can_subscribe"):
            return self.can_subscribe(request.principal, request.row)
        row, principal = request.row, request.principal
        return row.anonymous_read or (principal is not None and principal.covers(row, request.channel))

    def may_publish(self, request: AccessRequest):
        """May ``request.principal`` (read-write: the fixed rules saw to it) publish on
        ``request.channel``?"""
        if _overrides(self, "can_publish"):
            return self.can_publish(request.principal, request.row)
        return request.principal.covers(request.row, request.channel)

    def may_subscribe_pattern(self, request: AccessRequest):
        """May ``request.principal`` subscribe to ``request.pattern``? ``request.channel`` is
        its prefix and ``request.row`` what that resolves to. Each channel the pattern then
        delivers is decided again with :meth:`may_subscribe`."""
        if _overrides(self, "can_subscribe_pattern"):
            return self.can_subscribe_pattern(request.principal, request.pattern, request.row)
        if request.principal is not None and request.principal.all_channels:
            return True
        if request.row is None:
            return False
        return self.may_subscribe(request)

    # The first API, kept for subclasses written against it ----------------------------

    def can_subscribe(self, principal: Principal | None, channel: ChannelInfo) -> bool:
        # Logging in never takes away what an anonymous client may read.
        if channel.anonymous_read:
            return True
        return principal is not None and principal.covers(channel)

    def can_subscribe_pattern(
        self, principal: Principal | None, pattern: str, prefix: ChannelInfo | None
    ) -> bool:
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


async def _ask(value) -> bool:
    if inspect.isawaitable(value):
        value = await value
    return bool(value)


def _ask_now(value) -> bool | None:
    """:func:`_ask` without awaiting: None when the policy answered with an awaitable
    (closed unawaited: the caller asks again the long way)."""
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        return None
    return bool(value)


def _refused_scope(principal: Principal, name: str, row: ChannelInfo) -> str:
    if principal.covers(row, name):
        return f"the project's policy does not let these credentials use {name!r}"
    if principal.is_token:
        return f"{name!r} is outside this token's grant"
    return f"{name!r} is outside this key's scope"


def _personal_refusal(principal: Principal | None, request: AccessRequest) -> str | None:
    """The fixed rule of personal channels: only their user's tokens, and keys."""
    row = request.row
    if row is None or not row.personal or request.is_owner:
        return None
    if principal is not None and not principal.is_token:
        return None  # keys are for servers; their scope decides, through the policy
    if request.owner is None:
        return f"{request.channel!r} holds personal channels; read one as {request.channel}/<your user id>"
    return f"{request.channel!r} is another user's personal channel"


async def read_refusal(principal: Principal | None, name: str, row: ChannelInfo) -> str | None:
    """Why ``principal`` may not read ``name`` (which ``row`` covers), or None if it may."""
    request = AccessRequest(principal, name, row, "subscribe")
    if principal is None and not row.anonymous_read:
        return "authenticate first"
    refusal = _personal_refusal(principal, request)
    if refusal is not None:
        return refusal
    if await _ask(get_policy().may_subscribe(request)):
        return None
    if principal is None:
        return "authenticate first"
    return _refused_scope(principal, name, row)


async def may_read(principal: Principal | None, name: str, row: ChannelInfo) -> bool:
    return await read_refusal(principal, name, row) is None


def may_read_now(principal: Principal | None, name: str, row: ChannelInfo) -> bool | None:
    """:func:`may_read` without awaiting, for the fan-out: the answer when the policy's
    ``may_subscribe`` is a plain ``def`` (the default policy's is), None when it must be
    awaited (an ``async def``), which the caller then does in a task of its own."""
    policy = get_policy()
    if inspect.iscoroutinefunction(policy.may_subscribe):
        return None
    request = AccessRequest(principal, name, row, "subscribe")
    if principal is None and not row.anonymous_read:
        return False
    if _personal_refusal(principal, request) is not None:
        return False
    return _ask_now(policy.may_subscribe(request))


async def write_refusal(principal: Principal | None, name: str, row: ChannelInfo) -> str | None:
    """Why ``principal`` may not publish on ``name``, or None if it may."""
    if principal is None:
        return "authenticate first"
    if not principal.can_write:
        return "read-only access cannot publish"
    request = AccessRequest(principal, name, row, "publish")
    refusal = _personal_refusal(principal, request)
    if refusal is not None:
        return refusal
    if await _ask(get_policy().may_publish(request)):
        return None
    return _refused_scope(principal, name, row)


def write_refusal_now(principal: Principal | None, name: str, row: ChannelInfo) -> tuple[bool, str | None]:
    """:func:`write_refusal` without awaiting: ``(True, refusal)`` when the policy's
    ``may_publish`` is a plain ``def`` (the default policy's is), ``(False, None)`` when
    it must be awaited."""
    if principal is None:
        return True, "authenticate first"
    if not principal.can_write:
        return True, "read-only access cannot publish"
    policy = get_policy()
    if inspect.iscoroutinefunction(policy.may_publish):
        return False, None
    request = AccessRequest(principal, name, row, "publish")
    refusal = _personal_refusal(principal, request)
    if refusal is not None:
        return True, refusal
    allowed = _ask_now(policy.may_publish(request))
    if allowed is None:
        return False, None
    return True, None if allowed else _refused_scope(principal, name, row)


async def pattern_refusal(
    principal: Principal | None, pattern: str, prefix: str, row: ChannelInfo | None
) -> str | None:
    """Why ``principal`` may not subscribe to ``pattern``, or None if it may."""
    request = AccessRequest(principal, prefix, row, "subscribe_pattern", pattern)
    refusal = _personal_refusal(principal, request)
    if refusal is None and await _ask(get_policy().may_subscribe_pattern(request)):
        return None
    return refusal or "this pattern is outside what these credentials may read"
