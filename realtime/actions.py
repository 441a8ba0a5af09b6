"""What a client may do, whatever protocol it speaks: subscribe, read, publish.

The native WebSocket consumer and the Bayeux endpoint differ only in their wire
formats; both call these functions with a connection (a ``hub.Subscriber``) and get
plain results back, or a :class:`~realtime.errors.RealtimeError` to turn into their
own kind of error reply. Access is decided here, in one place, by the fixed rules and
the policy (``realtime.permissions``), with each connection's decisions cached on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import auth, events, handlers, permissions, protocol, registry, signals, tokens
from .auth import Principal
from .conf import settings
from .errors import (
    AccessDenied,
    HistoryDisabled,
    InvalidChannel,
    InvalidCredentials,
    InvalidData,
    PresenceDisabled,
    RealtimeError,
    TooManySubscriptions,
)
from .names import is_pattern, pattern_prefix, topic, validate_channel_name, validate_subscription_name
from .positions import Position
from .publishing import Publication, send_publication, validate_event
from .quotas import quotas


@dataclass(slots=True)
class Subscribed:
    """The outcome of a subscribe: what the reply should add, and frames to send after it.

    ``frames`` are native publication frames recovered from history, in offset order.
    The caller must send its reply and then these frames without awaiting anything in
    between, so that no live publication can slip in out of order.
    """

    reply: dict[str, Any] = field(default_factory=dict)
    frames: list[str] = field(default_factory=list)


async def authenticate(credentials: protocol.Auth, address: str | None = None) -> Principal:
    """The principal for an access key's secret or a signed browser token, presented
    from client ``address``: every path that takes credentials comes here, so failures
    count towards ``AUTH_FAILURES_PER_ADDRESS`` wherever they happen.

    Raises InvalidCredentials, or TooManyAuthFailures (nothing checked) while the
    address has used up its failures.
    """
    quotas.begin_auth(address)
    try:
        if credentials.token is not None:
            principal = await tokens.authenticate(credentials.token)
            principal = principal.limited_to(credentials.access)
        else:
            principal = await auth.authenticate(credentials.secret, credentials.access)
    except InvalidCredentials:
        raise  # the failure stays counted
    except BaseException:
        quotas.auth_succeeded(address)  # not a failure of the credentials (the database, a cancel)
        raise
    quotas.auth_succeeded(address)
    return principal


async def authorize_channel(principal: Principal | None, name: str) -> registry.ChannelInfo:
    """The channel ``name`` resolves to, if ``principal`` may read it."""
    info = await registry.aresolve(name)
    if principal is None and (info is None or not info.anonymous_read):
        raise AccessDenied("authenticate first")
    if info is None:
        raise InvalidChannel(f"no active channel covers {name!r}")
    refusal = await permissions.read_refusal(principal, name, info)
    if refusal is not None:
        raise AccessDenied(refusal)
    return info


async def authorize_pattern(principal: Principal | None, pattern: str) -> None:
    prefix = pattern_prefix(pattern)
    info = await registry.aresolve(prefix) if prefix else None
    refusal = await permissions.pattern_refusal(principal, pattern, prefix, info)
    if refusal is not None:
        if principal is None or info is not None or not prefix:
            raise AccessDenied(refusal)
        raise InvalidChannel(f"no active channel covers {prefix!r}")


async def recheck(hub, conn) -> None:
    """Ask again whether ``conn``'s principal may keep each of its subscriptions (it
    changed: a refreshed token), and drop those it may not, with the usual notices."""
    principal = conn.principal
    conn.readable.clear()
    conn.writable.clear()
    for name in list(conn.subscriptions):
        if is_pattern(name):
            prefix = pattern_prefix(name)
            info = await registry.aresolve(prefix) if prefix else None
            refusal = await permissions.pattern_refusal(principal, name, prefix, info)
            reason = "access_revoked"
        else:
            info = await registry.aresolve(name)
            refusal = "gone" if info is None else await permissions.read_refusal(principal, name, info)
            reason = "channel_unavailable" if info is None else "access_revoked"
        if conn.principal is not principal:
            return  # changed again meanwhile: that change is checked on its own
        if refusal is not None and name in conn.subscriptions:
            conn.drop_subscription(name, reason)


async def subscribe(hub, conn, name: str, since: Position | None = None) -> Subscribed:
    """Subscribe ``conn`` to a channel or a pattern, recovering after ``since`` if given."""
    name = validate_subscription_name(name)
    if since is not None and is_pattern(name):
        raise InvalidData("since recovers one channel's history; patterns have none")
    if name in conn.subscriptions:
        return Subscribed()
    if len(conn.subscriptions) >= settings.MAX_SUBSCRIPTIONS:
        raise TooManySubscriptions(f"at most {settings.MAX_SUBSCRIPTIONS} subscriptions")
    # The client address (realtime.addresses) of connections that have one.
    quotas.check_subscription(getattr(conn, "address", None))
    if is_pattern(name):
        await authorize_pattern(conn.principal, name)
        await _listen(hub, conn, name)
        events.connection_event(signals.subscribed, conn, channel=name)
        return Subscribed()
    info = await authorize_channel(conn.principal, name)
    try:
        await _listen(hub, conn, name, hold=info.has_history, bubble=info.bubble)
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
    events.connection_event(signals.subscribed, conn, channel=name)
    reply: dict[str, Any] = {"client": conn.client_id} if info.presence else {}
    if info.bubble:
        reply["bubble"] = True
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


async def _listen(hub, conn, name: str, hold: bool = False, bubble: bool = False) -> None:
    """``hub.subscribe``, holding anonymous clients to ``MAX_ANONYMOUS_TOPICS``."""
    key = topic(name)
    if conn.principal is not None or not quotas.reserve_anonymous_topic(hub, key):
        await hub.subscribe(conn, name, hold=hold, bubble=bubble)
        return
    try:
        await hub.subscribe(conn, name, hold=hold, bubble=bubble)
    finally:
        quotas.anonymous_subscribed(hub, key)


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
    members, change = await hub.broker.presence.members(name)
    await hub.presence_changed(name, info, change)
    return members


def ready_to_publish(conn, name: str) -> bool:
    """Whether ``conn``'s publish on ``name`` can be checked from caches alone, with
    nothing to await before it reaches the broker and no publish handler to run (the
    policy's decision is made now if it can be). The consumer then sends it on without
    waiting for the publish before it to be answered: publishes in a row are pipelined,
    in order. False: :func:`publish` decides it on its own, the long way."""
    principal = conn.principal
    if principal is None or not principal.can_write:
        return False
    try:
        name = validate_channel_name(name)
    except RealtimeError:
        return False
    info = registry.cached(name)
    if info is None or handlers.handler_for(info) is not None:
        return False
    writable = conn.writable
    if name not in writable:
        decided, refusal = permissions.write_refusal_now(principal, name, info)
        if not decided:
            return False
        if len(writable) >= settings.DECISION_CACHE_SIZE:
            writable.clear()
        writable[name] = refusal
    return True


async def publish(
    principal: Principal | None,
    name: str,
    event: str,
    data: Any,
    conn=None,
    incoming=None,
    idempotency_key: str | None = None,
) -> Publication:
    """Publish as ``principal``; subscribers see its user, if it has one.

    ``conn`` is the connection (a ``hub.Subscriber``) a client publishes through: its
    decisions are cached on it, the channel's publish handler runs, and the
    publication is announced (``signals.client_published``, webhooks). Without one (the
    HTTP endpoint) the policy is asked each time and no handler runs. ``incoming`` is a
    CloudEvent (``realtime.cloudevents.Incoming``) whose attributes are kept. A retry
    with the same ``idempotency_key`` publishes nothing twice (``realtime.publishing``).
    """
    if principal is None:
        raise AccessDenied("authenticate first")
    if not principal.can_write:
        raise AccessDenied("read-only access cannot publish")
    name = validate_channel_name(name)
    info = await registry.aresolve(name)
    if info is None:
        raise InvalidChannel(f"no active channel covers {name!r}")
    if conn is not None and name in conn.writable:
        refusal = conn.writable[name]
    else:
        refusal = await permissions.write_refusal(principal, name, info)
        if conn is not None and conn.principal is principal:
            if len(conn.writable) >= settings.DECISION_CACHE_SIZE:
                conn.writable.clear()
            conn.writable[name] = refusal
    if refusal is not None:
        raise AccessDenied(refusal)
    if conn is None:
        return await send_publication(
            name, event, data, principal.user, info=info, incoming=incoming, idempotency_key=idempotency_key
        )
    handler = handlers.handler_for(info)
    if handler is not None:
        publication = handlers.ClientPublication(
            name, event, data, info, principal, conn.client_id, conn.protocol_name
        )
        await handlers.run(handler, publication)
        event, data = validate_event(publication.event), publication.data
    sent = await send_publication(
        name, event, data, principal.user, info=info, idempotency_key=idempotency_key
    )
    if info.webhook_publications or signals.client_published.receivers:
        events.connection_event(
            signals.client_published, conn, channel=name, event=event, data=data, row=info
        )
    return sent
