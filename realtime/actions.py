"""What a client may do, whatever protocol it speaks: subscribe, read, publish.

The native WebSocket consumer and the Bayeux endpoint differ only in their wire
formats; both call these functions with a connection (a ``hub.Subscriber``) and get
plain results back, or a :class:`~realtime.errors.RealtimeError` to turn into their
own kind of error reply. Access is decided here, in one place, by the fixed rules and
the policy (``realtime.permissions``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import auth, protocol, registry, tokens
from .auth import Principal
from .conf import settings
from .errors import (
    AccessDenied,
    HistoryDisabled,
    InvalidChannel,
    InvalidData,
    PresenceDisabled,
    TooManySubscriptions,
)
from .names import is_pattern, pattern_prefix, validate_channel_name, validate_subscription_name
from .permissions import get_policy
from .positions import Position
from .publishing import Publication, send_publication


@dataclass(slots=True)
class Subscribed:
    """The outcome of a subscribe: what the reply should add, and frames to send after it.

    ``frames`` are native publication frames recovered from history, in offset order.
    The caller must send its reply and then these frames without awaiting anything in
    between, so that no live publication can slip in out of order.
    """

    reply: dict[str, Any] = field(default_factory=dict)
    frames: list[str] = field(default_factory=list)


async def authenticate(credentials: protocol.Auth) -> Principal:
    """The principal for an access key's secret or a signed browser token."""
    if credentials.token is not None:
        return tokens.verify_token(credentials.token).limited_to(credentials.access)
    return await auth.authenticate(credentials.secret, credentials.access)


async def authorize_channel(principal: Principal | None, name: str) -> registry.ChannelInfo:
    """The channel ``name`` resolves to, if ``principal`` may read it."""
    info = await registry.aresolve(name)
    if principal is None and (info is None or not info.anonymous_read):
        raise AccessDenied("authenticate first")
    if info is None:
        raise InvalidChannel(f"no active channel covers {name!r}")
    if not get_policy().can_subscribe(principal, info):
        raise AccessDenied("channel is outside this key's scope")
    return info


async def authorize_pattern(principal: Principal | None, pattern: str) -> None:
    prefix = pattern_prefix(pattern)
    info = await registry.aresolve(prefix) if prefix else None
    if not get_policy().can_subscribe_pattern(principal, pattern, info):
        if principal is None or info is not None or not prefix:
            raise AccessDenied("this pattern is outside what these credentials may read")
        raise InvalidChannel(f"no active channel covers {prefix!r}")


async def subscribe(hub, conn, name: str, since: Position | None = None) -> Subscribed:
    """Subscribe ``conn`` to a channel or a pattern, recovering after ``since`` if given."""
    name = validate_subscription_name(name)
    if since is not None and is_pattern(name):
        raise InvalidData("since recovers one channel's history; patterns have none")
    if name in conn.subscriptions:
        return Subscribed()
    if len(conn.subscriptions) >= settings.MAX_SUBSCRIPTIONS:
        raise TooManySubscriptions(f"at most {settings.MAX_SUBSCRIPTIONS} subscriptions")
    if is_pattern(name):
        await authorize_pattern(conn.principal, name)
        await hub.subscribe(conn, name)
        return Subscribed()
    info = await authorize_channel(conn.principal, name)
    try:
        await hub.subscribe(conn, name, hold=info.has_history)
        if name not in conn.subscriptions:
            # Dropped while subscribing (the key was revoked, the channel deactivated);
            # the connection has been told why.
            raise AccessDenied("access was withdrawn while subscribing")
        replay, recovered, position = [], None, None
        if info.has_history:
            store = hub.broker.history
            if since is None:
                position = await store.position(name, info)
            else:
                replay, recovered, position = await _recover(hub, conn, store, name, info, since)
        if info.presence:
            # Still held: the join notice and live publications queue behind the replay.
            await hub.join(conn, name, info)
    except BaseException:
        hub.unsubscribe(conn, name)
        raise
    # From here to the caller's reply: no await, so nothing is delivered in between.
    reply: dict[str, Any] = {"client": conn.client_id} if info.presence else {}
    if position is None:
        if since is not None:
            reply["recovered"] = False
        return Subscribed(reply)
    held = hub.stop_holding(conn, name)
    last = replay[-1][0] if replay else (since.offset if recovered else position.offset)
    reply.update(offset=max(last, position.offset), epoch=position.epoch)
    if recovered is not None:
        reply["recovered"] = recovered
    frames = [frame for _, frame in replay]
    newer = [(offset, frame) for offset, frame in held if offset is None or offset > last]
    frames += [frame for _, frame in newer]
    # Live copies of what the history already gave may still be on their way.
    hub.sent_up_to(conn, name, max([last, position.offset, *(o for o, _ in newer if o is not None)]))
    return Subscribed(reply, frames)


async def _recover(hub, conn, store, name: str, info, since: Position):
    """Read what ``conn`` missed after ``since``: (replay, recovered, position).

    Live publications are held back from the moment the hub listens; the stored ones
    are read after that, so together they leave no gap. Nothing is replayed (recovered
    is False) when the epoch changed, or the gap is older than the history keeps or
    longer than ``RECOVERY_LIMIT``.
    """
    limit = min(settings.RECOVERY_LIMIT, protocol.HISTORY_MAX_LIMIT)
    page = await store.read(name, info, since.offset, limit, since.epoch)
    if not page.complete or page.more or since.offset > page.position.offset:
        return [], False, page.position
    replay = list(zip(page.offsets, page.frames, strict=True))
    # The store answered after the hub began listening, so anything newer is held.
    # A gap between the two can only come from a layer that numbers and sends in two
    # steps (see realtime.broker): read the missing part once more.
    held = hub.held(conn, name)
    last = replay[-1][0] if replay else since.offset
    first_held = next((offset for offset, _ in held if offset is not None), None)
    if first_held is not None and first_held > last + 1:
        more = await store.read(name, info, last, first_held - last - 1, since.epoch)
        replay += zip(more.offsets, more.frames, strict=True)
    return replay, True, page.position


async def history(hub, principal: Principal | None, name: str, since: int, limit: int, epoch: str | None):
    """A page of ``name``'s stored publications (``realtime.history.Page``)."""
    name = validate_channel_name(name)
    info = await authorize_channel(principal, name)
    if not info.has_history:
        raise HistoryDisabled(f"{name!r} keeps no history")
    return await hub.broker.history.read(name, info, since, limit, epoch)


async def presence(hub, principal: Principal | None, name: str) -> list[dict]:
    """Who is subscribed to ``name`` now, across every process."""
    name = validate_channel_name(name)
    info = await authorize_channel(principal, name)
    if not info.presence:
        raise PresenceDisabled(f"{name!r} has no presence")
    members, left = await hub.broker.presence.members(name)
    await hub.announce_left(name, info, left)
    return members


async def publish(
    principal: Principal | None, name: str, event: str, data: Any, idempotency_key: str | None = None
) -> Publication:
    """Publish as ``principal``; subscribers see its user, if it has one."""
    if principal is None:
        raise AccessDenied("authenticate first")
    if not principal.can_write:
        raise AccessDenied("read-only access cannot publish")
    name = validate_channel_name(name)
    info = await registry.aresolve(name)
    if info is None:
        raise InvalidChannel(f"no active channel covers {name!r}")
    if not get_policy().can_publish(principal, info):
        raise AccessDenied("channel is outside this key's scope")
    return await send_publication(
        name, event, data, principal.user, info=info, idempotency_key=idempotency_key
    )
