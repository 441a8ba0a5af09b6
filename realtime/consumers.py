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

import asyncio
import logging
import secrets
import time
from collections import deque
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
from .outbox import step
from .quotas import quotas
from .ratelimit import TokenBucket
from .runtime import get_hub

logger = logging.getLogger("realtime")

# Errors that say the client sent garbage; enough of them in a row close the socket.
MALFORMED = frozenset({ErrorCode.INVALID_DATA, ErrorCode.MESSAGE_TOO_LARGE})
# Failed authentications; MAX_AUTH_FAILURES of them close the socket (4002).
AUTH_FAILED = frozenset({ErrorCode.INVALID_CREDENTIALS, ErrorCode.TOO_MANY_AUTH_FAILURES})
# Publishes one connection may have on their way to the broker at once; past that the
# next frame is read once the oldest has been answered (back-pressure, not a refusal).
PIPELINE_DEPTH = 64


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
    # Pipelined publishes on their way, oldest first: [request id, reply frame once known].
    _publishing: deque | None = None
    _published: asyncio.Future | None = None

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
            if type(command) is protocol.Publish and self._pipeline(command):
                return
            started = time.monotonic()
            try:
                if self._publishing:
                    await self._publishes_answered()
                await COMMANDS[type(command)](self, command)
            finally:
                # Frames sent while this one waited (on Redis, say) queued up unread.
                self.rate.credit(time.monotonic() - started)
        except RealtimeError as error:
            if self._publishing:
                await self._publishes_answered()  # replies keep the frames' order
            self._refuse(error, command.id if command is not None else getattr(error, "request_id", None))
        except Exception:
            logger.exception("realtime: unexpected error handling a frame")
            if self._publishing:
                await self._publishes_answered()
            self.push(protocol.error_frame(ErrorCode.INTERNAL_ERROR, command.id if command else None))
        else:
            self.frame_was_valid()

    def _refuse(self, error: RealtimeError, request_id: protocol.RequestId = None) -> None:
        self.push(self._refusal(error, request_id))

    def _refusal(self, error: RealtimeError, request_id: protocol.RequestId) -> str:
        """The error reply to a frame, counted towards the limits it concerns."""
        frame = protocol.error_frame(error.code, request_id, error.detail)
        if error.code in MALFORMED:
            self.frame_was_malformed()
        elif error.code in AUTH_FAILED:
            self.authentication_failed()
        return frame

    # Pipelined publishes -----------------------------------------------------------

    def _pipeline(self, command: protocol.Publish) -> bool:
        """Start a publish now and go on reading frames without waiting for its answer,
        when its checks need nothing awaited (``actions.ready_to_publish``). It reaches
        the broker before the next frame is read, so publishes in a row keep their order
        (the broker writes them to Redis in that order); replies are sent in the frames'
        order. Any other frame waits until every publish before it has been answered, so
        other commands still see them done. False: handle it as any other frame."""
        publishing = self._publishing
        if publishing is None:
            publishing = self._publishing = deque()
        if len(publishing) >= PIPELINE_DEPTH or not self.hub.broker.pipelined():
            return False
        if not actions.ready_to_publish(self, command.channel):
            return False
        entry = [command.id, None]
        publishing.append(entry)
        try:
            done, result = step(self._publish(command))
        except RealtimeError as error:
            entry[1] = self._refusal(error, command.id)
        except Exception:
            logger.exception("realtime: unexpected error handling a frame")
            entry[1] = protocol.error_frame(ErrorCode.INTERNAL_ERROR, command.id)
        else:
            if not done:
                result.add_done_callback(lambda task: self._answered(entry, task))
                return True
            entry[1] = result
            self.frame_was_valid()
        self._send_answered()
        return True

    def _answered(self, entry: list, task: asyncio.Task) -> None:
        if task.cancelled():
            entry[1] = ""  # the connection is going away: nothing to say
        elif isinstance(task.exception(), RealtimeError):
            entry[1] = self._refusal(task.exception(), entry[0])
        elif task.exception() is not None:
            logger.error("realtime: unexpected error handling a frame", exc_info=task.exception())
            entry[1] = protocol.error_frame(ErrorCode.INTERNAL_ERROR, entry[0])
        else:
            entry[1] = task.result()
            self.frame_was_valid()
        self._send_answered()

    def _send_answered(self) -> None:
        """Send the replies of the oldest publishes that have one, in order."""
        publishing = self._publishing
        replies = []
        while publishing and publishing[0][1] is not None:
            frame = publishing.popleft()[1]
            if frame:
                replies.append(frame)
        if replies:
            self.outbox.push_many(replies)  # answered together: one write
        if not publishing and self._published is not None:
            waiter, self._published = self._published, None
            if not waiter.done():
                waiter.set_result(None)

    async def _publishes_answered(self) -> None:
        while self._publishing:
            if self._published is None:
                self._published = asyncio.get_running_loop().create_future()
            await self._published

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
        self.outbox.push_many([protocol.ok_frame(command.id, **result.reply), *result.frames])

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
        self.push(await self._publish(command))

    async def _publish(self, command: protocol.Publish) -> str:
        """Publish; the ``ok`` reply."""
        publication = await actions.publish(
            self.principal,
            command.channel,
            command.event,
            command.data,
            conn=self,
            idempotency_key=command.idempotency_key,
        )
        if publication.offset is None:
            return protocol.ok_frame(command.id)
        return protocol.ok_frame(command.id, offset=publication.offset, epoch=publication.epoch)

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
