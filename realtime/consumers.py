"""The WebSocket consumer: socket I/O only. Parse, authorise, act, reply.

Frames are parsed by ``realtime.protocol``, credentials checked by ``realtime.auth``,
and what each command does (with the access checks) is ``realtime.actions``, which the
Bayeux endpoint shares. Every error a client can cause is a
``RealtimeError`` turned into ``{"err": code}`` in :meth:`RealtimeConsumer.handle_text`.

What the stock Channels consumer does per connection and per frame is skipped on
purpose, for speed (see docs/performance.md and ``realtime.asgi``): there is no
per-connection channel-layer channel (the hub fans out), no task per received frame,
and no ``aclose_old_connections()`` thread hop before each message (only the handlers
that touch the database hop, through sync_to_async).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

from . import actions, auth, events, protocol, rpc, signals
from .asgi import Consumer
from .conf import settings
from .errors import (
    AccessDenied,
    AlreadyAuthenticated,
    CloseCode,
    ErrorCode,
    InvalidCredentials,
    InvalidData,
    RateLimited,
    RealtimeError,
    Unavailable,
)
from .names import validate_subscription_name
from .quotas import quotas
from .ratelimit import TokenBucket
from .runtime import get_hub

logger = logging.getLogger("realtime")

# Errors that say the client sent garbage; enough of them in a row close the socket.
MALFORMED = frozenset({ErrorCode.INVALID_DATA, ErrorCode.MESSAGE_TOO_LARGE})
# Failed authentications; MAX_AUTH_FAILURES of them close the socket (4002).
AUTH_FAILED = frozenset({ErrorCode.INVALID_CREDENTIALS, ErrorCode.TOO_MANY_AUTH_FAILURES})


class RealtimeConsumer(Consumer):
    """Serves the native protocol (``docs/protocol.md``) on one WebSocket."""

    principal: auth.Principal | None = None
    hub = None
    protocol_name = "native"
    # The access the client asked for in ``auth``; a ``refresh`` keeps to it.
    requested_access: str | None = None
    # What the hub calls per delivery (hub.Subscriber): the outbox's own push, bound
    # when the socket opens, so a delivery costs no extra call.
    push: Callable[[str], None]

    # ASGI events -------------------------------------------------------------------

    async def websocket_connect(self, message: dict) -> None:
        self.subscriptions: set[str] = set()
        self.readable: dict[str, bool] = {}
        self.writable: dict[str, str | None] = {}
        self.client_id = secrets.token_hex(16)
        self.max_message_size = settings.MAX_MESSAGE_SIZE
        self.rate = TokenBucket(settings.RATE_LIMIT, settings.RATE_BURST)
        if not await self.open():
            return
        self.push = self.outbox.push
        try:
            self.hub = await get_hub()
        except Unavailable:
            # The broker is down. (1013 "try again later" would fit, but daphne can
            # only send 1000 and 3000-4999.)
            await self.close(CloseCode.UNAVAILABLE)
            return
        self.hub.add(self)
        quotas.add_subscriber(self, self.address)
        events.connection_event(signals.connected, self, scope=self.scope)

    def finished(self) -> None:
        if self.hub is None:  # never connected (nor reported so)
            return
        if self.close_code is not None:
            code, reason = self.close_code, self.close_reason
        else:
            code, reason = self.client_close or (None, "")
            reason = reason or "client"
        events.connection_event(signals.disconnected, self, code=code, reason=reason)

    async def websocket_receive(self, message: dict) -> None:
        if self.closing:
            return
        text = message.get("text")
        if text is None:
            self._refuse(InvalidData("binary frames are not supported; send JSON text"))
            return
        await self.handle_text(text)

    # Frames ------------------------------------------------------------------------

    async def handle_text(self, text: str) -> None:
        command = None
        try:
            command = protocol.parse_frame(text, self.max_message_size)
            # After parsing (bounded by the size limit), so the refusal carries the id.
            if not self.rate.take():
                raise RateLimited("slow down")
            started = time.monotonic()
            try:
                await COMMANDS[type(command)](self, command)
            finally:
                # Frames sent while this one waited (on Redis, say) queued up unread.
                self.rate.credit(time.monotonic() - started)
        except RealtimeError as error:
            self._refuse(error, command.id if command is not None else getattr(error, "request_id", None))
        except Exception:
            logger.exception("realtime: unexpected error handling a frame")
            self.push(protocol.error_frame(ErrorCode.INTERNAL_ERROR, command.id if command else None))
        else:
            self.frame_was_valid()

    def _refuse(self, error: RealtimeError, request_id: protocol.RequestId = None) -> None:
        self.push(protocol.error_frame(error.code, request_id, error.detail))
        if error.code in MALFORMED:
            self.frame_was_malformed()
        elif error.code in AUTH_FAILED:
            self.authentication_failed()

    # Commands ----------------------------------------------------------------------

    async def do_auth(self, command: protocol.Auth) -> None:
        if self.principal is not None:
            raise AlreadyAuthenticated("log out first")
        principal = await actions.authenticate(command, self.address)
        if self.closing:
            return
        self._become(principal)
        self.requested_access = command.access
        events.connection_event(signals.authenticated, self, refreshed=False)
        self.push(self._authenticated_reply(command.id))

    async def do_refresh(self, command: protocol.Refresh) -> None:
        principal = self.principal
        if principal is None or not principal.is_token:
            raise AccessDenied("refresh renews a token's authentication; authenticate with a token first")
        fresh = await actions.authenticate(
            protocol.Auth(command.id, token=command.token, access=command.access or self.requested_access)
        )
        if fresh.user_id != principal.user_id:
            raise InvalidCredentials("the new token is for another user; log out and authenticate instead")
        if self.closing:
            return
        if self.principal is not principal:
            raise AccessDenied("the connection logged out while refreshing")
        self._become(fresh)
        # Subscriptions the new token no longer covers end, with unsubscribed notices.
        await actions.recheck(self.hub, self)
        if self.closing or self.principal is not fresh:
            return
        events.connection_event(signals.authenticated, self, refreshed=True)
        self.push(self._authenticated_reply(command.id))

    async def do_rpc(self, command: protocol.Rpc) -> None:
        result = await rpc.call(command.method, command.data, self.principal, self.client_id)
        if not self.closing:
            self.push(protocol.ok_frame(command.id, result=result))

    async def do_subscribe(self, command: protocol.Subscribe) -> None:
        result = await actions.subscribe(self.hub, self, command.channel, command.since)
        # No await from here on: recovered frames go out right after the reply.
        self.push(protocol.ok_frame(command.id, **result.reply))
        for frame in result.frames:
            self.push(frame)

    async def do_history(self, command: protocol.History) -> None:
        page = await actions.history(
            self.hub, self.principal, command.channel, command.since, command.limit, command.epoch
        )
        self.push(protocol.history_reply(command.id, command.channel, page))

    async def do_presence(self, command: protocol.Presence) -> None:
        members = await actions.presence(self.hub, self.principal, command.channel)
        self.push(protocol.presence_reply(command.id, command.channel, members))

    async def do_unsubscribe(self, command: protocol.Unsubscribe) -> None:
        name = validate_subscription_name(command.channel)
        self.hub.unsubscribe(self, name, "client")
        self.push(protocol.ok_frame(command.id))
        if self.is_stale():
            self.became_idle()

    async def do_publish(self, command: protocol.Publish) -> None:
        publication = await actions.publish(
            self.principal,
            command.channel,
            command.event,
            command.data,
            conn=self,
            idempotency_key=command.idempotency_key,
        )
        if publication.offset is None:
            self.push(protocol.ok_frame(command.id))
        else:
            self.push(protocol.ok_frame(command.id, offset=publication.offset, epoch=publication.epoch))

    async def do_logout(self, command: protocol.Logout) -> None:
        self._logout()
        self.push(protocol.ok_frame(command.id))

    async def do_ping(self, command: protocol.Ping) -> None:
        self.push(protocol.ok_frame(command.id))

    async def do_time(self, command: protocol.Time) -> None:
        self.push(protocol.ok_frame(command.id, time=round(time.time(), 6)))

    async def do_disconnect(self, command: protocol.Disconnect) -> None:
        self.push(protocol.ok_frame(command.id))
        await self.close(CloseCode.NORMAL)

    # What the hub calls besides push ----------------------------------------------

    def drop_subscription(self, name: str, reason: str) -> None:
        self.hub.unsubscribe(self, name, reason)
        self.push(protocol.unsubscribed_frame(name, reason))
        if self.is_stale():
            self.became_idle()

    def drop_principal(self, reason: str) -> None:
        self._logout(reason)
        self.push(protocol.logout_frame(reason))

    def replace_principal(self, principal: auth.Principal) -> None:
        # The same key, re-read (its scope may have changed): revalidation asks again.
        self.principal = principal
        self.writable.clear()

    def disconnect(self, code: int, reason: str = "") -> None:
        self.close_soon(code, reason)

    # Helpers -----------------------------------------------------------------------

    def _become(self, principal: auth.Principal | None) -> None:
        """Act as ``principal`` from now on: decisions made for the previous one are forgotten."""
        self.principal = principal
        self.readable.clear()
        self.writable.clear()
        if self.hub is not None:
            self.hub.watch_expiry(self, principal)

    def _authenticated_reply(self, request_id: protocol.RequestId) -> str:
        ends = self.principal.expires_at if self.principal.is_token else None
        if ends is None:
            return protocol.ok_frame(request_id)
        return protocol.ok_frame(request_id, expires=int(ends.timestamp()))

    def _logout(self, reason: str = "logout") -> None:
        self._become(None)
        self.requested_access = None
        if self.hub is not None:
            for name in list(self.subscriptions):
                self.hub.unsubscribe(self, name, reason)
        self.became_idle()

    def is_stale(self) -> bool:
        return self.principal is None and not self.subscriptions

    def let_go(self, reason: str) -> None:
        quotas.remove_subscriber(self, self.address)
        if self.hub is not None:
            self.hub.remove(self)


COMMANDS = {
    protocol.Auth: RealtimeConsumer.do_auth,
    protocol.Subscribe: RealtimeConsumer.do_subscribe,
    protocol.Unsubscribe: RealtimeConsumer.do_unsubscribe,
    protocol.Publish: RealtimeConsumer.do_publish,
    protocol.History: RealtimeConsumer.do_history,
    protocol.Presence: RealtimeConsumer.do_presence,
    protocol.Logout: RealtimeConsumer.do_logout,
    protocol.Disconnect: RealtimeConsumer.do_disconnect,
    protocol.Ping: RealtimeConsumer.do_ping,
    protocol.Rpc: RealtimeConsumer.do_rpc,
    protocol.Refresh: RealtimeConsumer.do_refresh,
    protocol.Time: RealtimeConsumer.do_time,
}
